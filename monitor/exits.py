"""The exit statuses of every command: ``monitor``, ``python -m simulators`` and ``bench/``.

Defined once so that a script, a supervisor or a test reads the same number the same way
whichever command it started; stdlib only, so any room (and the simulators) may import it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNAVAILABLE"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
"""A check the command exists to make did not pass (a scoring target missed, the engine and the
reference disagree, a simulated wearable failed); also what Python exits with on a crash."""
EXIT_BAD_INPUT: Final = 2
"""The input is wrong (configuration, arguments, files): the person running it has to fix it;
argparse uses the same number for bad arguments."""
EXIT_UNAVAILABLE: Final = 3
"""Something it needs cannot be used (the store, the broker): a failure retrying would not mend."""
EXIT_INTERRUPTED: Final = 130
"""Stopped by SIGINT/SIGTERM after closing cleanly (128 + SIGINT, the shell's convention)."""

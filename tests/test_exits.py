"""The exit statuses are defined once, in ``monitor.exits``, for every command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_DEFINITION = re.compile(r"^(EXIT_\w+)\s*(:[^=]+)?=", re.MULTILINE)


def test_no_module_but_monitor_exits_defines_an_exit_status() -> None:
    sources = [
        path
        for folder in ("monitor", "simulators", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if path != ROOT / "monitor" / "exits.py"
    ]
    defined = {
        f"{path.relative_to(ROOT)}: {match.group(1)}"
        for path in sources
        for match in _DEFINITION.finditer(path.read_text(encoding="utf-8"))
    }
    assert not defined, "define exit statuses in monitor/exits.py and import them"
    assert _DEFINITION.search((ROOT / "monitor" / "exits.py").read_text(encoding="utf-8"))

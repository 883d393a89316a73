"""How every command logs: the level and format staff choose, times in UTC with their offset.

One place sets the handlers up, so ``--log-level`` and ``--log-format`` mean the same on every
command, in the live view's log file as on stderr. The JSON format is one object per line (time,
level, logger, message and whatever a call passed as ``extra``) for a log shipper to read without
parsing prose. Levels: routine progress (start-up, connections, "restored", summaries) at INFO,
every alarm transition at WARNING (something a person must see, yet not a fault of the program),
failures of the program or of what it depends on at ERROR. Stdlib only: any room may log.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_FORMAT",
    "DEFAULT_LEVEL",
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "configure_logging",
    "logging_configured",
    "logging_options",
]

LogFormat = Literal["text", "json"]
LEVELS: Final = ("debug", "info", "warning", "error")
FORMATS: Final = ("text", "json")
DEFAULT_LEVEL: Final = "info"
"""What staff running ``monitor run`` see: start-up, connections, recoveries and every alarm."""
DEFAULT_FORMAT: Final[LogFormat] = "text"

_RECORD_FIELDS: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
"""Attributes every record has; the rest were passed as ``extra`` and belong in a JSON line."""


def _utc(record: logging.LogRecord) -> str:
    """ISO 8601 with the offset, so lines from machines in different zones sort and compare."""
    return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``, for a person reading a terminal or a file."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return _utc(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, then extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def logging_options() -> argparse.ArgumentParser:
    """``--log-level`` and ``--log-format``: a parent of every command (``monitor``'s and the
    simulators'), so they follow its name (``monitor run --log-level debug``) and mean the same
    everywhere."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=LEVELS,
        default=DEFAULT_LEVEL,
        help=f"least severe messages logged (default {DEFAULT_LEVEL}: start-up, connections, "
        "every alarm transition; warning: alarm transitions and problems only)",
    )
    group.add_argument(
        "--log-format",
        choices=FORMATS,
        default=DEFAULT_FORMAT,
        help=f"text lines, or one JSON object per line (default {DEFAULT_FORMAT})",
    )
    return options


def configure_logging(
    level: str = DEFAULT_LEVEL, log_format: LogFormat = DEFAULT_FORMAT, *, file: Path | None = None
) -> None:
    """Send every record at ``level`` or above to stderr, or to ``file`` (the live view owns the
    terminal), replacing whatever handlers were there: a command configures logging once."""
    handler = (
        logging.StreamHandler(sys.stderr)
        if file is None
        else logging.FileHandler(file, encoding="utf-8")
    )
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@contextlib.contextmanager
def logging_configured(level: str, log_format: LogFormat) -> Iterator[None]:
    """:func:`configure_logging` for the length of one command, then the logging it found.

    A process that runs commands in turn (a test calling ``main``, a tool wrapping the CLI)
    gets its own handlers and level back, instead of a handler on a stream that has since
    closed and a level it never chose.
    """
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    configure_logging(level, log_format)
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(root_level)

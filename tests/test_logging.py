"""``--log-level`` and ``--log-format`` through the real command line, and the JSON lines."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.logs import JsonFormatter, configure_logging

ROOT = Path(__file__).resolve().parent.parent
RUN = ("run", "--config", "config/demo.toml", "--simulate", "mdma-typical", "--speed", "60")
BRIEF = ("--duration", "2", "--no-live")

pytestmark = [pytest.mark.ble]


def monitor_run(tmp_path: Path, *options: str) -> list[str]:
    """A two-second simulated ``monitor run`` on the embedded broker; its stderr lines."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            *RUN,
            *BRIEF,
            "--store",
            str(tmp_path / "store.sqlite"),
            *options,
        ],
        cwd=ROOT,
        env={**os.environ, "MONITOR_MQTT_URL": "", "MONITOR_INFLUX_URL": ""},
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr.splitlines()


def utc(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    assert moment.utcoffset() == dt.timedelta(0), text
    return moment


@pytest.mark.timeout(120)
def test_routine_messages_show_at_the_default_level_with_times_in_utc(tmp_path: Path) -> None:
    lines = monitor_run(tmp_path)
    broker = [line for line in lines if "no MQTT broker configured: embedded broker" in line]
    assert len(broker) == 1, lines
    moment, level, logger, _ = broker[0].split(" ", 3)
    assert (level, logger) == ("INFO", "monitor.service:")
    assert "T" in moment and moment.endswith("+00:00")
    utc(moment)
    assert not [line for line in lines if " DEBUG " in line], lines


@pytest.mark.timeout(120)
def test_the_level_filter_hides_routine_messages(tmp_path: Path) -> None:
    lines = monitor_run(tmp_path, "--log-level", "warning")
    assert not [line for line in lines if " INFO " in line or " DEBUG " in line], lines


@pytest.mark.timeout(120)
def test_json_format_is_one_object_a_line_at_the_chosen_level(tmp_path: Path) -> None:
    lines = monitor_run(tmp_path, "--log-level", "DEBUG", "--log-format", "json")
    records = [json.loads(line) for line in lines]
    assert records, "debug logs at least the spool and the broker"
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        utc(record["time"])
    assert {"DEBUG", "INFO"} <= {record["level"] for record in records}
    assert any(
        r["logger"] == "monitor.service" and "embedded broker" in r["message"] for r in records
    )


def test_a_json_line_carries_the_extras_and_the_exception() -> None:
    """The fields a call passes (an alarm's session, rule, state) become fields of the line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.logging.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("alarm #%d", 7, extra={"session": "S-1", "rule": "spo2-low", "sequence": 7})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    finally:
        log.removeHandler(handler)
    alarm, failure = (json.loads(line) for line in stream.getvalue().splitlines())
    assert alarm["message"] == "alarm #7" and alarm["level"] == "WARNING"
    assert (alarm["session"], alarm["rule"], alarm["sequence"]) == ("S-1", "spo2-low", 7)
    assert "args" not in alarm and "msg" not in alarm
    assert failure["level"] == "ERROR" and "ValueError: boom" in failure["exception"]


def test_configure_logging_replaces_the_handlers_and_sets_the_level(tmp_path: Path) -> None:
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    try:
        configure_logging("warning", "json", file=tmp_path / "monitor.log")
        assert root.level == logging.WARNING
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        root.handlers[0].close()
    finally:
        root.handlers[:], root.level = before, level


def test_a_command_run_in_process_leaves_logging_as_it_found_it() -> None:
    """A test or a tool calling ``main`` keeps its handlers and level (pytest's included)."""
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    example = str(ROOT / "config" / "example.toml")
    assert main(["check-config", example, "--log-level", "debug"]) == 0
    assert (root.handlers, root.level) == (before, level)

"""The command line as a user meets it: a real process, its exit status and what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor import __version__

ROOT = Path(__file__).resolve().parent.parent


def run_monitor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_help_lists_the_commands_and_the_disclaimer() -> None:
    result = run_monitor("--help")
    assert result.returncode == 0
    assert "check-config" in result.stdout
    assert "not a certified medical device" in result.stdout


def test_version() -> None:
    result = run_monitor("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"monitor {__version__}"


def test_missing_command_is_a_usage_error() -> None:
    result = run_monitor()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


@pytest.mark.parametrize("config", ["config/example.toml", "config/demo.toml"])
def test_check_config_accepts_the_shipped_configs(config: str) -> None:
    result = run_monitor("check-config", config)
    assert result.returncode == 0, result.stderr
    assert "P-0" in result.stdout


def test_check_config_names_every_mistake() -> None:
    result = run_monitor("check-config", "tests/data/config/three-mistakes.toml")
    assert result.returncode == 2
    assert "3 problem(s)" in result.stderr
    for path in (
        "rooms[0].max_conections",
        "sessions[0].participants[0].devices[0].kind",
        "sessions[0].room",
    ):
        assert f"three-mistakes.toml: {path}:" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_config_on_a_missing_file() -> None:
    result = run_monitor("check-config", "no/such/site.toml")
    assert result.returncode == 2
    assert "no/such/site.toml" in result.stderr
    assert "Traceback" not in result.stderr

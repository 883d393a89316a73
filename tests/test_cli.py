"""The command line as a user meets it: a real process, its exit status and what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor import __version__

ROOT = Path(__file__).resolve().parent.parent


def run_monitor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def site_file(folder: Path, sections: str = "") -> Path:
    """A small valid site file (the shipped protocols) with ``sections`` added at the top."""
    path = folder / "site.toml"
    path.write_text(
        f"{sections}\n"
        f'[site]\ncode = "SITE-1"\ntimezone = "Europe/Zurich"\n'
        f'protocols_dir = "{ROOT / "config" / "protocols"}"\n'
        '[[rooms]]\nid = "room-a"\n'
        '[[sessions]]\nid = "S-1"\nroom = "room-a"\nprotocol = "mdma"\n'
        '[[sessions.participants]]\ncode = "P-001"\n'
        '[[sessions.participants.devices]]\nid = "hr-1"\nkind = "heart_rate"\n'
        'name_pattern = "HR-1"\n',
        encoding="utf-8",
    )
    return path


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


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


# --- a password in a URL is never printed (issue 9 item 7) ----------------------------------

SECRET = "hunter2-s3cret"
URLS_WITH_A_PASSWORD = [
    pytest.param(f"mqtt://detector:{SECRET}@broker.example", id="refused-password"),
    pytest.param(f"mqtt://detector:{SECRET}@broker.example:99999", id="bad-port"),
    pytest.param(f"mqtt://detector:{SECRET}@[broker.example", id="bad-host"),
    pytest.param(f"http://detector:{SECRET}@broker.example", id="bad-scheme"),
]


@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD)
def test_check_config_never_prints_a_password_in_the_broker_url(tmp_path: Path, url: str) -> None:
    result = run_monitor("check-config", str(site_file(tmp_path, f'[mqtt]\nurl = "{url}"')))
    assert result.returncode == 2
    assert SECRET not in result.stderr + result.stdout
    assert "mqtt.url: " in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD)
def test_a_password_in_monitor_mqtt_url_is_never_printed(tmp_path: Path, url: str) -> None:
    result = run_monitor(
        *("detect", "--config", "config/demo.toml", "--duration", "1", "--no-live"),
        *("--store", str(tmp_path / "store.sqlite")),
        env={"MONITOR_MQTT_URL": url, "MONITOR_INFLUX_URL": ""},
    )
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("error: MONITOR_MQTT_URL: "), line
    assert SECRET not in result.stderr + result.stdout
    if "99999" in url:
        assert "'mqtt://detector:***@broker.example:99999'" in line

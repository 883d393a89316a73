"""``python -m simulators`` as a user runs it: in a subprocess, judged by exit status and output."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.scenario import list_scenarios

ROOT = Path(__file__).resolve().parents[1]


def simulators(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulators", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.timeout(60)
def test_list_names_every_scenario_with_its_duration_and_description() -> None:
    result = simulators("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = list_scenarios()
    assert len(names) == 9
    assert [line.split()[0] for line in lines] == names
    typical = next(line for line in lines if line.startswith("mdma-typical "))
    assert re.search(r"\s8\.0 h\s+Two MDMA participants", typical)
    assert all(len(line) <= 110 for line in lines)


@pytest.mark.ble
@pytest.mark.timeout(60)
def test_run_prints_a_status_line_per_session_minute_and_exits_cleanly() -> None:
    result = simulators("run", "mdma-typical", "--speed", "600", "--duration", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "mdma-typical: 8 wearables on the virtual radio" in out
    minutes = re.findall(
        r"^\[(\d\d:\d\d):00\] connected \d/8 delivered \d+ \| P-001 HR \d+", out, re.M
    )
    assert minutes[:3] == ["00:00", "00:01", "00:02"]
    assert len(minutes) >= 5
    assert re.search(r"^stopped at \d\d:\d\d:\d\d: --duration 3 s elapsed$", out, re.M)


@pytest.mark.timeout(60)
def test_an_unknown_scenario_is_bad_input_and_named() -> None:
    result = simulators("run", "no-such-scenario")
    assert result.returncode == 2
    assert "unknown scenario 'no-such-scenario'" in result.stderr
    assert "mdma-typical" in result.stderr  # the message lists what exists


@pytest.mark.timeout(60)
def test_transports_need_one_device_each() -> None:
    result = simulators("run", "mdma-typical", "--transport", "usb:0")
    assert result.returncode == 2
    assert "one --device per transport" in result.stderr
    unknown = simulators("run", "mdma-typical", "--device", "SIM-HR-P-042", "--duration", "1")
    assert unknown.returncode == 2
    assert "no device SIM-HR-P-042" in unknown.stderr


@pytest.mark.ble
@pytest.mark.timeout(60)
def test_sigint_stops_the_run_cleanly() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "simulators", "run", "sensor-dropout", "--speed", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        header = process.stdout.readline()
        assert header.startswith("sensor-dropout: 8 wearables")
        first_status = process.stdout.readline()
        assert first_status.startswith("[00:00:00]")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert re.search(r"^stopped at \d\d:\d\d:\d\d: signal received$", out, re.M)
    assert "Traceback" not in err

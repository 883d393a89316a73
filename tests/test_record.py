"""``monitor record`` end to end: simulated wearables, the real connector, JSON-lines out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.models import (
    DeviceEvent,
    DeviceEventType,
    DeviceState,
    DoseMarker,
    Reading,
    ReadingKind,
)

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.ble, pytest.mark.slow]


def monitor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(150)
def test_record_a_simulated_session(tmp_path: Path) -> None:
    out = tmp_path / "capture"
    result = monitor(
        "record",
        "--config",
        "config/demo.toml",
        "--simulate",
        "mdma-typical",
        "--speed",
        "60",
        "--duration",
        "20",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    readings = [
        Reading.model_validate_json(line)
        for line in (out / "readings.jsonl").read_text().splitlines()
    ]
    kinds = {reading.kind for reading in readings}
    assert {
        ReadingKind.HEART_RATE,
        ReadingKind.BLOOD_PRESSURE,
        ReadingKind.TEMPERATURE,
        ReadingKind.SPO2,
        ReadingKind.BATTERY,
    } <= kinds
    assert {reading.participant for reading in readings} == {"P-001", "P-002"}
    assert {reading.session for reading in readings} == {"DEMO-MDMA-1"}
    events = [
        DeviceEvent.model_validate_json(line)
        for line in (out / "device-events.jsonl").read_text().splitlines()
    ]
    connected = {
        e.device
        for e in events
        if e.event is DeviceEventType.STATE_CHANGED and e.state is DeviceState.CONNECTED
    }
    assert len(connected) == 8
    assert f"readings: {len(readings)}" in result.stdout
    markers = [
        DoseMarker.model_validate_json(line)
        for line in (out / "markers.jsonl").read_text().splitlines()
    ]
    # mdma-typical doses both participants 30 min into the session.
    assert {(m.session, m.participant) for m in markers} == {
        ("DEMO-MDMA-1", "P-001"),
        ("DEMO-MDMA-1", "P-002"),
    }
    first = min(reading.received_at for reading in readings)
    assert all(abs((m.given_at - first).total_seconds() - 1800) < 60 for m in markers)
    for line in (out / "readings.jsonl").read_text().splitlines():
        assert set(json.loads(line)) >= {"session", "participant", "kind", "values", "received_at"}


def test_record_rejects_a_broken_config(tmp_path: Path) -> None:
    result = monitor(
        "record",
        "--config",
        "tests/data/config/three-mistakes.toml",
        "--out",
        str(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    assert "3 problem(s)" in result.stderr


def test_record_names_an_unknown_scenario(tmp_path: Path) -> None:
    result = monitor(
        "record",
        "--config",
        "config/demo.toml",
        "--simulate",
        "no-such-scenario",
        "--duration",
        "1",
        "--out",
        str(tmp_path),
        timeout=60,
    )
    assert result.returncode == 2
    assert "no-such-scenario" in result.stderr

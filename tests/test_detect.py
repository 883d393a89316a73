"""``monitor detect`` beside ``monitor gateway`` (issue 5, roles): the split deployment of a
multi-room site, as processes against a real Mosquitto, with the gateway's wearables simulated
on its own virtual radio. The detector follows the simulating gateway's clock."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiomqtt
import pytest

from monitor.models import AlarmEvent, AlarmPriority, Reading
from monitor.mqtt.payloads import ServiceState, ServiceStatus
from monitor.storage.spool import export_points
from tests.services import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ("--simulate", "mdma-hyperthermia", "--speed", "60", "--start", "11000")

pytestmark = [pytest.mark.network, pytest.mark.ble, pytest.mark.slow]


async def monitor(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "monitor", *args),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(process: asyncio.subprocess.Process) -> tuple[int, dict[str, str], str]:
    """Exit status, the printed summary as ``{label: text}``, and the log."""
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    summary = dict(line.split(": ", 1) for line in out.decode().splitlines() if ": " in line)
    return process.returncode, summary, err.decode(errors="replace")


async def detector_online(port: int) -> None:
    """The detector's retained ``online`` status: from then on it hears every batch."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="watcher") as watcher:
        await watcher.subscribe("vitals/DEMO/status/detector", qos=1)
        async for message in watcher.messages:
            status = ServiceStatus.model_validate_json(bytes(message.payload))
            if status.state is ServiceState.ONLINE:
                return


@pytest.mark.asyncio
@pytest.mark.timeout(240)
async def test_a_detector_raises_the_alarms_of_a_gateways_wearables_and_keeps_every_reading(
    tmp_path: Path,
) -> None:
    out = tmp_path / "detector"
    store = tmp_path / "store.sqlite"
    with Mosquitto(tmp_path / "broker") as broker:
        env = {"MONITOR_MQTT_URL": broker.url, "MONITOR_INFLUX_URL": ""}
        detector = await monitor(
            *("detect", "--config", "config/demo.toml", "--speed", "60", "--duration", "50"),
            *("--store", str(store), "--record", str(out)),
            env=env,
        )
        async with asyncio.timeout(60):
            await detector_online(broker.port)
        gateway = await monitor(
            *("gateway", "--config", "config/demo.toml", *SCENARIO, "--duration", "35"),
            env=env,
        )
        gateway_status, sent, gateway_log = await finished(gateway)
        detector_status, detected, detector_log = await finished(detector)

    assert gateway_status == 0, gateway_log[-3000:]
    assert detector_status == 0, detector_log[-3000:]
    assert "following the gateways' clock at x60" in detector_log
    readings = [Reading.model_validate_json(line) for line in (out / "readings.jsonl").open()]
    alarms = [AlarmEvent.model_validate_json(line) for line in (out / "alarms.jsonl").open()]
    # Every reading the gateway read reached the detector once, and was stored once.
    assert len(readings) == int(sent["readings"]) > 0
    assert len({(r.device, r.received_at) for r in readings}) == len(readings)
    assert detected["from gateways"].startswith(f"{sent['batches']} batches, 0 lost")
    stored = [p for p in export_points(store) if p.key.measurement == "vitals"]
    assert len(stored) == len(readings)
    # The hyperthermia was detected, on the gateway's (simulated) time line; when the gateway
    # stopped, its wearables' data went stale at the detector.
    first = min(r.received_at for r in readings)
    last = max(r.received_at for r in readings)
    assert all(a.occurred_at >= first for a in alarms)
    hot = [a for a in alarms if a.rule.startswith("temp-") and a.priority is AlarmPriority.HIGH]
    assert hot, [(a.rule, a.priority, a.state) for a in alarms]
    assert hot[0].occurred_at <= last
    assert any(a.rule.endswith("-stale") and a.occurred_at > last for a in alarms)


def test_a_detector_needs_the_sites_broker(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415

    result = subprocess.run(
        [sys.executable, "-m", "monitor", "detect", "--config", "config/demo.toml"],
        cwd=ROOT,
        env={**os.environ, "MONITOR_MQTT_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no MQTT broker configured: the detector reads the gateways' readings" in result.stderr

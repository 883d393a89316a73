"""``monitor run`` end to end: simulated wearables on the virtual radio, the real connector,
detection, and alarms out over MQTT into storage, on the embedded defaults and on a real
Mosquitto and InfluxDB 1.6.7."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import aiomqtt
import pytest

from monitor.models import AlarmEvent, AlarmPriority, AlarmState
from monitor.mqtt.payloads import AlarmMessage, CommandReply
from monitor.storage import export_points
from tests.services import InfluxDB, Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
SESSION = "DEMO-MDMA-1"

pytestmark = [pytest.mark.ble, pytest.mark.slow]


async def monitor_run(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 150
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "run",
        "--config",
        "config/demo.toml",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout_s):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_embedded_defaults_need_no_broker_and_no_database(tmp_path: Path) -> None:
    """The README demo's path: hyperthermia from 3 h in, at x60, on the embedded broker and the
    local store; /metrics answers while it runs."""
    out = tmp_path / "run"
    store = tmp_path / "store.sqlite"
    port = free_port()
    run = asyncio.create_task(
        monitor_run(
            *("--simulate", "mdma-hyperthermia", "--speed", "60", "--start", "11000"),
            *("--duration", "25", "--record", str(out), "--store", str(store)),
            *("--http", f"127.0.0.1:{port}"),
            env={"MONITOR_MQTT_URL": "", "MONITOR_INFLUX_URL": ""},
        )
    )
    metrics = await _scrape(f"http://127.0.0.1:{port}/metrics", run)
    status, stdout, stderr = await run
    assert status == 0, stderr
    assert "monitor_readings_total" in metrics
    assert "monitor_spool_depth" in metrics
    assert "(embedded)" in stdout
    assert "storage: local store" in stdout
    alarms = [AlarmEvent.model_validate_json(line) for line in (out / "alarms.jsonl").open()]
    temperature = [a for a in alarms if a.participant == "P-001" and a.rule.startswith("temp-")]
    assert any(a.state is AlarmState.ACTIVE for a in temperature), [a.rule for a in alarms]
    assert [a.sequence for a in alarms] == list(range(1, len(alarms) + 1))
    logged = [line for line in stderr.splitlines() if " monitor.service: alarm #" in line]
    assert len(logged) == len(alarms), stderr[-3000:]
    assert all(" WARNING " in line for line in logged), "every transition at WARNING, none ERROR"
    readings = (out / "readings.jsonl").read_text().splitlines()
    stored = list(export_points(store))
    assert sum(p.line.startswith("vitals,") for p in stored) == len(readings)
    assert sum(p.line.startswith("alarm_events,") for p in stored) == len(alarms)


@pytest.mark.asyncio
@pytest.mark.network
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("timing", "acknowledge"),
    [
        pytest.param(("--speed", "300", "--duration", "45"), False, id="acceptance-x300"),
        pytest.param(
            ("--speed", "60", "--start", "11000", "--duration", "30"), True, id="acknowledge"
        ),
    ],
)
async def test_hyperthermia_alarms_reach_mqtt_and_influxdb(
    tmp_path: Path, timing: tuple[str, ...], acknowledge: bool
) -> None:
    """Against a real Mosquitto and InfluxDB 1.6.7 (v1 API): the issue's acceptance run at x300
    for 45 s, and a slower one in which staff acknowledge the high alarm over MQTT."""
    out = tmp_path / "run"
    with Mosquitto(tmp_path / "broker") as broker, InfluxDB(tmp_path / "influx") as influx:
        influx.query("CREATE DATABASE vitals")
        env = {
            "MONITOR_MQTT_URL": broker.url,
            "MONITOR_INFLUX_URL": influx.url,
            "MONITOR_INFLUX_API": "v1",
            "MONITOR_INFLUX_BUCKET": "vitals",
        }
        base = "vitals/DEMO"
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="staff-dashboard") as staff:
            await staff.subscribe(f"{base}/alarms/#", qos=1)
            await staff.subscribe(f"{base}/replies/#", qos=1)
            run = asyncio.create_task(
                monitor_run(
                    "--simulate",
                    "mdma-hyperthermia",
                    *timing,
                    "--record",
                    str(out),
                    "--store",
                    str(tmp_path / "store.sqlite"),
                    env=env,
                )
            )
            published: list[AlarmEvent] = []
            replies: list[CommandReply] = []
            acknowledged: list[str] = []
            arrived = asyncio.Event()

            async def staff_at_the_dashboard() -> None:
                async for message in staff.messages:
                    arrived.set()
                    if message.topic.matches(f"{base}/replies/#"):
                        replies.append(CommandReply.model_validate_json(bytes(message.payload)))
                        continue
                    event = AlarmMessage.model_validate_json(bytes(message.payload)).event
                    published.append(event)
                    high_temperature = (
                        event.rule.startswith("temp-")
                        and event.priority is AlarmPriority.HIGH
                        and event.state is AlarmState.ACTIVE
                    )
                    if acknowledge and not acknowledged and high_temperature:
                        acknowledged.append(str(event.alarm_id))
                        await staff.publish(
                            f"{base}/commands/{SESSION}/acknowledge/local",
                            json.dumps(_acknowledge(acknowledged[0])),
                            qos=1,
                        )

            dashboard = asyncio.create_task(staff_at_the_dashboard())
            status, _, stderr = await run
            assert status == 0, stderr
            recorded = [
                AlarmEvent.model_validate_json(line) for line in (out / "alarms.jsonl").open()
            ]
            # Every transition is published (QoS 1: duplicates allowed, gaps not); the last
            # ones may still be on their way from the broker.
            async with asyncio.timeout(20):
                while {e.sequence for e in recorded} - {e.sequence for e in published}:
                    arrived.clear()
                    await arrived.wait()
            dashboard.cancel()

        assert any(
            e.rule.startswith("temp-") and e.priority is AlarmPriority.HIGH for e in published
        ), "the hyperthermia was not published"
        if acknowledge:
            assert any(r.ok and r.kind == "acknowledge" for r in replies), replies
            assert any(
                str(e.alarm_id) == acknowledged[0] and e.acknowledged_by == "nurse-07"
                for e in recorded
            )

        readings = len((out / "readings.jsonl").read_text().splitlines())
        count = influx.query("SELECT COUNT(sequence) FROM alarm_events", database="vitals")
        assert _count(count) == len(recorded)
        vitals = influx.query(
            "SELECT COUNT(*) FROM vitals WHERE kind = 'heart_rate'", database="vitals"
        )
        assert _count(vitals) > 0
        assert readings > 0


def _acknowledge(alarm_id: str) -> dict[str, object]:
    return {
        "schema_version": 1,
        "kind": "acknowledge",
        "command_id": str(uuid.uuid4()),
        "session": SESSION,
        "staff": "nurse-07",
        "issued_at": dt.datetime.now(dt.UTC).isoformat(),
        "alarm_id": alarm_id,
    }


async def _scrape(url: str, run: asyncio.Task[tuple[int, str, str]]) -> str:
    """The metrics page, once the service serves it (polled: it has no other signal)."""
    while not run.done():
        try:
            body: bytes = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url, timeout=5).read()
            )
            return body.decode()
        except (urllib.error.URLError, ConnectionError):
            await asyncio.sleep(0.2)
    _, _, stderr = run.result()
    pytest.fail(f"the service ended before serving {url}: {stderr[-2000:]}")


def _count(result: dict[str, object]) -> int:
    series = result["results"][0].get("series")  # type: ignore[index]
    if not series:
        return 0
    return int(max(value for value in series[0]["values"][0][1:] if value is not None))


@pytest.mark.timeout(60)
def test_bad_connection_settings_from_the_environment_are_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "monitor", "run", "--config", "config/demo.toml"),
            *("--duration", "1", "--store", str(tmp_path / "store.sqlite")),
        ],
        cwd=ROOT,
        env={**os.environ, "MONITOR_MQTT_URL": "http://broker.example"},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 2
    assert "MONITOR_MQTT_URL" in result.stderr


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_sigterm_stops_cleanly_and_keeps_every_reading(tmp_path: Path) -> None:
    """What arrived since the last detection pass still reaches the record and the store."""
    out, store = tmp_path / "run", tmp_path / "store.sqlite"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "monitor", "run", "--config", "config/demo.toml"),
        *("--simulate", "mdma-typical", "--speed", "60", "--record", str(out)),
        *("--store", str(store)),
        cwd=ROOT,
        env={**os.environ, "MONITOR_MQTT_URL": "", "MONITOR_INFLUX_URL": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    readings = out / "readings.jsonl"
    async with asyncio.timeout(60):  # until readings flow (polled: the file is the only sign)
        while not (readings.exists() and readings.stat().st_size > 10_000):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 130, err.decode()[-2000:]
    assert "stopped cleanly" in err.decode()
    recorded = len(readings.read_text().splitlines())
    stored = sum(p.line.startswith("vitals,") for p in export_points(store))
    assert stored == recorded > 0

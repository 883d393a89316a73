"""A flood on the command topics must never delay an alarm (issue 9, item 3).

``monitor detect`` runs as a process against a real Mosquitto configured as the example broker
(a persistent session may queue 10,000 messages, 32 in flight). The test is the gateway: it plants
a reading that is due to raise a high alarm at once (SpO2 at or below 88 %, ``delay_s = 0``), and
an independent subscriber measures when the alarm event arrives. First with 10,000 invalid
commands queued for the detector while it was away, then under a live flood of 5,000 commands a
second (acknowledged by the broker) from a separate process: half invalid JSON, half well-formed
acknowledgements of an unknown alarm, which the detector carries out and answers one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from monitor.models import AlarmPriority, AlarmState, Parameter, Reading, ReadingKind
from monitor.mqtt.payloads import AlarmMessage, ServiceState, ServiceStatus
from monitor.mqtt.tracking import BatchNumbering
from tests.services import Mosquitto, free_port
from tests.test_service_faults import read_metrics

ROOT = Path(__file__).resolve().parent.parent
BASE = "vitals/DEMO"
SESSION = "DEMO-MDMA-1"
BACKLOG = 10_000
FLOOD_RATE = 5_000.0
DUE_WITHIN_S = 2.0
JUNK = b'{"schema_version": 1, "kind": "acknowledge", '
# The example broker's limits (config/mosquitto/mosquitto.conf), room for the whole backlog.
BROKER = "allow_anonymous true\nmax_queued_messages 20000\nmax_inflight_messages 32\n"

pytestmark = [pytest.mark.network, pytest.mark.slow]

FLOODER = """
import sys, time
import paho.mqtt.client as paho

port, rate, topic, session = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="flooder")
client.max_inflight_messages_set(1000)
client.max_queued_messages_set(0)
acked = 0


def on_publish(*_):
    global acked
    acked += 1


client.on_publish = on_publish
client.connect("127.0.0.1", port)
client.loop_start()
began = time.monotonic()
sent = 0
reported = began
ack = (
    '{"schema_version": 1, "kind": "acknowledge", "command_id": "flood-%d", "session": "%s", '
    '"staff": "nurse-07", "issued_at": "2025-03-01T09:00:00Z", '
    '"alarm_id": "5a0c35c4-2f7e-5d43-9a55-0d6a7c1f3b21"}'
)
while True:
    due = int((time.monotonic() - began) * rate)
    while sent < due:
        if sent % 2:
            client.publish(topic, (ack % (sent, session)).encode(), qos=1)
        else:
            client.publish(topic, b'{"schema_version": 1, "kind": "acknowledge", ', qos=1)
        sent += 1
    now = time.monotonic()
    if now - reported >= 0.25:
        print(acked, now - began, flush=True)  # what the broker took, not just what was sent
        reported = now
    time.sleep(0.002)
"""


async def detector(port: int, store: Path, http: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "monitor", "detect", "--config", "config/demo.toml"),
        *("--store", str(store), "--duration", "120", "--http", f"127.0.0.1:{http}"),
        cwd=ROOT,
        env={
            **os.environ,
            "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{port}",
            "MONITOR_INFLUX_URL": "",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def refused(port: int) -> float:
    """``monitor_command_rejected_total`` from the detector's /metrics (0 until it answers)."""
    return (read_metrics(port) or {}).get("monitor_command_rejected_total", 0.0)


async def stopped(process: asyncio.subprocess.Process) -> str:
    """Stop it as an operator would (SIGINT) and return its log."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    return err.decode(errors="replace")


class Watcher:
    """An independent dashboard: its own connection, timestamps of what arrives."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.online = asyncio.Event()
        self.detecting = asyncio.Event()  # the start-up snapshot: detection has begun
        self.high_alarms: dict[str, float] = {}  # participant -> loop time of arrival
        self.changed = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async for message in self.client.messages:
            payload = bytes(message.payload)
            if message.topic.matches(f"{BASE}/status/+"):
                status = ServiceStatus.model_validate_json(payload)
                if status.state is ServiceState.ONLINE:
                    self.online.set()
                else:
                    self.online.clear()
                continue
            if message.topic.matches(f"{BASE}/active-alarms/+"):
                if not message.retain:  # published while we listen: this run's
                    self.detecting.set()
                continue
            event = AlarmMessage.model_validate_json(payload).event
            if (
                event.rule.startswith("spo2-low")
                and event.priority is AlarmPriority.HIGH
                and event.state is AlarmState.ACTIVE
            ):
                self.high_alarms.setdefault(event.participant, loop.time())
                self.changed.set()

    async def alarm_delay(self, participant: str, planted_at: float, timeout_s: float) -> float:
        async with asyncio.timeout(timeout_s):
            while participant not in self.high_alarms:
                self.changed.clear()
                await self.changed.wait()
        return self.high_alarms[participant] - planted_at


@contextlib.asynccontextmanager
async def watching(port: int) -> AsyncIterator[Watcher]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="independent-dashboard") as client:
        await client.subscribe(f"{BASE}/alarms/#", qos=1)
        await client.subscribe(f"{BASE}/status/detector", qos=1)
        await client.subscribe(f"{BASE}/active-alarms/{SESSION}", qos=1)
        watcher = Watcher(client)
        task = asyncio.create_task(watcher.run())
        try:
            yield watcher
        finally:
            task.cancel()


async def plant_low_spo2(gateway: aiomqtt.Client, numbering: BatchNumbering, code: str) -> float:
    """A reading due to raise the high SpO2 alarm at once; returns when it was sent."""
    now = dt.datetime.now(dt.UTC)
    reading = Reading(
        session=SESSION,
        participant=code,
        device=f"spo2-{code.lower()}",
        kind=ReadingKind.SPO2,
        values={Parameter.SPO2: 85.0, Parameter.PULSE_RATE: 90.0},
        received_at=now,
    )
    batch = numbering.batch([reading], now)
    planted_at = asyncio.get_running_loop().time()
    await gateway.publish(
        f"{BASE}/readings/{SESSION}/{code}", batch.model_dump_json().encode(), qos=1
    )
    return planted_at


async def queue_backlog(port: int) -> None:
    """Junk for the detector's persistent session while it is away (QoS 1: all kept)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="backlog") as client:
        client.pending_calls_threshold = 200
        topic = f"{BASE}/commands/{SESSION}/acknowledge/local"
        for start in range(0, BACKLOG, 100):
            await asyncio.gather(
                *(client.publish(topic, JUNK, qos=1) for _ in range(min(100, BACKLOG - start)))
            )


async def flood_rate(flooder: asyncio.subprocess.Process, at_least: int) -> tuple[int, float]:
    """The flooder's progress once it has sent ``at_least`` commands: (sent, seconds)."""
    assert flooder.stdout is not None
    while True:
        line = await flooder.stdout.readline()
        if not line:
            pytest.fail("the flooder stopped")
        sent, elapsed = line.split()
        if int(sent) >= at_least:
            return int(sent), float(elapsed)


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_high_alarm_reaches_a_subscriber_in_time_despite_a_command_backlog_and_flood(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store.sqlite"
    with Mosquitto(tmp_path / "broker", extra_config=BROKER) as broker:
        # A first run makes the detector's persistent session(s) on the broker, then it goes away.
        async with watching(broker.port) as watcher:
            first = await detector(broker.port, store, free_port())
            async with asyncio.timeout(30):
                await watcher.online.wait()
            log = await stopped(first)
            assert first.returncode in (0, 130), log[-3000:]
        await queue_backlog(broker.port)

        numbering = BatchNumbering("gw-test")
        http = free_port()
        async with (
            watching(broker.port) as watcher,
            aiomqtt.Client("127.0.0.1", broker.port, identifier="gw-test") as gateway,
        ):
            second = await detector(broker.port, store, http)
            try:
                async with asyncio.timeout(30):
                    await watcher.detecting.wait()
                planted_at = await plant_low_spo2(gateway, numbering, "P-001")
                backlog_delay = await watcher.alarm_delay("P-001", planted_at, timeout_s=10)
                # and the backlog was really there: the detector refuses every queued command
                async with asyncio.timeout(20):
                    while (await asyncio.to_thread(refused, http)) < BACKLOG:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)  # the metrics page has no other signal

                flooder = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-c", FLOODER, str(broker.port), str(FLOOD_RATE)),
                    *(f"{BASE}/commands/{SESSION}/acknowledge/local", SESSION),
                    stdout=asyncio.subprocess.PIPE,
                )
                try:
                    async with asyncio.timeout(20):
                        await flood_rate(flooder, int(FLOOD_RATE))  # a second of flood first
                    planted_at = await plant_low_spo2(gateway, numbering, "P-002")
                    flood_delay = await watcher.alarm_delay("P-002", planted_at, timeout_s=10)
                    async with asyncio.timeout(20):
                        sent, elapsed = await flood_rate(flooder, int(FLOOD_RATE * 2))
                finally:
                    flooder.kill()
                    await flooder.wait()
            finally:
                log = await stopped(second)
    assert sent / elapsed >= 0.9 * FLOOD_RATE, f"the flood reached only {sent / elapsed:.0f}/s"
    assert backlog_delay <= DUE_WITHIN_S, (
        f"{backlog_delay:.2f} s late after a backlog\n{log[-3000:]}"
    )
    assert flood_delay <= DUE_WITHIN_S, f"{flood_delay:.2f} s late under a flood\n{log[-3000:]}"

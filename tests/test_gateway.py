"""The gateway role and the detector's side of it, against a real Mosquitto.

:class:`VitalsFeed` on its own (numbering, duplicates, garbage), then gateways reading simulated
wearables on the virtual radio through the real bleak API: two rooms, one gateway each, as the
broker's ``gateway`` user under the example ACL, and ``monitor gateway`` as a process stopped by
SIGINT. The gateway's own record of what it read is the truth the far side is checked against.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from monitor.cli import _simulation
from monitor.clock import AcceleratedClock, SystemClock
from monitor.config import load_config
from monitor.devices.connector import BleBackend
from monitor.gateway import Gateway
from monitor.models import (
    DeviceEvent,
    DeviceEventType,
    DeviceKind,
    DeviceState,
    Parameter,
    Reading,
    ReadingKind,
)
from monitor.mqtt.client import Malformed, MqttLink, Subscription, VitalsFeed
from monitor.mqtt.contract import Role
from monitor.mqtt.payloads import MAX_BATCH_READINGS, MAX_BATCH_SEQUENCE, DeviceStatus, VitalsBatch
from monitor.mqtt.topics import Topics
from monitor.mqtt.tracking import BatchNumbering
from tests.services import Mosquitto
from tests.test_mqtt_acl import PASSWORDS, example_broker
from tests.test_mqtt_link import broker, link

pytestmark = [pytest.mark.network]

ROOT = Path(__file__).resolve().parent.parent
TOPICS = Topics(root="vitals", site="SITE-1")
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
WAIT_S = 20.0


class Received:
    """What a feed handed out; waiting wakes on every callback (no polling, no sleeps)."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[DeviceEvent] = []
        self.changed = asyncio.Event()

    def on_reading(self, reading: Reading) -> None:
        self.readings.append(reading)
        self.changed.set()

    def on_event(self, event: DeviceEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, done: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def running_feed(
    port: int, received: Received, **link_options: object
) -> AsyncIterator[VitalsFeed]:
    """A detector's link with a feed on it, subscribed and running."""
    detector = link(port, f"detector-{uuid.uuid4().hex[:8]}", **link_options)
    feed = VitalsFeed(detector, TOPICS, received.on_reading, received.on_event)
    async with detector, asyncio.TaskGroup() as group:
        await asyncio.wait_for(detector.wait_connected(), WAIT_S)
        task = group.create_task(feed.run())
        yield feed
        task.cancel()


def reading(code: str, second: float, session: str = "S-1") -> Reading:
    return Reading(
        session=session,
        participant=code,
        device=f"hr-{code.lower()}",
        kind=ReadingKind.HEART_RATE,
        values={Parameter.HEART_RATE: 80.0 + second},
        received_at=T0 + dt.timedelta(seconds=second),
    )


def device_event(state: DeviceState, second: float) -> DeviceEvent:
    return DeviceEvent(
        session="S-1",
        participant="P-001",
        device="hr-p-001",
        device_kind=DeviceKind.HEART_RATE,
        event=DeviceEventType.STATE_CHANGED,
        state=state,
        occurred_at=T0 + dt.timedelta(seconds=second),
    )


# --- VitalsFeed ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_the_feed_skips_duplicates_counts_loss_and_takes_late_batches(
    tmp_path: Path,
) -> None:
    numbering = BatchNumbering("gw-room-1")
    batches = [numbering.batch([reading("P-001", s)], T0) for s in range(1, 5)]
    first, second, third, fourth = batches
    connected, lost = device_event(DeviceState.CONNECTED, 1), device_event(DeviceState.LOST, 9)
    topic = TOPICS.readings("S-1", "P-001")
    device_topic = TOPICS.device("S-1", "P-001", "hr-p-001")
    async with broker(tmp_path / "broker") as server:
        gateway = link(server.port, "gw-room-1")
        async with gateway:
            # retained before the feed listens: the broker's last known state reaches it once
            gateway.publish(device_topic, DeviceStatus(event=connected), retain=True)
            await asyncio.wait_for(gateway.drain(), WAIT_S)
            received = Received()
            async with running_feed(server.port, received) as feed:
                await received.wait_for(lambda: len(received.events) == 1)
                for batch in (first, second, second, fourth, third):
                    gateway.publish(topic, batch)
                # the same event again (a restatement after a reconnect), then a new one
                # (drained between: the outbox keeps only the latest retained per topic)
                gateway.publish(device_topic, DeviceStatus(event=connected), retain=True)
                await asyncio.wait_for(gateway.drain(), WAIT_S)
                gateway.publish(device_topic, DeviceStatus(event=lost), retain=True)
                # the last of each topic is new: once it is out, everything before is handled
                await received.wait_for(lambda: len(received.events) == 2)
                await received.wait_for(lambda: len(received.readings) == 4)

    assert [r.received_at for r in received.readings] == [
        r.received_at for b in (first, second, fourth, third) for r in b.readings
    ]
    assert received.events == [connected, lost]
    stats = feed.sequence.stats
    assert (stats.batches, stats.lost, stats.late, stats.duplicates) == (5, 0, 1, 1)
    assert (feed.stats.batches, feed.stats.readings, feed.stats.device_repeats) == (4, 4, 1)
    assert feed.stats.malformed == {}
    assert feed.dropped == 0


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_garbage_is_counted_logged_once_and_never_stops_the_feed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    numbering = BatchNumbering("gw-room-1")
    good = numbering.batch([reading("P-001", 1)], T0)
    other = numbering.batch([reading("P-002", 2)], T0)
    readings_topic = TOPICS.readings("S-1", "P-001")
    named_topic = f"{TOPICS.base}/readings/S-1/Jane Doe"  # a name in a topic must not be logged
    wrong_version = good.model_dump(mode="json") | {"schema_version": 2}
    garbage: list[tuple[str, bytes]] = [
        (readings_topic, b'{"gateway": "gw-room-1", "Jane Doe"'),  # JSON cut off
        (readings_topic, b"\xff\xfe Jane Doe \x00"),  # not UTF-8
        (readings_topic, good.model_dump_json().encode()[:-1]),
        (readings_topic, _json(wrong_version)),
        (readings_topic, b'{"schema_version": 1, "name": "Jane Doe"}'),
        (readings_topic, b"[1, 2, 3]"),
        (readings_topic, other.model_dump_json().encode()),  # P-002's batch on P-001's topic
        (named_topic, good.model_dump_json().encode()),
        (TOPICS.device("S-1", "P-001", "hr-p-001"), b'{"event": "Jane Doe"}'),
        # the heart-rate strap's status on the pulse oximeter's topic
        (TOPICS.device("S-1", "P-001", "spo2-p-001"), _status(DeviceState.CONNECTED)),
        # a key twice (each valid alone): json keeps the last value, another reader the first
        (readings_topic, good.model_dump_json().encode()[:-1] + b', "gateway": "gw-forged"}'),
        (TOPICS.device("S-1", "P-001", "hr-p-001"), _twice(_status(DeviceState.CONNECTED))),
    ]
    caplog.set_level(logging.WARNING, logger="monitor.mqtt")
    async with broker(tmp_path / "broker") as server:
        # MQTT 3.1.1: over 5 the link marks payloads UTF-8, and the broker refuses what is not
        gateway = link(server.port, "gw-room-1", protocol="3.1.1")
        received = Received()
        async with running_feed(server.port, received) as feed, gateway:
            for topic, payload in garbage:
                gateway.publish(topic, payload)
            # and the streams go on (the last message of each topic is new, so once both are
            # out every earlier message has been handled)
            gateway.publish(readings_topic, good)
            gateway.publish(TOPICS.device("S-1", "P-001", "hr-p-001"), _status(DeviceState.LOST))
            await received.wait_for(lambda: bool(received.readings and received.events))

    assert received.readings == list(good.readings)
    assert [e.state for e in received.events] == [DeviceState.LOST]
    assert feed.stats.messages == len(garbage) + 2
    assert feed.stats.malformed == {
        Malformed.INVALID_JSON: 3,
        Malformed.UNSUPPORTED_SCHEMA_VERSION: 1,
        Malformed.INVALID_PAYLOAD: 3,
        Malformed.TOPIC_MISMATCH: 3,
        Malformed.DUPLICATE_KEY: 2,
    }
    assert feed.sequence.stats.lost == 0
    logged = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(logged) == 1, logged  # throttled: one line per interval, with a count
    assert all("Jane" not in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_hostile_batch_number_neither_hangs_the_feed_nor_hides_later_batches(
    tmp_path: Path,
) -> None:
    """The largest number the payload allows is counted at once; a bigger one is malformed; the
    gateway's real batches after them are still handed out (the issue's ``2**63`` hang)."""
    numbering = BatchNumbering("gw-room-1")
    first, second = (numbering.batch([reading("P-001", s)], T0) for s in (1, 2))
    topic = TOPICS.readings("S-1", "P-001")
    body = first.model_dump(mode="json")
    async with broker(tmp_path / "broker") as server:
        gateway = link(server.port, "gw-room-1")
        received = Received()
        async with running_feed(server.port, received) as feed, gateway:
            gateway.publish(topic, first)
            gateway.publish(topic, _json(body | {"sequence": MAX_BATCH_SEQUENCE}))
            gateway.publish(topic, _json(body | {"sequence": 10**30}))
            gateway.publish(topic, second)
            await received.wait_for(lambda: len(received.readings) == 3)

    assert received.readings[-1] == second.readings[0]
    assert feed.stats.malformed == {Malformed.INVALID_PAYLOAD: 1}
    stats = feed.sequence.stats
    assert (stats.lost, stats.late, stats.duplicates) == (MAX_BATCH_SEQUENCE - 3, 1, 0)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _twice(status: bytes) -> bytes:
    """A device status whose ``event`` is given twice (the same event)."""
    event = json.dumps(json.loads(status)["event"]).encode()
    return status[:-1] + b', "event": ' + event + b"}"


def _status(state: DeviceState) -> bytes:
    """The status of P-001's heart-rate strap."""
    return DeviceStatus(event=device_event(state, 1)).model_dump_json().encode()


# --- gateways reading simulated wearables -----------------------------------------------------


def two_rooms(tmp_path: Path) -> Path:
    """The demo site split in two: P-001 in room-a, P-002 in room-b, one session each."""
    devices = {
        "heart_rate": "HR",
        "blood_pressure": "BP",
        "thermometer": "TEMP",
        "pulse_oximeter": "SPO2",
    }
    lines = [
        "[site]",
        'code = "DEMO"',
        'timezone = "Europe/Zurich"',
        f'protocols_dir = "{ROOT / "config" / "protocols"}"',
    ]
    for room, session, code in (("room-a", "S-A", "P-001"), ("room-b", "S-B", "P-002")):
        lines += ["[[rooms]]", f'id = "{room}"', "max_connections = 4"]
        lines += ["[[sessions]]", f'id = "{session}"', f'room = "{room}"', 'protocol = "mdma"']
        lines += ["[[sessions.participants]]", f'code = "{code}"']
        for kind, short in devices.items():
            lines += [
                "[[sessions.participants.devices]]",
                f'id = "{short.lower()}-{code.lower()}"',
                f'kind = "{kind}"',
                f'name_pattern = "SIM-{short}-{code}"',
            ]
    path = tmp_path / "site.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def collect(subscription: Subscription, into: list[VitalsBatch], arrived: Received) -> None:
    async for message in subscription:
        into.append(VitalsBatch.model_validate_json(message.payload))
        arrived.changed.set()


def assert_numbered_from_one(batches: list[VitalsBatch]) -> None:
    """Per gateway and participant: 1, 2, 3, ... with no gap and no repeat."""
    streams: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for batch in batches:
        streams[(batch.gateway, batch.participant)].append(batch.sequence)
        assert 1 <= len(batch.readings) <= MAX_BATCH_READINGS
    for key, sequences in streams.items():
        assert sequences == list(range(1, len(sequences) + 1)), key


@pytest.mark.ble
@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(150)
async def test_two_rooms_two_gateways_every_reading_arrives_once_in_numbered_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(two_rooms(tmp_path))
    server = example_broker(tmp_path / "acl")
    await asyncio.to_thread(server.start)
    try:
        monkeypatch.setenv("MONITOR_MQTT_PASSWORD", PASSWORDS[Role.GATEWAY])
        environ = {"MONITOR_MQTT_URL": f"mqtt://gateway@127.0.0.1:{server.port}"}
        clock = AcceleratedClock(SystemClock().now(), 60)
        simulated = await _simulation("mdma-typical", clock, config)
        assert simulated is not None
        backend, wearables = simulated
        sent: dict[str, list[Reading]] = {"room-a": [], "room-b": []}
        gateways = [
            Gateway(
                config,
                clock=clock,
                backend=backend,
                rooms=[room],
                duration_s=12,
                environ=environ,
                on_reading=sent[room].append,
            )
            for room in sent
        ]
        received = Received()
        batches: list[VitalsBatch] = []
        detector = MqttLink(
            host="127.0.0.1",
            port=server.port,
            client_id="detector-1",
            username=Role.DETECTOR.value,
            password=SecretStr(PASSWORDS[Role.DETECTOR]),
        )
        feed = VitalsFeed(
            detector, Topics("vitals", "DEMO"), received.on_reading, received.on_event
        )
        dashboard = MqttLink(
            host="127.0.0.1",
            port=server.port,
            client_id="dashboard-1",
            username=Role.DASHBOARD.value,
            password=SecretStr(PASSWORDS[Role.DASHBOARD]),
        )
        raw = dashboard.subscribe(Topics("vitals", "DEMO").readings_filter)
        async with detector, dashboard, asyncio.TaskGroup() as group:
            await asyncio.wait_for(detector.wait_connected(), WAIT_S)
            await asyncio.wait_for(dashboard.wait_connected(), WAIT_S)
            listeners = [
                group.create_task(feed.run()),
                group.create_task(collect(raw, batches, received)),
            ]
            async with wearables:
                summaries = await asyncio.gather(*(gateway.run() for gateway in gateways))
            total = sum(s.batches for s in summaries)
            await received.wait_for(lambda: len(batches) >= total and feed.stats.batches >= total)
            for listener in listeners:
                listener.cancel()
    finally:
        await asyncio.to_thread(server.stop)

    for room, code, summary in zip(sent, ("P-001", "P-002"), summaries, strict=True):
        assert summary.name == f"gateway-{room}"
        assert summary.readings == len(sent[room]) > 0
        assert {r.participant for r in sent[room]} == {code}  # the other room is not its own
        assert summary.unacknowledged == 0
        assert summary.device_events >= 4  # each wearable connected
    assert_numbered_from_one(batches)
    assert {(b.gateway, b.participant) for b in batches} == {
        ("gateway-room-a", "P-001"),
        ("gateway-room-b", "P-002"),
    }
    assert len(batches) == total < len(received.readings)  # batched, not one message each
    published = collections.Counter(r.model_dump_json() for rs in sent.values() for r in rs)
    assert collections.Counter(r.model_dump_json() for r in received.readings) == published
    stats = feed.sequence.stats
    assert (stats.lost, stats.duplicates, stats.restarts, stats.streams) == (0, 0, 0, 2)
    connected = {e.device for e in received.events if e.state is DeviceState.CONNECTED}
    assert len(connected) == 8
    assert feed.stats.malformed == {}


@pytest.mark.ble
@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(150)
async def test_monitor_gateway_stopped_by_sigint_hands_over_what_it_read(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as server:
        received = Received()
        batches: list[VitalsBatch] = []
        dashboard = link(server.port, "dashboard-1")
        raw = dashboard.subscribe(Topics("vitals", "DEMO").readings_filter)
        async with dashboard, asyncio.TaskGroup() as group:
            await asyncio.wait_for(dashboard.wait_connected(), WAIT_S)
            listener = group.create_task(collect(raw, batches, received))
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "monitor", "gateway", "--config", "config/demo.toml"),
                *("--simulate", "mdma-typical", "--speed", "60"),
                cwd=ROOT,
                env={**os.environ, "MONITOR_MQTT_URL": server.url},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            await received.wait_for(lambda: len(batches) >= 20, timeout_s=90)
            process.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                out, err = await process.communicate()
            assert process.returncode == 130, err.decode()[-3000:]
            assert "stopped cleanly" in err.decode()
            summary = dict(line.split(": ", 1) for line in out.decode().splitlines())
            await received.wait_for(lambda: len(batches) >= int(summary["batches"]))
            listener.cancel()

    assert summary["gateway"] == "gateway-demo-room (rooms: demo-room)"
    assert summary["MQTT"].endswith(", 0 not")
    assert len(batches) == int(summary["batches"])
    assert sum(len(b.readings) for b in batches) == int(summary["readings"])
    assert {b.participant for b in batches} == {"P-001", "P-002"}
    assert_numbered_from_one(batches)


# --- refusals --------------------------------------------------------------------------------


def test_a_gateway_needs_a_broker_and_known_rooms_with_devices(tmp_path: Path) -> None:
    config = load_config(two_rooms(tmp_path))
    clock, backend = SystemClock(), BleBackend()
    with pytest.raises(ValueError, match="no MQTT broker configured"):
        Gateway(config, clock=clock, backend=backend, environ={})
    environ = {"MONITOR_MQTT_URL": "mqtt://127.0.0.1:1883"}
    with pytest.raises(ValueError, match="no room room-c"):
        Gateway(config, clock=clock, backend=backend, rooms=["room-c"], environ=environ)
    with pytest.raises(ValueError, match="not an identifier"):
        Gateway(config, clock=clock, backend=backend, name="gate way", environ=environ)
    with pytest.raises(ValueError, match="MONITOR_MQTT_URL"):
        Gateway(config, clock=clock, backend=backend, environ={"MONITOR_MQTT_URL": "http://x"})
    both = Gateway(config, clock=clock, backend=backend, environ=environ)
    assert (both.rooms, both.name) == (("room-a", "room-b"), "gateway-DEMO")
    one = Gateway(config, clock=clock, backend=backend, rooms=["room-b"] * 2, environ=environ)
    assert (one.rooms, one.name) == (("room-b",), "gateway-room-b")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param((), {"MONITOR_MQTT_URL": ""}, "no MQTT broker configured", id="no-broker"),
        pytest.param(
            ("--room", "nowhere"), {"MONITOR_MQTT_URL": "mqtt://127.0.0.1:1"}, "no room", id="room"
        ),
        pytest.param(("--speed", "2"), {}, "only apply with --simulate", id="speed"),
    ],
)
def test_monitor_gateway_refuses_bad_input_with_status_2(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "gateway", "--config", "config/demo.toml", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr

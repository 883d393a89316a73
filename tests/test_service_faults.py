"""``monitor run`` under faults (issue 5): the broker killed mid-session, InfluxDB away for a
while, the service itself SIGKILLed and restarted, and a flood of garbage on the command
topics. The service runs as a subprocess against a real Mosquitto and InfluxDB 1.6.7 on free
loopback ports; the record files are the truth every other sink is checked against."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import signal
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiomqtt
import pytest

from monitor.models import AlarmCategory, AlarmEvent, AlarmPriority, AlarmState, Reading
from monitor.mqtt.client import REFUSAL_REPLY_INTERVAL_S
from monitor.mqtt.payloads import (
    MAX_COMMAND_BYTES,
    ActiveAlarms,
    AlarmMessage,
    CommandReply,
    ErrorCode,
    ServiceState,
    ServiceStatus,
    VitalsBatch,
)
from monitor.storage.spool import PointState, export_points
from tests.services import InfluxDB, Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
SESSION = "DEMO-MDMA-1"
BASE = "vitals/DEMO"
RUN = ("--simulate", "mdma-hyperthermia", "--speed", "60", "--start", "11000")

pytestmark = [pytest.mark.network, pytest.mark.ble, pytest.mark.slow]

ReadingKey = tuple[str, str, dt.datetime]


# --- the service as a subprocess ------------------------------------------------------------


@dataclasses.dataclass
class Service:
    """A running ``monitor run``; ``result`` finishes with (exit status, stdout, stderr)."""

    process: asyncio.subprocess.Process
    result: asyncio.Task[tuple[int, str, str]]


async def start_service(
    *args: str, env: dict[str, str], config: Path = ROOT / "config" / "demo.toml"
) -> Service:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "monitor", "run", "--config", str(config), *args),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def finish() -> tuple[int, str, str]:
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode(errors="replace")

    return Service(process, asyncio.create_task(finish()))


async def finished(service: Service, timeout_s: float = 90) -> tuple[int, str, str]:
    async with asyncio.timeout(timeout_s):
        return await service.result


def servers_env(broker: Mosquitto, influx: InfluxDB) -> dict[str, str]:
    """The environment that points a service at the test's broker and InfluxDB 1.x."""
    return {
        "MONITOR_MQTT_URL": broker.url,
        "MONITOR_INFLUX_URL": influx.url,
        "MONITOR_INFLUX_API": "v1",
        "MONITOR_INFLUX_BUCKET": "vitals",
    }


def read_metrics(port: int) -> dict[str, float] | None:
    """The /metrics page as name -> value, or None while nothing answers (blocking)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body: bytes = response.read()
    except (urllib.error.URLError, ConnectionError):
        return None
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def poll_metrics(
    port: int,
    service: Service,
    until: str,
    condition: Callable[[dict[str, float]], bool],
    timeout_s: float = 30,
) -> dict[str, float]:
    """Scrape until ``condition(metrics)`` holds (the metrics page has no other signal)."""
    async with asyncio.timeout(timeout_s):
        while not service.result.done():
            metrics = await asyncio.to_thread(read_metrics, port)
            if metrics is not None and condition(metrics):
                return metrics
            await asyncio.sleep(0.2)
    _, _, stderr = service.result.result()
    pytest.fail(f"the service ended before {until}: {stderr[-3000:]}")


def recorded_alarms(out: Path) -> list[AlarmEvent]:
    return [AlarmEvent.model_validate_json(line) for line in (out / "alarms.jsonl").open()]


def recorded_readings(out: Path) -> list[Reading]:
    return [Reading.model_validate_json(line) for line in (out / "readings.jsonl").open()]


def reading_key(reading: Reading) -> ReadingKey:
    return (reading.participant, reading.device, reading.received_at)


def influx_count(influx: InfluxDB, influxql: str) -> int:
    result = influx.query(influxql, database="vitals")
    series = result["results"][0].get("series")  # type: ignore[index]
    if not series:
        return 0
    return int(series[0]["values"][0][1])


# --- 1. the broker killed and restarted mid-session ------------------------------------------


class Dashboard:
    """A staff dashboard with a persistent session (fixed client id, clean_session False, QoS 1)
    that reconnects on its own and counts what arrives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.alarm_sequences: set[int] = set()
        self.readings: set[ReadingKey] = set()
        self.online_at: list[float] = []  # loop time of each `online` status
        self.first_alarm = asyncio.Event()
        self.arrived = asyncio.Event()
        self.connections = 0
        self._subscribed = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier="fault-dashboard",
                protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=False,
                keepalive=5,
            )
            try:
                async with client:
                    self.connections += 1
                    if not self._subscribed:  # later connections resume the broker's session
                        for topic in ("alarms/#", "readings/#", "status/#"):
                            await client.subscribe(f"{BASE}/{topic}", qos=1)
                        self._subscribed = True
                    async for message in client.messages:
                        self._on(message.topic.value, bytes(message.payload), loop.time())
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)  # the broker is away: poll until it is back

    def _on(self, topic: str, payload: bytes, now: float) -> None:
        if topic.startswith(f"{BASE}/alarms/"):
            self.alarm_sequences.add(AlarmMessage.model_validate_json(payload).event.sequence)
            self.first_alarm.set()
        elif topic.startswith(f"{BASE}/readings/"):
            batch = VitalsBatch.model_validate_json(payload)
            self.readings |= {reading_key(r) for r in batch.readings}
        elif (
            topic.startswith(f"{BASE}/status/")
            and ServiceStatus.model_validate_json(payload).state is ServiceState.ONLINE
        ):
            self.online_at.append(now)
        self.arrived.set()

    async def wait_for(self, alarms: set[int], readings: set[ReadingKey], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while alarms - self.alarm_sequences or readings - self.readings:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_broker_killed_mid_session_loses_nothing_and_the_service_comes_back(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    port = free_port()
    loop = asyncio.get_running_loop()
    broker = Mosquitto(tmp_path / "broker")
    await asyncio.to_thread(broker.start)
    dashboard = Dashboard(broker.port)
    watching = asyncio.create_task(dashboard.run())
    try:
        service = await start_service(
            *RUN,
            *("--duration", "40", "--record", str(out)),
            *("--store", str(tmp_path / "store.sqlite"), "--http", f"127.0.0.1:{port}"),
            env={"MONITOR_MQTT_URL": broker.url, "MONITOR_INFLUX_URL": ""},
        )
        async with asyncio.timeout(35):
            await dashboard.first_alarm.wait()
        await asyncio.to_thread(broker.stop, kill=True)
        killed_at = loop.time()
        # The outage lasts until the service has noticed it and queued messages for later.
        await poll_metrics(
            port,
            service,
            "the outbox filled",
            lambda m: m["monitor_mqtt_connected"] == 0 and m["monitor_mqtt_outbox"] > 20,
        )
        await asyncio.to_thread(broker.start)
        restarted_at = loop.time()
        status, _, stderr = await finished(service)
        assert status == 0, stderr[-3000:]

        alarms = recorded_alarms(out)
        readings = recorded_readings(out)
        assert alarms, "no alarm was raised"
        assert len(readings) > 0
        # QoS 1 end to end and the outbox: duplicates allowed, gaps not; the last messages
        # may still be on their way from the broker when the service has exited.
        wanted_alarms = {a.sequence for a in alarms}
        wanted_readings = {reading_key(r) for r in readings}
        try:
            await dashboard.wait_for(wanted_alarms, wanted_readings, timeout_s=15)
        except TimeoutError:
            missing_alarms = sorted(wanted_alarms - dashboard.alarm_sequences)
            missing = sorted(wanted_readings - dashboard.readings, key=lambda k: k[2])
            pytest.fail(
                f"lost over the broker crash: alarm events {missing_alarms}, "
                f"{len(missing)} of {len(wanted_readings)} readings (first {missing[:3]})"
            )
        assert dashboard.connections >= 2, "the dashboard never saw the broker go away"
        back = [t for t in dashboard.online_at if t > killed_at]
        assert back, "the service never said online again after the broker restarted"
        assert back[0] - restarted_at <= 5.0, f"online {back[0] - restarted_at:.1f} s after"
    finally:
        watching.cancel()
        await asyncio.to_thread(broker.stop)


# --- 2. InfluxDB stopped for a while ----------------------------------------------------------


def demo_site_with(tmp_path: Path, text: str) -> Path:
    """The demo site with ``text`` appended (its profiles still found in config/protocols)."""
    site = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    protocols = ROOT / "config" / "protocols"
    site = site.replace('protocols_dir = "protocols"', f"protocols_dir = '{protocols}'")
    path = tmp_path / "site.toml"
    path.write_text(f"{site}\n{text}", encoding="utf-8")
    return path


HIGH_WATER = 150


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_influxdb_away_for_a_while_every_point_lands_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    port = free_port()
    site = demo_site_with(tmp_path, f"[storage]\nhigh_water_points = {HIGH_WATER}\n")
    with Mosquitto(tmp_path / "broker") as broker, InfluxDB(tmp_path / "influx") as influx:
        influx.query("CREATE DATABASE vitals")
        service = await start_service(
            *RUN,
            *("--duration", "40", "--record", str(out)),
            *("--store", str(tmp_path / "store.sqlite"), "--http", f"127.0.0.1:{port}"),
            env=servers_env(broker, influx),
            config=site,
        )
        written = "monitor_influx_points_written_total"
        # Part of the session with InfluxDB up, as in the issue: a few hundred points written.
        await poll_metrics(port, service, "writing to InfluxDB", lambda m: m.get(written, 0) > 300)
        await asyncio.to_thread(influx.stop)
        away = await poll_metrics(
            port, service, "InfluxDB stopped", lambda m: m["monitor_spool_depth"] > 0
        )
        # Over the mark for its hold (120 s of session time), the backlog alarm is raised.
        grown = await poll_metrics(
            port,
            service,
            "the spool over its high-water mark",
            lambda m: (
                m["monitor_spool_depth"] >= away["monitor_spool_depth"] + 200
                and m["monitor_spool_over_high_water"] == 1
            ),
        )
        await asyncio.to_thread(influx.start)
        await poll_metrics(
            port, service, "the spool drained", lambda m: m["monitor_spool_over_high_water"] == 0
        )
        status, _, stderr = await finished(service)
        assert status == 0, stderr[-3000:]

        readings = recorded_readings(out)
        alarms = recorded_alarms(out)
        assert grown[written] < len(readings) + len(alarms)
        assert any(alarm.rule != "storage-backlog" for alarm in alarms), "no vital-sign alarm"
        # The outage itself raised a technical alarm for every participant, cleared after it.
        backlog = [(a.participant, a.state) for a in alarms if a.rule == "storage-backlog"]
        assert backlog == [
            ("P-001", AlarmState.ACTIVE),
            ("P-002", AlarmState.ACTIVE),
            ("P-001", AlarmState.RESOLVED),
            ("P-002", AlarmState.RESOLVED),
        ]
        raised = next(a for a in alarms if a.rule == "storage-backlog")
        assert (raised.category, raised.priority, raised.threshold) == (
            AlarmCategory.TECHNICAL,
            AlarmPriority.LOW,
            HIGH_WATER,
        )
        # One point per record (InfluxDB would overwrite a point sent twice, never add one).
        assert influx_count(influx, "SELECT COUNT(usable) FROM vitals") == len(readings)
        assert influx_count(influx, "SELECT COUNT(sequence) FROM alarm_events") == len(alarms)


# --- 3. the service killed with SIGKILL and restarted -----------------------------------------


async def first_acknowledged_alarm(staff: aiomqtt.Client) -> AlarmEvent:
    """Acknowledge the first physiological alarm announced; return its acknowledged event."""
    acknowledged: str | None = None
    async for message in staff.messages:
        event = AlarmMessage.model_validate_json(bytes(message.payload)).event
        if acknowledged is None and event.state is AlarmState.ACTIVE:
            if event.category is AlarmCategory.PHYSIOLOGICAL:
                acknowledged = str(event.alarm_id)
                command = _command(alarm_id=acknowledged)
                await staff.publish(
                    f"{BASE}/commands/{SESSION}/acknowledge/local", json.dumps(command)
                )
        elif str(event.alarm_id) == acknowledged and event.state is AlarmState.ACKNOWLEDGED:
            return event
    raise AssertionError("the alarm stream ended")


async def next_live_snapshot(staff: aiomqtt.Client) -> ActiveAlarms:
    """The first snapshot published after subscribing (not the retained one of a past run)."""
    async for message in staff.messages:
        if not message.retain:
            return ActiveAlarms.model_validate_json(bytes(message.payload))
    raise AssertionError("the snapshot stream ended")


@pytest.mark.asyncio
@pytest.mark.timeout(150)
async def test_sigkill_then_restart_restores_alarms_and_acknowledgements_and_replays_the_spool(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store.sqlite"
    out = tmp_path / "second-run"
    with Mosquitto(tmp_path / "broker") as broker, InfluxDB(tmp_path / "influx") as influx:
        influx.query("CREATE DATABASE vitals")
        influx_env = {"MONITOR_INFLUX_API": "v1", "MONITOR_INFLUX_BUCKET": "vitals"}
        nobody = f"http://127.0.0.1:{free_port()}"  # the first run's InfluxDB never answers
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="staff") as staff:
            await staff.subscribe(f"{BASE}/alarms/#", qos=1)
            first = await start_service(
                *RUN,
                *("--duration", "120", "--store", str(store)),
                env={"MONITOR_MQTT_URL": broker.url, "MONITOR_INFLUX_URL": nobody, **influx_env},
            )
            async with asyncio.timeout(60):
                acknowledged = await first_acknowledged_alarm(staff)
            first.process.kill()
            status, _, _ = await finished(first)
        assert status == -signal.SIGKILL
        spooled = list(export_points(store, states=[PointState.PENDING]))
        spooled_readings = sum(p.key.measurement == "vitals" for p in spooled)
        spooled_alarms = sum(p.key.measurement == "alarm_events" for p in spooled)
        assert spooled_readings > 0
        assert spooled_alarms > 0

        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="late-staff") as staff:
            await staff.subscribe(f"{BASE}/active-alarms/{SESSION}", qos=1)
            second = await start_service(
                *("--simulate", "mdma-hyperthermia", "--speed", "60", "--start", "14600"),
                *("--duration", "15", "--store", str(store), "--record", str(out)),
                env={
                    "MONITOR_MQTT_URL": broker.url,
                    "MONITOR_INFLUX_URL": influx.url,
                    **influx_env,
                },
            )
            async with asyncio.timeout(60):
                snapshot = await next_live_snapshot(staff)
            status, _, stderr = await finished(second)
        assert status == 0, stderr[-3000:]
        assert "restored" in stderr

        # The restarted service knew the alarm and who acknowledged it before any new reading.
        restored = {event.alarm_id: event for event in snapshot.alarms}
        assert acknowledged.alarm_id in restored, snapshot
        again = restored[acknowledged.alarm_id]
        assert (again.state, again.acknowledged_by) == (AlarmState.ACKNOWLEDGED, "nurse-07")
        assert snapshot.sequence >= acknowledged.sequence
        # Numbering continues: the second run's events follow the first run's.
        second_alarms = recorded_alarms(out)
        assert all(event.sequence > acknowledged.sequence for event in second_alarms)
        # Acknowledged stays acknowledged: the alarm may only sound again if it got worse (the
        # scenario runs on while the service is away, so the participant may have).
        assert all(
            event.priority.rank > acknowledged.priority.rank
            for event in second_alarms
            if event.alarm_id == acknowledged.alarm_id and event.state is AlarmState.ACTIVE
        ), "the acknowledged alarm sounded again at the priority staff had acknowledged"
        # The spool replayed: every point of both runs in InfluxDB, each once.
        second_readings = len(recorded_readings(out))
        assert influx_count(influx, "SELECT COUNT(usable) FROM vitals") == (
            spooled_readings + second_readings
        )
        assert influx_count(influx, "SELECT COUNT(sequence) FROM alarm_events") == (
            spooled_alarms + len(second_alarms)
        )


# --- 4. garbage on the command topics ---------------------------------------------------------

GARBAGE = 10_000
GARBAGE_KINDS = (
    "invalid_json",
    "schema_version",
    "missing_staff",
    "unknown_alarm",
    "oversized",
    "wrong_kind",
)


def _command(**overrides: object) -> dict[str, object]:
    return {
        "schema_version": 1,
        "kind": "acknowledge",
        "command_id": str(uuid.uuid4()),
        "session": SESSION,
        "staff": "nurse-07",
        "issued_at": dt.datetime.now(dt.UTC).isoformat(),
        "alarm_id": str(uuid.uuid4()),
        **overrides,
    }


def garbage_kind(index: int) -> str:
    return GARBAGE_KINDS[index % len(GARBAGE_KINDS)]


def garbage(index: int) -> tuple[str, bytes]:
    """Message ``index`` of the flood: topic and payload, each kind in turn."""
    kind = garbage_kind(index)
    topic = f"{BASE}/commands/{SESSION}/acknowledge/local"
    if kind == "invalid_json":
        return topic, b'{"schema_version": 1, "kind": "acknowledge", '
    if kind == "schema_version":
        return topic, json.dumps(_command(schema_version=2)).encode()
    if kind == "missing_staff":
        body = _command()
        del body["staff"]
        return topic, json.dumps(body).encode()
    if kind == "unknown_alarm":
        return topic, json.dumps(_command()).encode()
    if kind == "oversized":
        return topic, json.dumps(_command(padding="x" * MAX_COMMAND_BYTES)).encode()
    pause = _command(kind="pause", participant="P-001", duration_s=60)
    del pause["alarm_id"]
    return topic, json.dumps(pause).encode()


@dataclasses.dataclass
class Flood:
    status: int
    stdout: str
    stderr: str
    replies: list[CommandReply]
    alarms: list[AlarmEvent]
    sent_s: float  # wall time the flood took to send
    last_metrics: dict[str, float]  # the last scrape before the service ended
    unknown_replies_then: int  # unknown_alarm replies received by that scrape


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flood]:
    """One run under the flood, shared by the tests below (it takes half a minute)."""
    tmp_path = tmp_path_factory.mktemp("flood")
    with Mosquitto(tmp_path / "broker") as broker:
        yield asyncio.run(_run_flood(tmp_path, broker))


async def _run_flood(tmp_path: Path, broker: Mosquitto) -> Flood:
    out = tmp_path / "run"
    port = free_port()
    replies: list[CommandReply] = []
    staff = aiomqtt.Client("127.0.0.1", broker.port, identifier="fault-flood")
    staff.pending_calls_threshold = 100  # 50 publishes in flight is the plan, not a leak
    async with staff:
        await staff.subscribe(f"{BASE}/replies/#", qos=1)

        async def listen() -> None:
            async for message in staff.messages:
                replies.append(CommandReply.model_validate_json(bytes(message.payload)))

        listening = asyncio.create_task(listen())
        service = await start_service(
            *RUN,
            *("--duration", "30", "--record", str(out)),
            *("--store", str(tmp_path / "store.sqlite"), "--http", f"127.0.0.1:{port}"),
            env={"MONITOR_MQTT_URL": broker.url, "MONITOR_INFLUX_URL": ""},
        )
        metrics = await poll_metrics(
            port, service, "connecting", lambda m: m["monitor_mqtt_connected"] == 1
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        for start in range(0, GARBAGE, 50):  # QoS 1, 50 in flight: the broker drops nothing
            await asyncio.gather(
                *(
                    staff.publish(*garbage(index), qos=1)
                    for index in range(start, min(start + 50, GARBAGE))
                )
            )
            await asyncio.sleep(0.02)  # spread the flood over the session, ~2000 a second
        sent_s = loop.time() - began
        unknown_then = 0
        while not service.result.done():  # the last page before the end (polled: no signal)
            unknown = sum(r.error is ErrorCode.UNKNOWN_ALARM for r in replies)
            scraped = await asyncio.to_thread(read_metrics, port)
            if scraped is not None:
                metrics, unknown_then = scraped, unknown
            await asyncio.sleep(0.2)
        status, stdout, stderr = await finished(service)
        listening.cancel()
    return Flood(
        status, stdout, stderr, replies, recorded_alarms(out), sent_s, metrics, unknown_then
    )


@pytest.mark.timeout(120)
def test_garbage_on_the_command_topics_changes_nothing(flood: Flood) -> None:
    """Runs to its --duration and exits 0; every reply is an error; no alarm changes state."""
    assert flood.status == 0, flood.stderr[-3000:]
    assert "storage: local store" in flood.stdout, flood.stdout  # the closing summary
    assert "commands: 0 carried out" in flood.stdout, flood.stdout
    assert flood.alarms, "no alarm was raised"
    assert not [a for a in flood.alarms if a.state is AlarmState.ACKNOWLEDGED]
    assert not [a for a in flood.alarms if a.acknowledged_by]
    assert flood.replies, "no error reply at all"
    assert not [r for r in flood.replies if r.ok]
    # a summary reply's error is its most common code; its reason counts every code
    codes = {
        code
        for code in ErrorCode
        if any(r.error is code or f"{code} " in (r.reason or "") for r in flood.replies)
    }
    assert codes >= {
        ErrorCode.INVALID_JSON,
        ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
        ErrorCode.MISSING_STAFF,
        ErrorCode.UNKNOWN_ALARM,
        ErrorCode.TOO_LARGE,
        ErrorCode.TOPIC_MISMATCH,
    }, codes
    unknown = sum(r.error is ErrorCode.UNKNOWN_ALARM for r in flood.replies)
    assert f"commands: 0 carried out, {unknown} refused" in flood.stdout


@pytest.mark.timeout(120)
def test_replies_to_garbage_are_coalesced_per_session_and_account_for_every_refusal(
    flood: Flood,
) -> None:
    """About one reply a second for the one session flooded, and their ``answers`` add up to
    every unparseable command sent (five kinds of six), less those the full intake dropped
    (counted, of every kind)."""
    unparsed = [r for r in flood.replies if not r.ok and r.error is not ErrorCode.UNKNOWN_ALARM]
    limit = 2 + (flood.sent_s + 30) / REFUSAL_REPLY_INTERVAL_S  # generous: the whole run
    assert len(unparsed) <= limit, (len(unparsed), limit)
    assert any(r.answers > 1 for r in unparsed), "no summary reply"
    sent = sum(garbage_kind(index) != "unknown_alarm" for index in range(GARBAGE))
    dropped = flood.last_metrics["monitor_command_dropped_total"]  # of every kind
    assert sent - dropped <= sum(r.answers for r in unparsed) <= sent


@pytest.mark.timeout(120)
def test_the_metrics_count_garbage_the_command_channel_refused(flood: Flood) -> None:
    # The flood is one topic in a fixed cycle of six, the unknown alarm id fourth: by the time
    # the service has refused n unknown alarm ids it has refused at least 6n - 2 messages, less
    # those a full intake dropped (counted apart, never answered).
    refused_at_least = 6 * flood.unknown_replies_then - 2
    assert flood.unknown_replies_then > 0
    counted = (
        flood.last_metrics["monitor_command_errors_total"]
        + flood.last_metrics["monitor_command_dropped_total"]
    )
    assert counted >= refused_at_least, (flood.last_metrics, refused_at_least)


@pytest.mark.timeout(120)
def test_a_refused_command_drops_no_alarm_event(flood: Flood) -> None:
    sequences = [a.sequence for a in flood.alarms]
    assert sequences == list(range(1, len(sequences) + 1)), sequences

"""The broker link against a real Mosquitto: outages, garbage, retained state and the last will."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import getpass
import json
import math
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.alerts.pipeline import DetectionPipeline
from monitor.alerts.rules import CompiledRule, LimitSpec, RuleSet
from monitor.config import MqttConfig, MqttTls, Secrets
from monitor.models import AlarmPriority, AlarmState, Parameter, Reading, ReadingKind, StaffMember
from monitor.mqtt.client import (
    REFUSAL_REPLY_INTERVAL_S,
    AlarmPublisher,
    CommandChannel,
    GatewayPublisher,
    Incoming,
    MqttLink,
    Subscription,
)
from monitor.mqtt.payloads import (
    AcknowledgeCommand,
    ActiveAlarms,
    CommandReply,
    EscalationMessage,
    EscalationReason,
    ServiceStatus,
    VitalsBatch,
    reply_for_error,
    reply_ok,
)
from monitor.mqtt.staff import StaffDirectory
from monitor.mqtt.topics import Topics
from monitor.mqtt.tracking import BatchNumbering, SequenceTracker
from tests.services import Mosquitto, free_port

pytestmark = [pytest.mark.network, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parent.parent
TOPICS = Topics(root="vitals", site="SITE-1")
SESSION = "S-1"
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
ACCOUNT = "local"  # an anonymous broker: the account level the staff list names
STAFF = StaffDirectory.of([StaffMember(id="RN-07", roles=("room-staff",), accounts=(ACCOUNT,))])


@contextlib.asynccontextmanager
async def broker(workdir: Path) -> AsyncIterator[Mosquitto]:
    """An anonymous broker; starting and stopping run in threads (they poll and wait)."""
    server = Mosquitto(
        workdir,
        extra_config=(
            f"user {getpass.getuser()}\n"  # as root, stay root: the temp folder is root's
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "max_queued_messages 20000\n"
        ),
    )
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def link(port: int, client_id: str, **options: object) -> MqttLink:
    return MqttLink(host="127.0.0.1", port=port, client_id=client_id, **options)  # type: ignore[arg-type]


async def next_message(subscription: Subscription, seconds: float = 10) -> Incoming:
    async with asyncio.timeout(seconds):
        return await anext(subscription)


@pytest.mark.timeout(60)
async def test_qos1_messages_survive_a_broker_kill_in_order(tmp_path: Path) -> None:
    total, kill_at, restart_at = 1500, 500, 1000
    participants = ("P-001", "P-002", "P-003")
    async with broker(tmp_path / "broker") as server:
        detector = link(server.port, "detector")
        received = detector.subscribe(TOPICS.readings_filter)
        gateway_link = link(server.port, "gateway-1", status_topic=TOPICS.status("gateway-1"))
        gateway = GatewayPublisher(gateway_link, TOPICS, BatchNumbering("gateway-1"))
        tracker = SequenceTracker()
        order: list[int] = []  # batch n carries a reading received n ms after T0
        complete = asyncio.Event()

        async def count() -> None:
            async for message in received:
                batch = VitalsBatch.model_validate_json(message.payload)
                if tracker.observe(batch):
                    order.append(
                        (batch.readings[0].received_at - T0) // dt.timedelta(milliseconds=1)
                    )
                if len(order) == total:
                    complete.set()

        async with detector, gateway_link, asyncio.TaskGroup() as group:
            async with asyncio.timeout(10):
                await detector.wait_connected()
                await gateway_link.wait_connected()
                # the broker saves sessions every second: let it save the detector's
                await asyncio.to_thread(_wait_for_save, server.workdir / "data" / "mosquitto.db")
            counting = group.create_task(count())
            back_after: dict[str, float] = {}
            for n in range(total):
                reading = _heart_rate(0, 80.0, participants[n % 3], ms=n)
                gateway.readings([reading], sent_at=reading.received_at)
                if n == kill_at:
                    await asyncio.to_thread(server.stop, kill=True)
                    async with asyncio.timeout(10):
                        await gateway_link.wait_disconnected()
                if n == restart_at:
                    await asyncio.to_thread(server.start)
                    started = time.monotonic()
                    async with asyncio.timeout(5):
                        await gateway_link.wait_connected()
                        back_after["gateway"] = time.monotonic() - started
                        await detector.wait_connected()
                        back_after["detector"] = time.monotonic() - started
                await asyncio.sleep(0.002)  # a steady stream, not a burst
            async with asyncio.timeout(20):
                await complete.wait()
            counting.cancel()

    assert order == list(range(total)), "lost or out of order"
    assert (tracker.stats.lost, tracker.stats.late, tracker.stats.restarts) == (0, 0, 0)
    assert tracker.stats.duplicates <= gateway_link.stats.redelivered + 64  # at least once
    assert gateway_link.stats.reconnects == 1
    assert gateway_link.stats.published >= total
    assert gateway_link.stats.queued_max >= restart_at - kill_at - 1  # queued while away
    assert max(back_after.values()) < 5, back_after


def _wait_for_save(path: Path) -> None:
    """Until Mosquitto has written its database again (blocking: run it in a thread)."""

    def stamp() -> int | None:
        return path.stat().st_mtime_ns if path.exists() else None

    before = stamp()
    deadline = time.monotonic() + 10
    while stamp() in (None, before):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not saved")
        time.sleep(0.05)


def _garbage(rng: random.Random, index: int) -> tuple[str, bytes]:
    """One of many kinds of wrong command, on a command topic."""
    good: dict[str, object] = {
        "schema_version": 1,
        "kind": "pause",
        "command_id": f"g-{index}",
        "session": SESSION,
        "staff": "RN-07",
        "issued_at": "2025-03-01T09:00:00Z",
        "participant": "P-001",
    }
    topic = TOPICS.command(SESSION, "pause", ACCOUNT)
    match index % 10:
        case 0:
            return topic, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        case 1:
            return topic, json.dumps(good).encode()[: rng.randrange(1, 40)]
        case 2:
            return topic, json.dumps([good]).encode()
        case 3:
            return topic, json.dumps(good | {"schema_version": 2}).encode()
        case 4:
            return topic, json.dumps({k: v for k, v in good.items() if k != "staff"}).encode()
        case 5:
            return f"{TOPICS.base}/commands/{SESSION}/reboot/{ACCOUNT}", json.dumps(good).encode()
        case 6:
            return f"{TOPICS.base}/commands/_bad/pause/{ACCOUNT}", json.dumps(good).encode()
        case 7:
            return topic, json.dumps(good | {"duration_s": 86400}).encode()
        case 8:
            return topic, b"x" * 20_000
        case _:
            return topic, json.dumps(good | {"kind": "acknowledge"}).encode()


@pytest.mark.timeout(60)
async def test_ten_thousand_garbage_commands_do_not_stop_the_channel(tmp_path: Path) -> None:
    rng = random.Random(8)
    async with broker(tmp_path / "broker") as server:
        sender = link(server.port, "dashboard-flood", outbox_capacity=20_000)
        watcher = link(server.port, "dashboard-watch")
        replies = watcher.subscribe(TOPICS.replies_filter)
        detector = link(server.port, "detector", status_topic=TOPICS.status("detector"))
        channel = CommandChannel(detector, TOPICS, STAFF)
        valid = {
            "schema_version": 1,
            "kind": "acknowledge",
            "command_id": "final",
            "session": SESSION,
            "staff": "RN-07",
            "issued_at": "2025-03-01T09:00:00Z",
            "alarm_id": "5a0c35c4-2f7e-5d43-9a55-0d6a7c1f3b21",
        }
        ack_topic = TOPICS.command(SESSION, "acknowledge", ACCOUNT)
        carried_out: list[AcknowledgeCommand] = []

        async def serve() -> None:
            async for command in channel:
                assert isinstance(command, AcknowledgeCommand)
                carried_out.append(command)
                channel.reply(reply_ok(command))

        async with sender, watcher:
            async with asyncio.timeout(10):
                await sender.wait_connected()
                await watcher.wait_connected()
                # a retained command waits on the broker; the detector gets it when it subscribes
                kept = valid | {"command_id": "kept"}
                sender.publish(ack_topic, json.dumps(kept).encode(), retain=True)
                await sender.drain()
            async with detector, asyncio.TaskGroup() as group:
                serving = group.create_task(serve())
                async with asyncio.timeout(10):
                    await detector.wait_connected()
                began = asyncio.get_running_loop().time()
                for index in range(10_000):
                    sender.publish(*_garbage(rng, index))
                sender.publish(ack_topic, json.dumps(valid).encode())
                sender.publish(ack_topic, json.dumps(valid).encode())  # a redelivery

                answers: list[CommandReply] = []

                def answered() -> bool:
                    refused = sum(answer.answers for answer in answers if not answer.ok)
                    return sum(a.command_id == "final" for a in answers) == 2 and refused == 10_001

                async with asyncio.timeout(30):
                    async for message in replies:
                        answers.append(CommandReply.model_validate_json(message.payload))
                        if answered():
                            break
                took_s = asyncio.get_running_loop().time() - began
                assert not serving.done()
                assert detector.is_connected
                serving.cancel()

    stats = channel.stats
    assert stats.received == 10_003
    assert sum(stats.errors.values()) == 10_001
    assert stats.errors["retained"] == 1
    assert set(stats.errors) == {
        "invalid_json",
        "invalid_command",
        "unsupported_schema_version",
        "missing_staff",
        "unknown_kind",
        "invalid_topic",
        "too_large",
        "topic_mismatch",
        "retained",
    }
    # per reply topic, a reply at once, then at most one summary an interval (coalesced),
    # however long a loaded machine takes to get through the flood
    errors = [answer for answer in answers if not answer.ok]
    per_topic = collections.Counter(error.session for error in errors)
    assert max(per_topic.values()) <= 2 + math.ceil(took_s / REFUSAL_REPLY_INTERVAL_S), per_topic
    assert stats.refusals_coalesced > 9_900
    assert channel.dropped == 0
    assert (stats.commands, stats.duplicates) == (1, 1)
    assert [command.command_id for command in carried_out] == ["final"]
    assert len(errors) == stats.error_replies
    assert sum(error.answers for error in errors) == 10_001
    assert errors[0].error == "retained"
    assert [answer.ok for answer in answers if answer.command_id == "final"] == [True, True]


@pytest.mark.timeout(60)
async def test_valid_commands_keep_their_order_in_a_flood_and_the_bound_drops_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Staff commands among junk come out in the order sent; what a full intake has to drop is
    counted and logged, never lost silently."""
    topic = TOPICS.command(SESSION, "acknowledge", ACCOUNT)

    def flood(sender: MqttLink) -> list[str]:
        """2,000 commands, every 100th a valid one; returns those, in the order sent."""
        valid = []
        for index in range(2_000):
            if index % 100 == 99:
                valid.append(f"staff-{index}")
                sender.publish(topic, json.dumps(_ack(valid[-1])).encode())
            else:
                sender.publish(topic, b'{"kind": ')
        return valid

    async with broker(tmp_path / "broker") as server:
        sender = link(server.port, "dashboard-flood", outbox_capacity=20_000)
        taking = link(server.port, "detector-commands")
        channel = CommandChannel(taking, TOPICS, STAFF)
        async with sender:
            async with taking:
                async with asyncio.timeout(10):
                    await sender.wait_connected()
                    await taking.wait_connected()
                sent = flood(sender)
                taken: list[str] = []
                async with asyncio.timeout(20):
                    async for command in channel:
                        taken.append(command.command_id)
                        if len(taken) == len(sent):
                            break
            assert taken == sent
            assert (channel.dropped, channel.stats.errors) == (0, {"invalid_json": 1_980})

            stalled = link(server.port, "stalled-commands")
            full = CommandChannel(stalled, TOPICS, STAFF, capacity=100)
            async with stalled:
                async with asyncio.timeout(10):
                    await stalled.wait_connected()
                flood(sender)  # nobody takes commands: the intake fills up
                async with asyncio.timeout(20):
                    await sender.drain()
                    while full.backlog + full.dropped < 2_000:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)  # counted as the link routes: no event
    assert (full.backlog, full.dropped) == (100, 1_900)
    assert "subscription vitals/SITE-1/commands/+/+/+ is full" in caplog.text


@pytest.mark.timeout(60)
async def test_a_flood_on_one_session_does_not_take_the_turn_of_another(tmp_path: Path) -> None:
    async with broker(tmp_path / "broker") as server:
        sender = link(server.port, "dashboard-flood", outbox_capacity=20_000)
        detector = link(server.port, "detector-commands")
        channel = CommandChannel(detector, TOPICS, STAFF, capacity=2_000, session_capacity=50)
        async with sender, detector:
            async with asyncio.timeout(10):
                await sender.wait_connected()
                await detector.wait_connected()
            for _ in range(1_000):
                sender.publish(TOPICS.command(SESSION, "acknowledge", ACCOUNT), b'{"kind": ')
            other = _ack("other-session") | {"session": "S-2"}
            sender.publish(
                TOPICS.command("S-2", "acknowledge", ACCOUNT), json.dumps(other).encode()
            )
            async with asyncio.timeout(20):
                await sender.drain()
                while channel.backlog < 1_001:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # counted as the link routes: no event
                first = await anext(aiter(channel))
    assert (first.session, first.command_id) == ("S-2", "other-session")
    assert channel.stats.received == 2  # one of S-1's junk, then S-2's turn
    assert channel.dropped == 950  # S-1 beyond its 50


@pytest.mark.timeout(60)
async def test_a_retired_filter_left_in_a_persistent_session_is_unsubscribed(
    tmp_path: Path,
) -> None:
    """The detector's session from before the command intake had its own connection still
    subscribes to commands: the broker would go on queueing a flood there."""
    async with broker(tmp_path / "broker") as server:
        older = link(server.port, "detector")
        older.subscribe(TOPICS.commands_filter)
        async with older:
            async with asyncio.timeout(10):
                await older.wait_connected()
        detector = link(server.port, "detector", retired_filters=(TOPICS.commands_filter,))
        status = detector.subscribe(TOPICS.status_filter)
        sender = link(server.port, "dashboard")
        async with detector, sender:
            async with asyncio.timeout(10):
                await detector.wait_connected()
            sender.publish(TOPICS.command(SESSION, "acknowledge", ACCOUNT), b"{}")
            sender.publish(TOPICS.status("other"), b"{}", retain=True)
            await next_message(status)  # sent after the command: the command would be here
        assert detector.stats.session_present
        assert (detector.stats.received, detector.stats.unrouted) == (1, 0)


def _ack(command_id: str) -> dict[str, object]:
    return {
        "schema_version": 1,
        "kind": "acknowledge",
        "command_id": command_id,
        "session": SESSION,
        "staff": "RN-07",
        "issued_at": "2025-03-01T09:00:00Z",
        "alarm_id": "5a0c35c4-2f7e-5d43-9a55-0d6a7c1f3b21",
    }


def _rule_set() -> RuleSet:
    rule = CompiledRule(
        id="hr-high",
        spec=LimitSpec(Parameter.HEART_RATE, high=True, threshold=131.0, inclusive=True),
        priority=AlarmPriority.HIGH,
    )
    return RuleSet.build({"P-001": [rule]})


def _heart_rate(seconds: int, bpm: float, participant: str = "P-001", *, ms: int = 0) -> Reading:
    return Reading(
        session=SESSION,
        participant=participant,
        device=f"hr-{participant}",
        kind=ReadingKind.HEART_RATE,
        values={Parameter.HEART_RATE: bpm},
        received_at=T0 + dt.timedelta(seconds=seconds, milliseconds=ms),
    )


@pytest.mark.timeout(60)
async def test_a_late_dashboard_sees_the_current_snapshot_at_once(tmp_path: Path) -> None:
    pipeline = DetectionPipeline(_rule_set(), session=SESSION, origin=T0)
    async with broker(tmp_path / "broker") as server:
        detector = link(server.port, "detector", status_topic=TOPICS.status("detector"))
        medical = link(server.port, "medical-monitor")
        escalations = medical.subscribe(TOPICS.escalations_filter)
        async with detector, medical:
            async with asyncio.timeout(10):
                await medical.wait_connected()
            publisher = AlarmPublisher(detector, TOPICS)
            publisher.snapshot(SESSION, pipeline.active(), T0)  # at start-up: nothing active
            events = pipeline.feed(_heart_rate(s, 140.0) for s in range(1, 4))
            events += pipeline.advance(T0 + dt.timedelta(seconds=4))
            assert [event.state for event in events] == [AlarmState.ACTIVE]
            publisher.publish(SESSION, events, pipeline.active(), T0 + dt.timedelta(seconds=4))
            async with asyncio.timeout(10):
                await detector.drain()

            late = await _snapshot_of_late_subscriber(server.port, "dashboard-late-1")
            assert [alarm.alarm_id for alarm in late.alarms] == [events[0].alarm_id]
            assert late.sequence == events[0].sequence

            # the condition clears: a high alarm latches until staff acknowledge it
            events = pipeline.feed(_heart_rate(s, 80.0) for s in range(5, 8))
            moment = T0 + dt.timedelta(seconds=8)
            events += pipeline.advance(moment)
            events += pipeline.acknowledge(str(late.alarms[0].alarm_id), "RN-07", moment)
            assert events[-1].state is AlarmState.RESOLVED
            publisher.publish(SESSION, events, pipeline.active(), moment)
            async with asyncio.timeout(10):
                await detector.drain()

            cleared = await _snapshot_of_late_subscriber(server.port, "dashboard-late-2")
            assert cleared.alarms == ()
            assert cleared.sequence == events[-1].sequence

            paged = [
                EscalationMessage.model_validate_json((await next_message(escalations)).payload)
                for _ in range(1 + len(events))
            ]
            # the latched alarm is still active and high; its resolution is the update
            assert [message.reason for message in paged] == [
                EscalationReason.HIGH_PRIORITY,
                EscalationReason.HIGH_PRIORITY,
                EscalationReason.UPDATE,
            ]
            assert paged[1].event.condition_cleared
            reply = reply_for_error(
                AcknowledgeCommand.model_validate(
                    {
                        "schema_version": 1,
                        "kind": "acknowledge",
                        "command_id": "c-1",
                        "session": SESSION,
                        "staff": "RN-07",
                        "issued_at": moment,
                        "alarm_id": events[-1].alarm_id,
                    }
                ),
                _lifecycle_error(pipeline, str(events[-1].alarm_id), moment),
            )
            assert reply.error == "alarm_resolved"


def _lifecycle_error(pipeline: DetectionPipeline, alarm_id: str, moment: dt.datetime) -> Exception:
    try:
        pipeline.acknowledge(alarm_id, "RN-07", moment)
    except Exception as error:
        return error
    raise AssertionError("acknowledging a resolved alarm should fail")


async def _snapshot_of_late_subscriber(port: int, client_id: str) -> ActiveAlarms:
    late = link(port, client_id)
    snapshots = late.subscribe(TOPICS.active_alarms_filter)
    async with late:
        message = await next_message(snapshots, 5)
    assert message.retain
    return ActiveAlarms.model_validate_json(message.payload)


_DOOMED = """
import asyncio, sys
from monitor.mqtt.client import MqttLink

async def main() -> None:
    link = MqttLink(host="127.0.0.1", port=int(sys.argv[1]), client_id="doomed",
                    status_topic=sys.argv[2], service="detector")
    async with link:
        await link.wait_connected()
        print("online", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.timeout(60)
async def test_the_last_will_says_offline_when_the_service_is_killed(tmp_path: Path) -> None:
    status_topic = TOPICS.status("detector")
    async with broker(tmp_path / "broker") as server:
        dashboard = link(server.port, "dashboard")
        statuses = dashboard.subscribe(TOPICS.status_filter)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _DOOMED,
            str(server.port),
            status_topic,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(20):
                assert await child.stdout.readline() == b"online\n"
            async with dashboard:
                online = ServiceStatus.model_validate_json((await next_message(statuses)).payload)
                assert (online.state, online.reason) == ("online", "connected")
                child.send_signal(signal.SIGKILL)
                await child.wait()
                will = ServiceStatus.model_validate_json((await next_message(statuses)).payload)
                assert (will.state, will.reason, will.client_id) == (
                    "offline",
                    "connection_lost",
                    "doomed",
                )
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()


@pytest.mark.timeout(60)
async def test_a_clean_stop_says_offline_itself(tmp_path: Path) -> None:
    async with broker(tmp_path / "broker") as server:
        async with link(server.port, "detector", status_topic=TOPICS.status("detector")) as gone:
            async with asyncio.timeout(10):
                await gone.wait_connected()
        late = link(server.port, "dashboard")
        statuses = late.subscribe(TOPICS.status_filter)
        async with late:
            status = ServiceStatus.model_validate_json((await next_message(statuses)).payload)
        assert (status.state, status.reason) == ("offline", "shutdown")


class _Relay:
    """A TCP relay to the broker that can go deaf: while ``deaf``, nothing from the broker
    reaches the client (no acknowledgement, no ping response), as on a half-dead network path,
    and the client must give up on the connection itself."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.deaf = False
        self.port = free_port()

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        with contextlib.suppress(ConnectionError):
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(reader, up_writer, from_broker=False))
                group.create_task(self._pipe(up_reader, writer, from_broker=True))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_broker: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not (from_broker and self.deaf):
                    writer.write(data)
                    await writer.drain()
        writer.close()  # a plain close: the broker sees whatever the client sent, no more


@pytest.mark.timeout(60)
async def test_a_connection_the_link_gives_up_on_leaves_the_status_offline(
    tmp_path: Path,
) -> None:
    """A link whose acknowledgement times out ends the connection itself; the broker must then
    publish its last will, not treat it as a clean stop and keep showing ``online``."""
    async with broker(tmp_path / "broker") as server, _Relay(server.port) as relay:
        dashboard = link(server.port, "dashboard")
        statuses = dashboard.subscribe(TOPICS.status_filter)
        detector = link(
            relay.port, "detector", status_topic=TOPICS.status("detector"), ack_timeout_s=1.0
        )
        async with dashboard, detector:
            async with asyncio.timeout(10):
                await detector.wait_connected()
            first = ServiceStatus.model_validate_json((await next_message(statuses)).payload)
            assert first.state == "online"
            relay.deaf = True
            detector.publish(TOPICS.alarms(SESSION, "P-001"), b"{}")
            async with asyncio.timeout(10):
                await detector.wait_disconnected()
            relay.deaf = False
            after = ServiceStatus.model_validate_json((await next_message(statuses)).payload)
            assert (after.state, after.reason) == ("offline", "connection_lost")
            again = ServiceStatus.model_validate_json((await next_message(statuses)).payload)
            assert again.state == "online"  # and back once it has reconnected


async def _v311_only(upstream: int) -> tuple[asyncio.Server, int]:
    """A stand-in for a broker that speaks only MQTT 3.1.1: it refuses a version 5 CONNECT the
    way such a broker does (CONNACK, return code 1) and passes everything else to Mosquitto.
    Mosquitto itself cannot be told to refuse version 5."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await relay(reader, writer)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(1)
        length, shift, raw = 0, 0, b""
        while True:
            byte = await reader.readexactly(1)
            raw += byte
            length |= (byte[0] & 0x7F) << shift
            shift += 7
            if not byte[0] & 0x80:
                break
        body = await reader.readexactly(length)
        if body[6] == 5:  # protocol level after the protocol name "MQTT"
            writer.write(b"\x20\x02\x00\x01")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        up_writer.write(header + raw + body)
        async with asyncio.TaskGroup() as group:
            group.create_task(pipe(reader, up_writer))
            group.create_task(pipe(up_reader, writer))

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, port


@pytest.mark.timeout(60)
async def test_a_broker_without_mqtt5_gets_311(tmp_path: Path) -> None:
    async with broker(tmp_path / "broker") as server:
        proxy, port = await _v311_only(server.port)
        async with proxy:
            old = link(port, "old-broker-client")
            echo = old.subscribe("echo/#")
            async with old:
                async with asyncio.timeout(10):
                    await old.wait_connected()
                old.publish("echo/1", b'{"hello": 1}')
                message = await next_message(echo)
            assert message.payload == b'{"hello": 1}'
            assert old.stats.protocol == "3.1.1"
            assert old.stats.connect_failures == 1


def certificates(folder: Path) -> dict[str, Path]:
    """A throwaway CA, a broker certificate for 127.0.0.1 and a client certificate (blocking)."""
    folder.mkdir()
    names = {name: folder / f"{name}.pem" for name in ("ca", "broker", "client")}
    keys = {name: folder / f"{name}-key.pem" for name in names}
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)

    openssl("req", "-x509", *ec, "-keyout", keys["ca"], "-out", names["ca"], "-subj", "/CN=ca")
    for name in ("broker", "client"):
        csr = folder / f"{name}.csr"
        openssl("req", *ec, "-keyout", keys[name], "-out", csr, "-subj", f"/CN={name}")
        extra: list[str | Path] = ["-extfile", ext] if name == "broker" else []
        signing = ["-CA", names["ca"], "-CAkey", keys["ca"], "-CAcreateserial", *extra]
        openssl("x509", "-req", "-in", csr, *signing, "-out", names[name], "-days", "1")
    return {**names, **{f"{name}-key": path for name, path in keys.items()}}


def tls_broker(workdir: Path, files: dict[str, Path], extra_config: str = "") -> Mosquitto:
    """Mosquitto whose only listener speaks TLS with the broker certificate of ``files``."""
    return Mosquitto(
        workdir,
        extra_config=(
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            f"certfile {files['broker']}\n"
            f"keyfile {files['broker-key']}\n"
            f"{extra_config}"
        ),
    )


@pytest.mark.timeout(60)
async def test_mutual_tls_from_the_site_config(tmp_path: Path) -> None:
    files = await asyncio.to_thread(certificates, tmp_path / "certs")
    server = tls_broker(
        tmp_path / "broker",
        files,
        f"cafile {files['ca']}\nrequire_certificate true\ntls_version tlsv1.2\n",
    )
    await asyncio.to_thread(server.start)
    try:
        config = MqttConfig(
            url=f"mqtts://127.0.0.1:{server.port}",
            tls=MqttTls(
                ca_file=files["ca"], cert_file=files["client"], key_file=files["client-key"]
            ),
        )
        secure = MqttLink.from_settings(
            config.settings(Secrets()), topics=TOPICS, service="detector"
        )
        echo = secure.subscribe("echo/#")
        async with secure:
            async with asyncio.timeout(10):
                await secure.wait_connected()
            secure.publish("echo/tls", b'{"over": "tls"}')
            assert (await next_message(echo)).payload == b'{"over": "tls"}'
    finally:
        await asyncio.to_thread(server.stop)

"""The example broker config: its ACL matches the contract, and a real Mosquitto enforces it."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest
from pydantic import SecretStr

from monitor.config import MqttConfig, Secrets
from monitor.models import StaffMember, StaffRole
from monitor.mqtt.client import CommandChannel, Incoming, MqttLink, Subscription
from monitor.mqtt.contract import TOPICS, Role
from monitor.mqtt.payloads import CommandReply, ErrorCode, reply_ok
from monitor.mqtt.staff import StaffDirectory
from monitor.mqtt.topics import Topics
from tests.services import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "mosquitto"
TOPICS_ = Topics(root="vitals", site="SITE-1")
PASSWORDS = {role: f"example-{role.value}-password" for role in Role}
# the harness sets these itself; the rest of the example config is used as written
_HARNESS_OWNS = ("listener", "persistence", "persistence_location", "autosave_interval")


def _grant(words: list[str]) -> tuple[str, str]:
    return (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])


def read_acl(path: Path) -> tuple[dict[str, set[tuple[str, str]]], set[tuple[str, str]]]:
    """(user -> {(access, topic pattern)}, {(access, pattern line for every user)})."""
    grants: dict[str, set[tuple[str, str]]] = {}
    patterns: set[tuple[str, str]] = set()
    user: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            grants.setdefault(user, set())
        elif words[0] == "topic":
            assert user is not None, "topic line before any user line (would apply to anyone)"
            grants[user].add(_grant(words))
        elif words[0] == "pattern":
            assert user is None, "pattern lines first: they apply to every user wherever they are"
            patterns.add(_grant(words))
        else:
            pytest.fail(f"unexpected ACL line: {line!r}")
    return grants, patterns


def test_the_acl_grants_each_role_exactly_the_contract() -> None:
    grants, patterns = read_acl(EXAMPLE / "acl")
    assert set(grants) == {role.value for role in Role}
    # the levels between the first and the account are any session and kind
    assert patterns == {
        ("write", f"vitals/+/{spec.level}{'/+' * (spec.pattern.count('/') - 1)}/%u")
        for spec in TOPICS
        if spec.own_level
    }
    for role in Role:
        expected: set[tuple[str, str]] = set()
        for spec in TOPICS:
            write = role in spec.publishers and not spec.own_level
            read = role in spec.readers
            if write or read:
                access = "readwrite" if write and read else "write" if write else "read"
                expected.add((access, f"vitals/+/{spec.level}/#"))
        assert grants[role.value] == expected, role


def test_the_example_password_file_has_one_user_per_role() -> None:
    users = [line.split(":", 1)[0] for line in (EXAMPLE / "passwd").read_text().splitlines()]
    assert sorted(users) == sorted(role.value for role in Role)
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    for role, password in PASSWORDS.items():
        assert f"| `{role.value}` | `{password}` |" in readme


def test_the_example_config_has_no_commented_out_settings() -> None:
    for line in (EXAMPLE / "mosquitto.conf").read_text().splitlines():
        if line.startswith("#"):
            assert not re.match(r"#\s*[a-z_]+\s+\S+$", line), f"commented-out setting: {line}"


def example_broker(workdir: Path) -> Mosquitto:
    """Mosquitto on a free port with the example config, password file and ACL (copied)."""
    workdir.mkdir(parents=True)
    for name in ("acl", "passwd"):
        shutil.copy(EXAMPLE / name, workdir / name)
    lines = [f"user {getpass.getuser()}"]  # as root, stay root: the temp folder is root's
    for line in (EXAMPLE / "mosquitto.conf").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#") or words[0] in _HARNESS_OWNS:
            continue
        if words[0] in ("password_file", "acl_file"):
            lines.append(f"{words[0]} {workdir / Path(words[1]).name}")
        else:
            lines.append(line)
    return Mosquitto(workdir / "broker", extra_config="\n".join(lines) + "\n")


def link(broker: Mosquitto, role: Role, client_id: str, **options: object) -> MqttLink:
    return MqttLink(
        host="127.0.0.1",
        port=broker.port,
        client_id=client_id,
        username=role.value,
        password=SecretStr(PASSWORDS[role]),
        **options,  # type: ignore[arg-type]
    )


async def collect(
    subscription: Subscription, done: Callable[[list[Incoming]], bool]
) -> list[Incoming]:
    """Messages until ``done`` says the ones so far are enough."""
    seen: list[Incoming] = []
    async with asyncio.timeout(10):
        async for message in subscription:
            seen.append(message)
            if done(seen):
                return seen
    raise AssertionError("unreachable")


async def collect_until(subscription: Subscription, done: str) -> list[Incoming]:
    """Messages until one on topic ``done``; the broker keeps a publisher's order."""
    return await collect(subscription, lambda seen: seen[-1].topic == done)


@pytest.mark.network
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_dashboard_can_send_commands_but_not_readings_or_alarms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = example_broker(tmp_path / "acl")
    await asyncio.to_thread(broker.start)
    try:
        monkeypatch.setenv("MONITOR_MQTT_PASSWORD", PASSWORDS[Role.DETECTOR])
        config = MqttConfig(url=f"mqtt://detector@127.0.0.1:{broker.port}")
        detector = MqttLink.from_settings(
            config.settings(Secrets()), topics=TOPICS_, service="detector"
        )
        inbound = detector.subscribe(TOPICS_.readings_filter)
        commands = detector.subscribe(TOPICS_.commands_filter)
        medical = link(broker, Role.MEDICAL_MONITOR, "medical-1")
        alarms = medical.subscribe(TOPICS_.alarms_filter)
        dashboard = link(broker, Role.DASHBOARD, "dashboard-1")
        async with detector, medical, dashboard:
            async with asyncio.timeout(10):
                for each in (detector, medical, dashboard):
                    await each.wait_connected()
            reading_topic = TOPICS_.readings("S-1", "P-001")
            alarm_topic = TOPICS_.alarms("S-1", "P-001")
            command_topic = TOPICS_.command("S-1", "acknowledge", Role.DASHBOARD.value)
            dashboard.publish(reading_topic, b'{"forged": "reading"}')
            dashboard.publish(alarm_topic, b'{"forged": "alarm"}')
            dashboard.publish(command_topic, b'{"a": "command"}')
            async with asyncio.timeout(10):
                await dashboard.drain()
            detector.publish(alarm_topic, b'{"real": "alarm"}')

            got_commands = await collect_until(commands, command_topic)
            got_alarms = await collect_until(alarms, alarm_topic)
            assert [m.payload for m in got_commands] == [b'{"a": "command"}']
            assert [m.payload for m in got_alarms] == [b'{"real": "alarm"}']
            assert len(inbound) == 0
            with pytest.raises(aiomqtt.MqttError):  # allow_anonymous false took effect
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="anonymous"):
                    pass
            # over MQTT 5 the broker says "not authorized", and the link counts it
            assert dashboard.stats.protocol == "5"
            assert dashboard.stats.rejected_by_broker == 2
            assert detector.stats.rejected_by_broker == 0
    finally:
        await asyncio.to_thread(broker.stop)


# --- staff identity: the account a command came from decides whom it may speak for -----------

STAFF = StaffDirectory.of(
    [
        StaffMember(id="RN-07", roles=(StaffRole.ROOM_STAFF,), accounts=(Role.DASHBOARD.value,)),
        StaffMember(
            id="MD-CHIEF-01",
            roles=(StaffRole.MEDICAL_MONITOR,),
            accounts=(Role.MEDICAL_MONITOR.value,),
        ),
    ]
)
ALARM = "5a0c35c4-2f7e-5d43-9a55-0d6a7c1f3b21"


def command(command_id: str, staff: str, kind: str = "acknowledge", **fields: object) -> bytes:
    body: dict[str, object] = {
        "schema_version": 1,
        "kind": kind,
        "command_id": command_id,
        "session": "S-1",
        "staff": staff,
        "issued_at": "2025-03-01T09:00:00Z",
    }
    targets: dict[str, dict[str, object]] = {
        "acknowledge": {"alarm_id": ALARM},
        "dose": {"participant": "P-001", "given_at": "2025-03-01T08:59:00Z"},
        "pause": {"participant": "P-001", "duration_s": 60},
    }
    return json.dumps(body | targets[kind] | fields).encode()


@contextlib.asynccontextmanager
async def detector_serving(broker: Mosquitto) -> AsyncIterator[tuple[CommandChannel, list[str]]]:
    """The detector's command channel on the example broker, carrying out (and answering ok)
    every command it yields; the ids it carried out, in order."""
    detector = link(broker, Role.DETECTOR, "detector")
    channel = CommandChannel(detector, TOPICS_, STAFF)
    carried_out: list[str] = []

    async def serve() -> None:
        async for each in channel:
            carried_out.append(each.command_id)
            channel.reply(reply_ok(each))

    async with detector, asyncio.TaskGroup() as group:
        serving = group.create_task(serve())
        async with asyncio.timeout(10):
            await detector.wait_connected()
        yield channel, carried_out
        serving.cancel()


async def replies_until(subscription: Subscription, count: int) -> list[CommandReply]:
    """The next ``count`` replies (the detector answers one sender in its order)."""
    messages = await collect(subscription, lambda seen: len(seen) == count)
    return [CommandReply.model_validate_json(message.payload) for message in messages]


@pytest.mark.network
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_command_counts_only_for_staff_its_broker_account_may_act_as(
    tmp_path: Path,
) -> None:
    broker = example_broker(tmp_path / "acl")
    await asyncio.to_thread(broker.start)
    try:
        dashboard = link(broker, Role.DASHBOARD, "dashboard-1")
        medical = link(broker, Role.MEDICAL_MONITOR, "medical-1")
        replies = dashboard.subscribe(TOPICS_.replies_filter)
        async with dashboard, medical, detector_serving(broker) as (channel, carried_out):
            async with asyncio.timeout(10):
                await dashboard.wait_connected()
                await medical.wait_connected()
            own = TOPICS_.command("S-1", "acknowledge", Role.DASHBOARD.value)
            # the shared dashboard login speaks for the chief physician, then for nobody
            dashboard.publish(own, command("forged-md", "MD-CHIEF-01"))
            dashboard.publish(
                TOPICS_.command("S-1", "pause", Role.DASHBOARD.value),
                command("nobody", "NOBODY", "pause"),
            )
            # on the medical monitor's own topic: the broker drops it (MQTT 5: not authorized)
            medical_topic = TOPICS_.command("S-1", "acknowledge", Role.MEDICAL_MONITOR.value)
            dashboard.publish(medical_topic, command("stolen-topic", "MD-CHIEF-01"))
            async with asyncio.timeout(10):
                await dashboard.drain()
            # the physician's own account may acknowledge, but a dose is not the role's to give
            medical.publish(medical_topic, command("md-ack", "MD-CHIEF-01"))
            medical.publish(
                TOPICS_.command("S-1", "dose", Role.MEDICAL_MONITOR.value),
                command("md-dose", "MD-CHIEF-01", "dose"),
            )
            async with asyncio.timeout(10):
                await medical.drain()
            dashboard.publish(own, command("rn-ack", "RN-07"))  # last: after the dropped one
            answers = {reply.command_id: reply for reply in await replies_until(replies, 5)}

        assert {id_: (r.ok, r.error) for id_, r in answers.items()} == {
            "forged-md": (False, ErrorCode.NOT_AUTHORIZED),
            "nobody": (False, ErrorCode.UNKNOWN_STAFF),
            "md-ack": (True, None),
            "md-dose": (False, ErrorCode.NOT_AUTHORIZED),
            "rn-ack": (True, None),
        }
        forged = answers["forged-md"].reason or ""
        assert forged == "account 'dashboard' may not act as this staff member"
        assert answers["md-dose"].reason == (
            "this staff member's roles (medical-monitor) do not allow dose commands"
        )
        assert sorted(carried_out) == ["md-ack", "rn-ack"]
        assert channel.stats.received == 5  # the broker never delivered the stolen topic's
        assert channel.stats.errors == {"not_authorized": 2, "unknown_staff": 1}
        assert dashboard.stats.rejected_by_broker == 1
    finally:
        await asyncio.to_thread(broker.stop)


@pytest.mark.network
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_duplicate_keys_and_a_reused_command_id_are_refused(tmp_path: Path) -> None:
    broker = example_broker(tmp_path / "acl")
    await asyncio.to_thread(broker.start)
    try:
        dashboard = link(broker, Role.DASHBOARD, "dashboard-1")
        replies = dashboard.subscribe(TOPICS_.replies_filter)
        acknowledge = TOPICS_.command("S-1", "acknowledge", Role.DASHBOARD.value)
        pause = TOPICS_.command("S-1", "pause", Role.DASHBOARD.value)
        async with dashboard, detector_serving(broker) as (channel, carried_out):
            async with asyncio.timeout(10):
                await dashboard.wait_connected()
            dashboard.publish(acknowledge, command("a-1", "RN-07"))
            # a retry, stamped anew: the same command, answered with its first reply
            dashboard.publish(acknowledge, command("a-1", "RN-07", issued_at="2025-03-01T09:01Z"))
            other_alarm = "0e6f5a3c-1b2d-4c5e-8f9a-0b1c2d3e4f50"
            dashboard.publish(acknowledge, command("a-1", "RN-07", alarm_id=other_alarm))
            dashboard.publish(pause, command("a-1", "RN-07", "pause"))
            # the reproduction: the second "staff" used to win
            doubled = command("d-1", "RN-07")[:-1] + b', "staff": "MD-CHIEF-01"}'
            dashboard.publish(acknowledge, doubled)
            answers = await replies_until(replies, 5)

        assert [(a.command_id, a.ok, a.error) for a in answers] == [
            ("a-1", True, None),
            ("a-1", True, None),
            ("a-1", False, ErrorCode.COMMAND_ID_REUSED),
            ("a-1", False, ErrorCode.COMMAND_ID_REUSED),
            ("d-1", False, ErrorCode.DUPLICATE_KEY),
        ]
        assert answers[2].reason == "command_id reused for a different command"
        assert carried_out == ["a-1"]
        assert (channel.stats.commands, channel.stats.duplicates) == (1, 1)
        assert channel.stats.errors == {"command_id_reused": 2, "duplicate_key": 1}
    finally:
        await asyncio.to_thread(broker.stop)

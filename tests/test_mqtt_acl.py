"""The example broker config: its ACL matches the contract, and a real Mosquitto enforces it."""

from __future__ import annotations

import asyncio
import getpass
import re
import shutil
from pathlib import Path

import aiomqtt
import pytest
from pydantic import SecretStr

from monitor.config import MqttConfig, Secrets
from monitor.mqtt.client import Incoming, MqttLink, Subscription
from monitor.mqtt.contract import TOPICS, Role
from monitor.mqtt.topics import Topics
from tests.services import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "mosquitto"
TOPICS_ = Topics(root="vitals", site="SITE-1")
PASSWORDS = {role: f"example-{role.value}-password" for role in Role}
# the harness sets these itself; the rest of the example config is used as written
_HARNESS_OWNS = ("listener", "persistence", "persistence_location", "autosave_interval")


def read_acl(path: Path) -> dict[str, set[tuple[str, str]]]:
    """user -> {(access, topic pattern)} from a Mosquitto ACL file."""
    grants: dict[str, set[tuple[str, str]]] = {}
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
            access, pattern = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
            grants[user].add((access, pattern))
        else:
            pytest.fail(f"unexpected ACL line: {line!r}")
    return grants


def test_the_acl_grants_each_role_exactly_the_contract() -> None:
    grants = read_acl(EXAMPLE / "acl")
    assert set(grants) == {role.value for role in Role}
    for role in Role:
        expected: set[tuple[str, str]] = set()
        for spec in TOPICS:
            write, read = role in spec.publishers, role in spec.readers
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


async def collect_until(subscription: Subscription, done: str) -> list[Incoming]:
    """Messages until one on topic ``done``; the broker keeps a publisher's order."""
    seen = []
    async with asyncio.timeout(10):
        async for message in subscription:
            seen.append(message)
            if message.topic == done:
                return seen
    raise AssertionError("unreachable")


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
        detector = MqttLink.from_config(
            config, topics=TOPICS_, service="detector", secrets=Secrets()
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
            command_topic = TOPICS_.command("S-1", "acknowledge")
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

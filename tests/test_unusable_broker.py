"""A broker that can never be used as configured ends the command at once, with one line saying
why and exit status 3: a wrong password, an unknown user, a certificate the client does not trust.
A broker that is merely away is still retried (tests/test_mqtt_link.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from monitor.exits import EXIT_UNAVAILABLE
from monitor.mqtt.client import BrokerUnusableError, MqttLink
from monitor.mqtt.contract import Role
from tests.test_mqtt_acl import PASSWORDS, example_broker
from tests.test_mqtt_link import certificates, tls_broker

ROOT = Path(__file__).resolve().parent.parent
QUICK_S = 30.0
"""Far below --duration: the command must not wait for it."""


DETECT = ("detect", "--config", "config/demo.toml", "--no-live")
GATEWAY = ("gateway", "--config", "config/demo.toml", "--simulate", "mdma-typical")


async def monitor(
    tmp_path: Path, url: str, password: str | None = None, command: tuple[str, ...] = DETECT
) -> tuple[int, str]:
    """``monitor detect`` (or ``command``) for up to ten minutes against ``url``; its status
    and stderr."""
    environment = {**os.environ, "MONITOR_MQTT_URL": url, "MONITOR_INFLUX_URL": ""}
    environment.pop("MONITOR_MQTT_PASSWORD", None)
    if password is not None:
        environment["MONITOR_MQTT_PASSWORD"] = password
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "monitor", *command, "--duration", "600"),
        *(() if command != DETECT else ("--store", str(tmp_path / "store.sqlite"))),
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(QUICK_S):
            _, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace")


def assert_one_clear_line(stderr: str, *words: str) -> None:
    assert "Traceback" not in stderr and "ExceptionGroup" not in stderr, stderr
    assert "retrying" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: MQTT broker 127.0.0.1:"), stderr
    for word in words:
        assert word in last, stderr


@pytest.mark.asyncio
@pytest.mark.network
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("user", "password", "command"),
    [
        pytest.param("detector", "not-the-password", DETECT, id="password"),
        pytest.param("nobody", PASSWORDS[Role.DETECTOR], DETECT, id="user"),
        pytest.param(None, None, DETECT, id="anonymous"),
        pytest.param("gateway", "not-the-password", GATEWAY, id="gateway"),
    ],
)
async def test_refused_credentials_end_the_command_with_exit_3(
    tmp_path: Path, user: str | None, password: str | None, command: tuple[str, ...]
) -> None:
    """Mosquitto answers each with reason 135 (134 is the other code meant for it)."""
    broker = example_broker(tmp_path / "acl")
    await asyncio.to_thread(broker.start)
    try:
        userinfo = "" if user is None else f"{user}@"
        url = f"mqtt://{userinfo}127.0.0.1:{broker.port}"
        status, stderr = await monitor(tmp_path, url, password, command)
    finally:
        await asyncio.to_thread(broker.stop)
    assert status == EXIT_UNAVAILABLE, stderr
    assert_one_clear_line(stderr, "refused the connection: not authorised", "MONITOR_MQTT_PASSWORD")
    assert "not-the-password" not in stderr


@pytest.mark.asyncio
@pytest.mark.network
@pytest.mark.timeout(60)
async def test_an_untrusted_broker_certificate_ends_the_command_with_exit_3(
    tmp_path: Path,
) -> None:
    """The broker's certificate is signed by a CA the client does not know (the system's CAs
    verify it, as with no ``ca_file``): verification fails the same way on every attempt."""
    files = await asyncio.to_thread(certificates, tmp_path / "certs")
    server = tls_broker(tmp_path / "broker", files)
    await asyncio.to_thread(server.start)
    try:
        status, stderr = await monitor(tmp_path, f"mqtts://127.0.0.1:{server.port}")
    finally:
        await asyncio.to_thread(server.stop)
    assert status == EXIT_UNAVAILABLE, stderr
    assert_one_clear_line(stderr, "TLS certificate verification failed", "ca_file")


@pytest.mark.asyncio
@pytest.mark.network
@pytest.mark.timeout(30)
async def test_a_lost_cancellation_does_not_hide_an_unusable_broker(tmp_path: Path) -> None:
    """The link cancels the task that entered it when the broker refuses it; a library that
    swallowed that cancellation (3.11's ``wait_for`` can) left a gateway waiting out its
    --duration. Its task group now also awaits ``until_unusable``."""
    broker = example_broker(tmp_path / "acl")
    await asyncio.to_thread(broker.start)
    refused = MqttLink(
        host="127.0.0.1",
        port=broker.port,
        client_id="refused",
        username=Role.GATEWAY.value,
        password=SecretStr("not-the-password"),
    )
    try:
        with pytest.raises(BrokerUnusableError, match="not authorised"):
            async with refused:  # without the watch this hangs until the test times out
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()  # the link's cancellation, lost in a library
                async with asyncio.TaskGroup() as group:  # then the gateway's endless work
                    group.create_task(refused.until_unusable())
                    group.create_task(asyncio.Event().wait())
    finally:
        await asyncio.to_thread(broker.stop)

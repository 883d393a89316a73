"""Smoke test of the harness: the real servers the service tests rely on start, answer, stop."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import aiomqtt
import pytest

from tests.services import InfluxDB, Mosquitto

pytestmark = pytest.mark.network


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_mosquitto_relays_a_message_and_survives_a_restart(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        for attempt in range(2):
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="probe") as client:
                await client.subscribe("probe/#", qos=1)
                await client.publish("probe/hello", f"hi {attempt}", qos=1)
                async with asyncio.timeout(10):
                    message = await anext(aiter(client.messages))
                assert message.payload == f"hi {attempt}".encode()
            broker.stop(kill=True)
            broker.start()


@pytest.mark.timeout(60)
def test_influxdb_accepts_line_protocol_and_answers_influxql(tmp_path: Path) -> None:
    with InfluxDB(tmp_path / "influx") as influx:
        influx.query("CREATE DATABASE probe")
        request = urllib.request.Request(
            f"{influx.url}/write?db=probe&precision=s",
            data=b"vitals,participant=P-001 heart_rate=72 1764147600",
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
        result = influx.query("SELECT heart_rate FROM vitals", database="probe")
        series = result["results"][0]["series"][0]  # type: ignore[index]
        assert series["values"] == [["2025-11-26T09:00:00Z", 72]]

"""Input stamped in the future (issue 9, item 1), through ``monitor detect`` and a real Mosquitto:
a reading an hour ahead, a reading and an ACVPU entry in the year 9999 and a dose two hours
ahead are refused and counted, and SpO2 at 85 % right after them still raises its alarm, at the
first such reading: a reading a few seconds ahead (within the skew) waits for its time instead
of making the readings of other streams out of order."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sys
import urllib.request
import uuid
from pathlib import Path

import aiomqtt
import pytest

from monitor.models import AlarmEvent, AlarmState, Parameter, Reading, ReadingKind
from monitor.mqtt.payloads import AlarmMessage, CommandReply, VitalsBatch
from tests.services import Mosquitto, free_port
from tests.test_detect import detector_online

ROOT = Path(__file__).resolve().parent.parent
SESSION = "DEMO-MDMA-1"
BASE = "vitals/DEMO"
RUN = uuid.uuid4()

pytestmark = [pytest.mark.network]


def spo2(percent: float, at: dt.datetime) -> Reading:
    return Reading(
        session=SESSION,
        participant="P-001",
        device="spo2-p-001",
        kind=ReadingKind.SPO2,
        values={Parameter.SPO2: percent, Parameter.PULSE_RATE: 80.0},
        received_at=at,
    )


def heart_rate(bpm: float, at: dt.datetime) -> Reading:
    return Reading(
        session=SESSION,
        participant="P-001",
        device="hr-p-001",
        kind=ReadingKind.HEART_RATE,
        values={Parameter.HEART_RATE: bpm},
        received_at=at,
    )


def batch(sequence: int, reading: Reading) -> bytes:
    """What a gateway publishes; ``sent_at`` is now, whatever the reading says."""
    return (
        VitalsBatch(
            gateway="gw-test",
            run=RUN,
            sequence=sequence,
            session=SESSION,
            participant="P-001",
            sent_at=dt.datetime.now(dt.UTC),
            readings=(reading,),
        )
        .model_dump_json()
        .encode()
    )


def command(kind: str, **fields: object) -> str:
    return json.dumps(
        {
            "schema_version": 1,
            "kind": kind,
            "command_id": f"{kind}-{uuid.uuid4().hex[:8]}",
            "session": SESSION,
            "staff": "nurse-07",
            "issued_at": dt.datetime.now(dt.UTC).isoformat(),
            "participant": "P-001",
            **fields,
        }
    )


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_future_stamps_are_refused_and_spo2_at_85_still_alarms(tmp_path: Path) -> None:
    port = free_port()
    with Mosquitto(tmp_path / "broker") as broker:
        detector = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "monitor", "detect", "--config", "config/demo.toml"),
            *("--store", str(tmp_path / "store.sqlite"), "--http", f"127.0.0.1:{port}"),
            cwd=ROOT,
            env={**os.environ, "MONITOR_MQTT_URL": broker.url, "MONITOR_INFLUX_URL": ""},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(30):
                await detector_online(broker.port)
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="gw-test") as client:
                await client.subscribe(f"{BASE}/alarms/#", qos=1)
                await client.subscribe(f"{BASE}/replies/#", qos=1)
                events, replies, first_low = await _session(client, port)
        finally:
            detector.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                _, err = await detector.communicate()
    log = err.decode(errors="replace")
    assert detector.returncode == 130, log[-3000:]
    # The SpO2 alarm, and nothing of the staleness and escalation flood of a moved clock.
    assert [(e.rule, e.state) for e in events] == [("spo2-low-high-immediate", AlarmState.ACTIVE)]
    assert events[0].occurred_at == first_low.replace(
        microsecond=first_low.microsecond // 1000 * 1000
    )
    assert all(not r.ok and r.error == "rejected" for r in replies), replies
    assert all("refused, as it would move session time ahead" in (r.reason or "") for r in replies)
    assert "stamped more than 5 s ahead of the clock" in log
    assert "P-001 spo2 from device spo2-p-001" in log


async def _session(
    client: aiomqtt.Client, port: int
) -> tuple[list[AlarmEvent], list[CommandReply], dt.datetime]:
    """The stamps ahead, then SpO2 at 85 % every half second until its alarm arrives; the
    alarms and replies that came, and the time of the first 85 %."""
    now = dt.datetime.now(dt.UTC)
    topic = f"{BASE}/readings/{SESSION}/P-001"
    await client.publish(topic, batch(1, heart_rate(70.0, now + dt.timedelta(seconds=3))), qos=1)
    await client.publish(topic, batch(2, spo2(97.0, now + dt.timedelta(hours=1))), qos=1)
    far = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)
    await client.publish(topic, batch(3, spo2(97.0, far)), qos=1)
    await client.publish(
        f"{BASE}/commands/{SESSION}/dose/local",
        command("dose", given_at=(now + dt.timedelta(hours=2)).isoformat()),
        qos=1,
    )
    await client.publish(
        f"{BASE}/commands/{SESSION}/consciousness/local",
        command("consciousness", level="pain", observed_at=far.isoformat()),
        qos=1,
    )
    events: list[AlarmEvent] = []
    replies: list[CommandReply] = []
    sent: list[dt.datetime] = []

    async def feed() -> None:
        for sequence in range(4, 1000):
            sent.append(dt.datetime.now(dt.UTC))
            await client.publish(topic, batch(sequence, spo2(85.0, sent[-1])))
            await asyncio.sleep(0.5)  # a pulse oximeter's pace, not a wait for a result

    feeding = asyncio.create_task(feed())
    try:
        async with asyncio.timeout(20):  # it alarmed within 1.1 s without the bad stamps
            async for message in client.messages:
                if message.topic.matches(f"{BASE}/replies/#"):
                    replies.append(CommandReply.model_validate_json(bytes(message.payload)))
                else:
                    events.append(AlarmMessage.model_validate_json(bytes(message.payload)).event)
                if len(replies) == 2 and any(e.rule.startswith("spo2-low") for e in events):
                    break
    finally:
        feeding.cancel()
    metrics = await asyncio.to_thread(_scrape, port)
    assert "monitor_future_rejected_total 4" in metrics, metrics
    return events, replies, sent[0]


def _scrape(port: int) -> str:
    """The detector's /metrics; it was up before the session began (the retained online)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()

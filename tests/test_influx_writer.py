"""The InfluxDB writer against a real InfluxDB 1.6.7: both write paths, rejections, an outage.

The v1 path talks to the server directly; the v2 path goes through ``tests/influx_v2_shim.py``
(1.6.7 has no ``/api/v2/write``). What landed is checked with InfluxQL on the server itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import random
import ssl
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from monitor.backoff import Backoff
from monitor.config import InfluxConfig, resolve_influx_config
from monitor.models import (
    AlarmCategory,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    DeviceEvent,
    DeviceEventType,
    DeviceKind,
    DeviceState,
    Parameter,
    QualityFlag,
    Reading,
    ReadingKind,
)
from monitor.storage.influx import (
    InfluxWriter,
    alarm_point,
    classify_status,
    device_point,
    make_point,
    reading_point,
    to_point,
)
from monitor.storage.settings import InfluxSettings
from monitor.storage.spool import HighWater, PointState, Spool, export_points
from tests.influx_v2_shim import InfluxV2Shim
from tests.services import InfluxDB, find_program

SITE = "clinic-a"
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
FAST = Backoff(initial_s=0.02, max_s=0.2)
WAIT_S = 20.0


def heart_rate(n: int, participant: str = "P-001", bpm: float | None = None) -> Reading:
    return Reading(
        session="S-1",
        participant=participant,
        device=f"hr-{participant}",
        kind=ReadingKind.HEART_RATE,
        values={Parameter.HEART_RATE: 60.0 + n % 40 if bpm is None else bpm},
        received_at=T0 + dt.timedelta(seconds=n),
    )


def blood_pressure() -> Reading:
    return Reading(
        session="S-1",
        participant="P-001",
        device="bp-1",
        kind=ReadingKind.BLOOD_PRESSURE,
        values={
            Parameter.SYSTOLIC_BP: 128.0,
            Parameter.DIASTOLIC_BP: 84.5,
            Parameter.MEAN_ARTERIAL_BP: None,
            Parameter.PULSE_RATE: 71.0,
        },
        measured_at=T0 - dt.timedelta(seconds=2),
        received_at=T0,
        quality=frozenset({QualityFlag.VALUE_UNUSABLE, QualityFlag.IRREGULAR_PULSE}),
    )


ALARM_ID = uuid.UUID("00000000-0000-4000-8000-000000000007")


def acknowledged_alarm() -> AlarmEvent:
    return AlarmEvent(
        alarm_id=ALARM_ID,
        session="S-1",
        participant="P-001",
        rule="hr-high",
        parameter=Parameter.HEART_RATE,
        priority=AlarmPriority.HIGH,
        category=AlarmCategory.PHYSIOLOGICAL,
        state=AlarmState.ACKNOWLEDGED,
        value=151.0,
        threshold=140.0,
        message='Heart rate 151 bpm above 140 ("high")',
        raised_at=T0,
        occurred_at=T0 + dt.timedelta(seconds=30),
        acknowledged_by="RN-07",
        acknowledged_at=T0 + dt.timedelta(seconds=30),
        escalation_level=1,
        sequence=4,
    )


def malformed_payload() -> DeviceEvent:
    return DeviceEvent(
        session="S-1",
        participant="P-001",
        device="hr-P-001",
        device_kind=DeviceKind.HEART_RATE,
        event=DeviceEventType.MALFORMED_PAYLOAD,
        state=DeviceState.CONNECTED,
        occurred_at=T0 + dt.timedelta(seconds=5),
        detail="flags announce RR intervals but none follow",
        characteristic="0x2A37",
        payload_hex="1048",
        count=3,
    )


class Availability:
    """Records the writer's reachable/unreachable changes; tests wait on them, not on time."""

    def __init__(self) -> None:
        self.changes: list[bool] = []
        self._lost = asyncio.Event()

    def __call__(self, available: bool) -> None:
        self.changes.append(available)
        if not available:
            self._lost.set()

    async def lost(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self._lost.wait()


async def drained(spool: Spool) -> None:
    async with asyncio.timeout(WAIT_S):
        await spool.wait_until(lambda s: s.depth == 0)


async def query(influx: InfluxDB, influxql: str, database: str) -> list[dict[str, object]]:
    result = await asyncio.to_thread(influx.query, influxql, database)
    statement = result["results"][0]  # type: ignore[index]
    assert "error" not in statement, statement
    series: list[dict[str, object]] = statement.get("series", [])
    return series


def rows(series: dict[str, object]) -> list[dict[str, object]]:
    columns = series["columns"]
    assert isinstance(columns, list)
    values = series["values"]
    assert isinstance(values, list)
    return [dict(zip(columns, row, strict=True)) for row in values]


async def create_database(influx: InfluxDB, name: str) -> None:
    await asyncio.to_thread(influx.query, f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    with InfluxDB(tmp_path_factory.mktemp("influx")) as server:
        yield server


@dataclasses.dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and a certificate it signed for 127.0.0.1, made by the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    openssl = find_program("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    made = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ca_key, csr = ["-keyout", "ca.key"], ["-keyout", "server.key", "-out", "server.csr"]
    steps = [
        ["req", "-x509", *ec, *ca_key, "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca"],
        ["req", *ec, *csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"],
    ]
    steps[-1] += ["-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf"]
    for step in steps:
        subprocess.run([openssl, *step], cwd=folder, check=True, capture_output=True)
    return made


class TlsInfluxDB(InfluxDB):
    """The harness's InfluxDB with HTTPS switched on, for the CA-file path of the v1 writer."""

    def __init__(self, workdir: Path, certificates: Certificates) -> None:
        super().__init__(workdir)
        self.context = ssl.create_default_context(cafile=str(certificates.ca))
        https = (
            "[http]\n  https-enabled = true\n"
            f'  https-certificate = "{certificates.cert}"\n'
            f'  https-private-key = "{certificates.key}"\n'
        )
        self.config_path.write_text(self.config_path.read_text().replace("[http]\n", https, 1))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1, context=self.context) as r:
                return bool(r.status == 204)
        except OSError:
            return False

    def query(self, influxql: str, database: str | None = None) -> dict[str, object]:
        params = {"q": influxql} | ({} if database is None else {"db": database})
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/query", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
            result: dict[str, object] = json.loads(response.read())
            return result


def v1(influx: InfluxDB, database: str) -> InfluxSettings:
    return InfluxSettings(url=influx.url, api="v1", bucket=database)


# --- the schema and the pure parts ----------------------------------------------------------


def test_a_reading_becomes_one_vitals_point_with_documented_tags_and_fields() -> None:
    point = reading_point(blood_pressure(), site=SITE)
    assert point.line == (
        "vitals,device=bp-1,kind=blood_pressure,participant=P-001,session=S-1,site=clinic-a "
        'diastolic_bp=84.5,measured_at="2026-01-05T08:59:58+00:00",pulse_rate=71,'
        'quality="irregular_pulse,value_unusable",systolic_bp=128,usable=false 1767603600000000000'
    )
    assert point.key.tags == (
        ("device", "bp-1"),
        ("kind", "blood_pressure"),
        ("participant", "P-001"),
        ("session", "S-1"),
        ("site", "clinic-a"),
    )
    assert to_point(blood_pressure(), site=SITE) == point
    assert to_point(acknowledged_alarm(), site=SITE) == alarm_point(acknowledged_alarm(), site=SITE)
    assert to_point(malformed_payload(), site=SITE) == device_point(malformed_payload(), site=SITE)


def test_environment_overrides_the_site_file() -> None:
    base = InfluxConfig(url="http://db:8086", api="v2", bucket="vitals", org="clinic")
    assert resolve_influx_config(base, {}) == base
    assert resolve_influx_config(None, {}) is None
    env = {"MONITOR_INFLUX_URL": "http://other:8086", "MONITOR_INFLUX_BUCKET": "bench"}
    resolved = resolve_influx_config(base, env)
    assert resolved is not None
    assert (resolved.url, resolved.bucket, resolved.org) == ("http://other:8086", "bench", "clinic")
    only_env = resolve_influx_config(
        None, {"MONITOR_INFLUX_URL": "http://db:8086", "MONITOR_INFLUX_API": "v1"}
    )
    assert only_env == InfluxConfig(url="http://db:8086", api="v1")
    assert resolve_influx_config(base, {"MONITOR_INFLUX_URL": ""}) == base  # empty is unset
    with pytest.raises(ValueError, match="MONITOR_INFLUX_API"):
        resolve_influx_config(base, {"MONITOR_INFLUX_API": "v3"})
    with pytest.raises(ValueError, match=r"influx\.org"):
        resolve_influx_config(base, {"MONITOR_INFLUX_API": "v1"})


def test_only_bad_points_are_blamed_on_the_points() -> None:
    assert [status for status in range(400, 600) if classify_status(status, "").bad_points] == [
        400,
        413,
        422,
    ]
    assert "MONITOR_INFLUX_TOKEN" in classify_status(401, "unauthorized").message
    assert classify_status(503, "busy", retry_after="3").retry_after_s == 3.0


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, factor=2.0, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(attempt, rng) for attempt in range(8) for _ in range(20)]
    bases = [min(8.0, 2.0**attempt) for attempt in range(8) for _ in range(20)]
    assert all(base / 2 <= delay <= base for delay, base in zip(delays, bases, strict=True))
    assert max(delays) <= 8.0
    assert len(set(delays)) == len(delays)


def test_v1_needs_user_and_password() -> None:
    config = InfluxSettings(url="http://db:8086", api="v1")
    with pytest.raises(ValueError, match="user:password"):
        InfluxWriter(Spool(Path("unused.db")), config, SecretStr("just-a-token"))


# --- against the real server ----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.asyncio
@pytest.mark.network
async def test_records_land_in_influxdb(influx: InfluxDB, tmp_path: Path, api: str) -> None:
    database = f"landing_{api}"
    await create_database(influx, database)
    records: list[Reading | AlarmEvent | DeviceEvent] = [
        blood_pressure(),
        heart_rate(1),
        acknowledged_alarm(),
        malformed_payload(),
    ]
    async with Spool(tmp_path / "spool.db") as spool, InfluxV2Shim(influx.url, "s3cret") as shim:
        if api == "v1":
            writer = InfluxWriter(spool, v1(influx, database), None, backoff=FAST)
        else:
            config = InfluxSettings(url=shim.url, api="v2", bucket=database, org="clinic")
            writer = InfluxWriter(spool, config, SecretStr("s3cret"), backoff=FAST)
        await spool.accept(to_point(record, site=SITE) for record in records)
        async with writer, asyncio.timeout(WAIT_S):
            await writer.drain()
        assert (spool.depth, writer.status.points_written) == (0, len(records))
        assert writer.status.available is True
        assert shim.requests == (1 if api == "v2" else 0)

    vitals = await query(influx, "SELECT * FROM vitals GROUP BY *", database)
    by_device = {s["tags"]["device"]: s for s in vitals}  # type: ignore[index]
    assert by_device["bp-1"]["tags"] == {
        "site": SITE,
        "session": "S-1",
        "participant": "P-001",
        "device": "bp-1",
        "kind": "blood_pressure",
    }
    assert rows(by_device["bp-1"]) == [
        {
            "time": "2026-01-05T09:00:00Z",
            "systolic_bp": 128,
            "diastolic_bp": 84.5,
            "pulse_rate": 71,
            "heart_rate": None,
            "measured_at": "2026-01-05T08:59:58+00:00",
            "quality": "irregular_pulse,value_unusable",
            "usable": False,
        }
    ]
    assert rows(by_device["hr-P-001"])[0]["heart_rate"] == 61

    (alarms,) = await query(influx, "SELECT * FROM alarm_events GROUP BY *", database)
    assert alarms["tags"] == {
        "site": SITE,
        "session": "S-1",
        "participant": "P-001",
        "rule": "hr-high",
        "priority": "high",
        "category": "physiological",
        "state": "acknowledged",
        "seq": "4",
    }
    assert rows(alarms) == [
        {
            "time": "2026-01-05T09:00:30Z",
            "alarm_id": str(ALARM_ID),
            "sequence": 4,
            "message": 'Heart rate 151 bpm above 140 ("high")',
            "parameter": "heart_rate",
            "value": 151,
            "threshold": 140,
            "escalation_level": 1,
            "acknowledged_by": "RN-07",
            "acknowledged_at": "2026-01-05T09:00:30+00:00",
            "raised_at": "2026-01-05T09:00:00+00:00",
            "paused": False,
            "condition_cleared": False,
        }
    ]

    (status,) = await query(influx, "SELECT * FROM device_status GROUP BY *", database)
    assert status["tags"] == {
        "site": SITE,
        "session": "S-1",
        "participant": "P-001",
        "device": "hr-P-001",
        "device_kind": "heart_rate",
        "event": "malformed_payload",
        "state": "connected",
    }
    assert rows(status) == [
        {
            "time": "2026-01-05T09:00:05Z",
            "detail": "flags announce RR intervals but none follow",
            "characteristic": "0x2A37",
            "payload_hex": "1048",
            "count": 3,
        }
    ]


@pytest.mark.timeout(60)
@pytest.mark.asyncio
@pytest.mark.network
async def test_v2_sends_its_token_and_a_wrong_one_keeps_points_pending(
    influx: InfluxDB, tmp_path: Path
) -> None:
    database = "wrong_token"
    await create_database(influx, database)
    async with Spool(tmp_path / "spool.db") as spool, InfluxV2Shim(influx.url, "right") as shim:
        config = InfluxSettings(url=shim.url, api="v2", bucket=database, org="clinic")
        await spool.accept([reading_point(heart_rate(n), site=SITE) for n in range(3)])
        availability = Availability()
        wrong = SecretStr("t0k3n-wr0ng")
        async with (
            InfluxWriter(
                spool, config, wrong, backoff=FAST, on_availability=availability
            ) as writer,
            asyncio.TaskGroup() as group,
        ):
            task = group.create_task(writer.run())
            await availability.lost()
            task.cancel()
        assert "HTTP 401" in (writer.status.last_error or "")
        assert "t0k3n-wr0ng" not in (writer.status.last_error or "")
        assert (spool.depth, spool.quarantined, writer.status.available) == (3, 0, False)
        async with InfluxWriter(spool, config, SecretStr("right"), backoff=FAST) as writer:
            async with asyncio.timeout(WAIT_S):
                await writer.drain()
    assert (
        rows((await query(influx, "SELECT COUNT(heart_rate) FROM vitals", database))[0])[0]["count"]
        == 3
    )


@pytest.mark.timeout(60)
@pytest.mark.asyncio
@pytest.mark.network
async def test_a_rejected_point_is_quarantined_and_the_rest_go_through(
    influx: InfluxDB, tmp_path: Path
) -> None:
    database = "rejected"
    await create_database(influx, database)
    good = [reading_point(heart_rate(n), site=SITE) for n in range(9)]
    tags = dict(good[0].key.tags)
    bad = make_point("vitals", tags, {"heart_rate": "seventy"}, good[3].key.time_ns + 500_000_000)
    async with Spool(tmp_path / "spool.db") as spool:
        async with InfluxWriter(spool, v1(influx, database), None, backoff=FAST) as writer:
            await spool.accept(good[:1])  # heart_rate is a float field from now on
            async with asyncio.timeout(WAIT_S):
                await writer.drain()
                await spool.accept([*good[1:4], bad, *good[4:6]])
                await writer.drain()
                await spool.accept(good[6:])
                await writer.drain()
        assert (spool.depth, spool.quarantined) == (0, 1)
        assert writer.status.points_quarantined == 1
        assert writer.status.points_written == len(good)
        (kept,) = await asyncio.to_thread(
            lambda: list(export_points(spool.path, states=[PointState.QUARANTINED]))
        )
    assert kept.line == bad.line
    assert kept.reason is not None
    assert "HTTP 400" in kept.reason
    assert "field type conflict" in kept.reason
    (counted,) = await query(influx, "SELECT COUNT(heart_rate) FROM vitals", database)
    assert rows(counted)[0]["count"] == len(good)


@pytest.mark.timeout(60)
@pytest.mark.asyncio
@pytest.mark.network
async def test_a_missing_database_keeps_points_pending_until_it_exists(
    influx: InfluxDB, tmp_path: Path
) -> None:
    database = "created_late"
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.accept([reading_point(heart_rate(n), site=SITE) for n in range(5)])
        availability = Availability()
        async with (
            InfluxWriter(
                spool, v1(influx, database), None, backoff=FAST, on_availability=availability
            ) as writer,
            asyncio.TaskGroup() as group,
        ):
            task = group.create_task(writer.run())
            await availability.lost()
            assert "HTTP 404" in (writer.status.last_error or "")
            assert (spool.depth, spool.quarantined) == (5, 0)
            await create_database(influx, database)
            await drained(spool)
            task.cancel()
    (counted,) = await query(influx, "SELECT COUNT(heart_rate) FROM vitals", database)
    assert rows(counted)[0]["count"] == 5


@pytest.mark.timeout(90)
@pytest.mark.asyncio
@pytest.mark.network
async def test_an_outage_fills_the_spool_and_recovery_drains_it_exactly_once(
    tmp_path: Path,
) -> None:
    participants = [f"P-00{i}" for i in range(1, 5)]
    server = InfluxDB(tmp_path / "influx")
    await asyncio.to_thread(server.start)
    try:
        await create_database(server, "outage")
        crossings: list[HighWater] = []
        over, under = asyncio.Event(), asyncio.Event()

        def crossed(change: HighWater) -> None:
            crossings.append(change)
            (over if change.over else under).set()

        availability = Availability()
        produced = 0

        async def produce(count: int) -> None:
            nonlocal produced
            for start in range(produced, produced + count, 10):
                await spool.accept(
                    reading_point(heart_rate(n, participant), site=SITE)
                    for n in range(start, start + 10)
                    for participant in participants
                )
            produced += count

        async with (
            Spool(
                tmp_path / "spool.db",
                high_water=120,
                clear_below=40,
                hold_s=0,
                on_high_water=crossed,
            ) as spool,
            InfluxWriter(
                spool,
                v1(server, "outage"),
                None,
                batch_size=25,
                backoff=FAST,
                request_timeout_s=2.0,
                on_availability=availability,
            ) as writer,
            asyncio.TaskGroup() as group,
        ):
            task = group.create_task(writer.run())
            await produce(20)  # 80 points, below the mark; killed while they are being written
            await asyncio.to_thread(server.stop, kill=True)
            assert crossings == []
            await produce(60)  # 240 more while InfluxDB is away
            async with asyncio.timeout(WAIT_S):
                await over.wait()
            await availability.lost()
            assert spool.depth >= 240
            assert spool.over_high_water

            await asyncio.to_thread(server.start)
            async with asyncio.timeout(WAIT_S):
                await under.wait()
            await drained(spool)
            task.cancel()

        assert [c.over for c in crossings] == [True, False]
        assert availability.changes[-2:] == [False, True]
        assert (spool.quarantined, writer.status.points_quarantined) == (0, 0)
        series = await query(server, "SELECT COUNT(heart_rate) FROM vitals GROUP BY *", "outage")
        counts = {s["tags"]["participant"]: rows(s)[0]["count"] for s in series}  # type: ignore[index]
        assert counts == dict.fromkeys(participants, produced)
        (total,) = await query(server, "SELECT SUM(heart_rate) FROM vitals", "outage")
        expected = sum(60.0 + n % 40 for n in range(produced)) * len(participants)
        assert rows(total)[0]["sum"] == expected
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.timeout(60)
@pytest.mark.asyncio
@pytest.mark.network
async def test_v1_over_https_trusts_the_ca_file_and_nothing_else(
    tmp_path: Path, certificates: Certificates
) -> None:
    server = TlsInfluxDB(tmp_path / "influx", certificates)
    await asyncio.to_thread(server.start)
    try:
        await create_database(server, "tls")
        async with Spool(tmp_path / "spool.db") as spool:
            await spool.accept([reading_point(heart_rate(n), site=SITE) for n in range(3)])
            availability = Availability()
            untrusted = InfluxSettings(url=server.url, api="v1", bucket="tls")
            async with (
                InfluxWriter(
                    spool, untrusted, None, backoff=FAST, on_availability=availability
                ) as writer,
                asyncio.TaskGroup() as group,
            ):
                task = group.create_task(writer.run())
                await availability.lost()
                task.cancel()
            assert "certificate" in (writer.status.last_error or "").lower()
            assert spool.depth == 3
            trusted = dataclasses.replace(untrusted, ca_file=certificates.ca)
            async with InfluxWriter(spool, trusted, None, backoff=FAST) as writer:
                async with asyncio.timeout(WAIT_S):
                    await writer.drain()
        (counted,) = await query(server, "SELECT COUNT(heart_rate) FROM vitals", "tls")
        assert rows(counted)[0]["count"] == 3
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.timeout(60)
@pytest.mark.asyncio
@pytest.mark.network
async def test_v2_over_https_uses_the_ca_file(
    influx: InfluxDB, tmp_path: Path, certificates: Certificates
) -> None:
    database = "tls_v2"
    await create_database(influx, database)
    context = certificates.server_context()
    async with (
        Spool(tmp_path / "spool.db") as spool,
        InfluxV2Shim(influx.url, "s3cret", ssl_context=context) as shim,
    ):
        config = InfluxSettings(
            url=shim.url, api="v2", bucket=database, org="clinic", ca_file=certificates.ca
        )
        await spool.accept([reading_point(heart_rate(n), site=SITE) for n in range(4)])
        async with InfluxWriter(spool, config, SecretStr("s3cret"), backoff=FAST) as writer:
            async with asyncio.timeout(WAIT_S):
                await writer.drain()
    (counted,) = await query(influx, "SELECT COUNT(heart_rate) FROM vitals", database)
    assert rows(counted)[0]["count"] == 4

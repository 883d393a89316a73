"""A store that fills up, turns read-only or cannot be opened (issue 9 item 4): alarming goes on,
nothing held is lost, and a store that cannot be opened is one clear line, not a traceback.

The disk is a real one: a small tmpfs mounted for the test (the tests run as root; elsewhere they
are skipped with the reason), filled with a filler file and freed again mid-run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from monitor.clock import ManualClock
from monitor.models import AlarmCategory, AlarmPriority, AlarmState
from monitor.mqtt.payloads import AlarmMessage
from monitor.storage import (
    HoldingSpool,
    JournalEntry,
    PointKey,
    Spool,
    SpoolPoint,
    StoreHealth,
)
from tests.services import InfluxDB, Mosquitto, SmallFilesystem, free_port
from tests.test_service_faults import (
    BASE,
    RUN,
    finished,
    influx_count,
    poll_metrics,
    recorded_alarms,
    recorded_readings,
    servers_env,
    start_service,
)

ROOT = Path(__file__).resolve().parent.parent
START = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def point(n: int, series: str = "a") -> SpoolPoint:
    return SpoolPoint(PointKey.of("m", [("series", series)], n), f"m,series={series} v={n} {n}")


# --- HoldingSpool against a disk that really fills ----------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_full_disk_holds_points_in_memory_and_writes_them_once_space_returns(
    tmp_path: Path,
) -> None:
    health: list[StoreHealth] = []
    clock = ManualClock(START)
    with SmallFilesystem(tmp_path / "disk", size_kib=16384) as disk:
        async with Spool(disk.path / "spool.db") as spool:
            store = HoldingSpool(spool, clock, on_health=health.append, retry_s=1.0)
            await store.accept([point(n) for n in range(5)])
            assert (store.held, store.failed, spool.depth) == (0, False, 5)

            disk.fill()
            wide = [point(n, series="x" * 200) for n in range(5, 400)]
            await store.accept(wide)  # refused: held, reported once, no exception
            assert (store.failed, store.held, spool.depth) == (True, 395, 5)
            assert [h.failed for h in health] == [True]
            assert "database or disk is full" in health[0].reason
            alarm = [point(n, series="alarm") for n in range(3)]
            journal = [JournalEntry("S-1", n, "{}") for n in range(3)]
            await store.accept(alarm, journal=journal, precious=True)
            assert store.held == 398  # before the next retry is due, nothing is tried
            await clock.advance(1.0)
            await store.retry()  # still full: still held, not reported again
            assert (store.held, len(health)) == (398, 1)

            disk.free()
            await clock.advance(1.0)
            await store.accept([point(400)])
            assert (store.failed, store.held, spool.depth) == (False, 0, 404)
            assert [h.failed for h in health] == [True, False]
            assert [e.sequence for e in await spool.journal("S-1")] == [0, 1, 2]


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_past_its_bound_the_holding_spool_discards_oldest_readings_never_alarms(
    tmp_path: Path,
) -> None:
    clock = ManualClock(START)
    with SmallFilesystem(tmp_path / "disk", size_kib=16384) as disk:
        async with Spool(disk.path / "spool.db") as spool:
            store = HoldingSpool(spool, clock, limit=10)
            disk.fill()
            await store.accept([point(n, series="alarm") for n in range(4)], precious=True)
            await store.accept([point(n) for n in range(20)])
            assert (store.held, store.discarded) == (10, 14)
            await store.accept([point(n, series="alarm") for n in range(4, 14)], precious=True)
            assert (store.held, store.discarded) == (14, 20)  # alarms outgrow the bound: kept
            disk.free()
            await clock.advance(1.0)
            await store.retry()
            assert spool.depth == 14


# --- a store that cannot be opened: one line, exit 3 ----------------------------------------------


def run_with_store(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "monitor", "run", "--config", "config/demo.toml"),
            *("--simulate", "mdma-typical", "--speed", "60", "--duration", "30", "--no-live"),
            *("--store", str(store)),
        ],
        cwd=ROOT,
        env={**os.environ, "MONITOR_MQTT_URL": "", "MONITOR_INFLUX_URL": ""},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *, names: str) -> None:
    assert result.returncode == 3, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert names in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    assert "ExceptionGroup" not in result.stderr


@pytest.mark.timeout(120)
def test_a_store_in_a_read_only_folder_is_one_clear_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=False)
    mounted = subprocess.run(
        ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {mounted.stderr!r}")
    try:
        result = run_with_store(folder / "store.sqlite")
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    assert_one_clear_line(result, names=f"cannot open the store {folder / 'store.sqlite'}")
    assert "Read-only file system" in result.stderr


@pytest.mark.timeout(120)
def test_a_store_whose_parent_cannot_be_made_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = run_with_store(tmp_path / "a-file" / "store.sqlite")
    assert_one_clear_line(result, names="cannot open the store")
    assert f"{tmp_path / 'a-file'} is not a folder" in result.stderr


@pytest.mark.timeout(120)
def test_a_store_that_is_not_a_database_is_one_clear_line(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    store.write_bytes(b"this is a spreadsheet, not a spool " * 200)
    result = run_with_store(store)
    assert_one_clear_line(result, names=f"cannot open the store {store}")
    assert "not a database" in result.stderr


@pytest.mark.timeout(120)
def test_a_store_locked_by_another_service_is_one_clear_line(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    sqlite3.connect(store).close()
    with Path(f"{store}.lock").open("ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_with_store(store)
    assert_one_clear_line(result, names="is in use by another spool or process")


# --- the service on a disk that fills mid-session ------------------------------------------------


async def watch_storage_alarms(
    port: int,
    raised: asyncio.Event,
    alarming_after: asyncio.Event,
    resolved: asyncio.Event,
) -> None:
    """An independent subscriber: storage-failed raised, a vital-sign alarm event published while
    the store refuses writes, and storage-failed's condition cleared (a high alarm latches until
    staff acknowledge it, so it shows as cleared, not yet resolved)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="storage-watcher") as client:
        await client.subscribe(f"{BASE}/alarms/+/+", qos=1)
        async for message in client.messages:
            event = AlarmMessage.model_validate_json(bytes(message.payload)).event
            if event.rule == "storage-failed":
                assert (event.priority, event.category) == (
                    AlarmPriority.HIGH,
                    AlarmCategory.TECHNICAL,
                )
                if event.condition_cleared or event.state is AlarmState.RESOLVED:
                    resolved.set()
                    return
                if event.state is AlarmState.ACTIVE:
                    raised.set()
            elif raised.is_set() and not resolved.is_set():
                alarming_after.set()


@pytest.mark.asyncio
@pytest.mark.network
@pytest.mark.ble
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_store_on_a_full_disk_keeps_alarming_and_every_point_reaches_influxdb_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    http = free_port()
    with (
        SmallFilesystem(tmp_path / "disk", size_kib=65536) as disk,
        Mosquitto(tmp_path / "broker") as broker,
        InfluxDB(tmp_path / "influx") as influx,
    ):
        influx.query("CREATE DATABASE vitals")
        raised, alarming_after, resolved = asyncio.Event(), asyncio.Event(), asyncio.Event()
        watcher = asyncio.create_task(
            watch_storage_alarms(broker.port, raised, alarming_after, resolved)
        )
        service = await start_service(
            *RUN,
            *("--duration", "150", "--record", str(out)),
            *("--store", str(disk.path / "store.sqlite"), "--http", f"127.0.0.1:{http}"),
            env=servers_env(broker, influx),
        )
        written = "monitor_influx_points_written_total"
        await poll_metrics(http, service, "writing to InfluxDB", lambda m: m.get(written, 0) > 0)
        await asyncio.to_thread(disk.fill)
        async with asyncio.timeout(30):
            await raised.wait()
            await alarming_after.wait()  # hyperthermia escalations keep coming over MQTT
        held = await poll_metrics(
            http, service, "points held", lambda m: m["monitor_store_held"] > 100
        )
        assert held["monitor_store_failed"] == 1
        await asyncio.to_thread(disk.free)
        async with asyncio.timeout(30):
            await resolved.wait()
        await poll_metrics(http, service, "nothing held", lambda m: m["monitor_store_held"] == 0)
        service.process.send_signal(signal.SIGTERM)  # done: no need to wait out --duration
        status, stdout, stderr = await finished(service, timeout_s=60)
        await watcher
        assert status == 130, stderr[-3000:]  # stopped cleanly by the signal
        assert "could not be stored" not in stdout
        assert "database or disk is full" in stderr

        readings = recorded_readings(out)
        alarms = recorded_alarms(out)
        for participant in ("P-001", "P-002"):
            failed = [
                a for a in alarms if a.rule == "storage-failed" and a.participant == participant
            ]
            assert failed[0].state is AlarmState.ACTIVE
            assert not failed[0].condition_cleared
            assert failed[-1].condition_cleared  # latched until acknowledged, as high alarms are
        # Every point once: the service drains its spool on SIGTERM too (InfluxDB would
        # overwrite a point sent twice, never add one, so a count is a count of distinct points).
        assert influx_count(influx, "SELECT COUNT(usable) FROM vitals") == len(readings)
        assert influx_count(influx, "SELECT COUNT(sequence) FROM alarm_events") == len(alarms)

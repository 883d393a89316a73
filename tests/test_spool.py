"""The spool's promises: accepted means on disk, once; drained in order; a crash loses nothing."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from monitor.storage.spool import (
    HighWater,
    HighWaterMark,
    JournalEntry,
    PointKey,
    PointState,
    Spool,
    SpoolError,
    SpoolLockedError,
    SpoolPoint,
    export_points,
)
from tests.services import SmallFilesystem

pytestmark = pytest.mark.timeout(30)


def point(n: int, value: float | None = None, series: str = "a") -> SpoolPoint:
    """A hand-written point: the spool stores lines, it does not care who serialised them."""
    shown = n if value is None else value
    return SpoolPoint(PointKey.of("m", [("series", series)], n), f"m,series={series} v={shown} {n}")


def lines(points: list[SpoolPoint]) -> list[str]:
    return [p.line for p in points]


@pytest.mark.asyncio
async def test_accepted_points_are_on_disk_for_the_next_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with Spool(path) as spool:
        result = await spool.accept([point(n) for n in range(5)])
        assert (result.added, spool.depth) == (5, 5)
    async with Spool(path) as reopened:
        assert reopened.depth == 5
        batch = await reopened.next_batch(10)
    assert [p.line for p in batch.points] == lines([point(n) for n in range(5)])


@pytest.mark.asyncio
async def test_a_second_spool_on_an_open_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with Spool(path):
        with pytest.raises(SpoolLockedError):
            await Spool(path).open()
    async with Spool(path) as after_close:  # the lock goes with the first spool
        assert after_close.depth == 0


@pytest.mark.asyncio
async def test_the_same_point_is_stored_once(tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        first = await spool.accept([point(1), point(1), point(2)])
        again = await spool.accept([point(1)])
        assert (first.added, first.duplicates, again.duplicates) == (2, 1, 1)
        assert spool.depth == 2
        assert [p.line for p in (await spool.next_batch(10)).points] == lines([point(1), point(2)])


@pytest.mark.asyncio
async def test_a_different_point_with_the_same_identity_replaces_it(tmp_path: Path) -> None:
    """InfluxDB overwrites same measurement + tags + time; the spool keeps the newer line too."""
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.accept([point(1), point(2)])
        result = await spool.accept([point(1, value=99.5)])
        assert (result.replaced, spool.depth) == (1, 2)
        batch = await spool.next_batch(10)
    assert [p.line for p in batch.points] == [point(1, value=99.5).line, point(2).line]


@pytest.mark.asyncio
async def test_replaced_points_are_logged_now_and_then_with_their_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway resending changed values under one key (a fuzzer does it every second) is one
    line now and then, not one a batch."""
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.accept([point(n) for n in range(10)])
        with caplog.at_level(logging.WARNING, logger="monitor.storage.spool"):
            for n in range(10):
                await spool.accept([point(n, value=50.0 + n)])
    replaced = [r.getMessage() for r in caplog.records if "replaced" in r.getMessage()]
    assert len(replaced) == 1, replaced
    assert replaced[0].startswith("1 point(s) replaced")  # the first at once, the rest held


@pytest.mark.asyncio
async def test_batches_drain_in_acceptance_order(tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.accept([point(n) for n in (5, 3)])
        await spool.accept([point(n) for n in (9, 0, 7)])
        await spool.accept([point(n) for n in (1, 8, 2, 6, 4)])
        drained: list[int] = []
        while batch := await spool.next_batch(4):
            assert len(batch) <= 4
            drained += [p.key.time_ns for p in batch.points]
            assert await spool.mark_delivered(batch) == len(batch)
        assert drained == [5, 3, 9, 0, 7, 1, 8, 2, 6, 4]
        assert spool.depth == 0
    assert list(export_points(tmp_path / "spool.db")) == []  # delivered points are gone


@pytest.mark.asyncio
async def test_a_point_replaced_while_in_flight_is_sent_again(tmp_path: Path) -> None:
    async with Spool(tmp_path / "spool.db") as spool:
        await spool.accept([point(1), point(2)])
        in_flight = await spool.next_batch(10)
        await spool.accept([point(2, value=42.0)])
        assert await spool.mark_delivered(in_flight) == 1
        assert spool.depth == 1
        again = await spool.next_batch(10)
    assert [p.line for p in again.points] == [point(2, value=42.0).line]


def test_high_water_mark_flips_with_hysteresis() -> None:
    mark = HighWaterMark(5, clear_below=3, hold_s=0)
    seen = [mark.update(depth, 0.0) for depth in (0, 4, 5, 9, 4, 3, 2, 4, 5)]
    assert seen == [
        None,
        None,
        HighWater(over=True, depth=5, mark=5),
        None,
        None,
        None,
        HighWater(over=False, depth=2, mark=5),
        None,
        HighWater(over=True, depth=5, mark=5),
    ]
    assert HighWaterMark(100).clear_below == 90
    with pytest.raises(ValueError, match="clear_below"):
        HighWaterMark(5, clear_below=6)


def test_a_writer_that_keeps_up_in_cycles_never_raises_the_mark() -> None:
    """Issue 9 item 9: points pile up past a small mark while each batch is in flight and drop
    to nothing when it lands (x60, mark 150). That is a writer keeping up, not a backlog: the
    mark must not flip at every cycle."""
    mark = HighWaterMark(150, hold_s=120)
    flips = []
    moment = 0.0
    for _cycle in range(30):  # a batch in flight for 60 s of session time, then delivered
        for depth in (100, 200, 300):
            moment += 20
            flips.append(mark.update(depth, moment))
        flips.append(mark.update(0, moment))
    assert [flip for flip in flips if flip is not None] == []


def test_a_backlog_that_lasts_the_hold_raises_the_mark_and_one_catch_up_clears_it() -> None:
    mark = HighWaterMark(150, hold_s=120)
    assert mark.update(150, 0.0) is None
    assert mark.update(400, 119.0) is None
    assert mark.update(900, 120.0) == HighWater(over=True, depth=900, mark=150)
    assert mark.update(1500, 500.0) is None
    assert mark.update(140, 510.0) is None  # under the mark, not yet under nine tenths of it
    assert mark.update(10, 511.0) == HighWater(over=False, depth=10, mark=150)
    assert mark.update(300, 512.0) is None  # the hold starts again


@pytest.mark.asyncio
async def test_the_spool_signals_high_water_crossings(tmp_path: Path) -> None:
    crossings: list[HighWater] = []
    async with Spool(
        tmp_path / "spool.db", high_water=5, clear_below=3, hold_s=0, on_high_water=crossings.append
    ) as spool:
        await spool.accept([point(n) for n in range(4)])
        assert not spool.over_high_water
        await spool.accept([point(n) for n in range(4, 7)])
        assert spool.over_high_water
        assert crossings == [HighWater(over=True, depth=7, mark=5)]
        await spool.mark_delivered(await spool.next_batch(4))  # 3 left: not below 3 yet
        assert spool.over_high_water
        await spool.mark_delivered(await spool.next_batch(1))
        assert not spool.over_high_water
    assert crossings == [HighWater(True, 7, 5), HighWater(False, 2, 5)]
    before = len(crossings)
    async with Spool(tmp_path / "spool.db", high_water=2, on_high_water=crossings.append) as spool:
        assert spool.over_high_water  # a spool reopened above its mark says so at once
    assert crossings[before:] == [HighWater(True, 2, 2)]


@pytest.mark.asyncio
async def test_quarantined_points_are_kept_counted_and_out_of_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with Spool(path) as spool:
        await spool.accept([point(n) for n in range(3)])
        batch = await spool.next_batch(10)
        bad, rest = batch.points[1:2], batch.points[:1] + batch.points[2:]
        assert await spool.quarantine(type(batch)(bad), "HTTP 400: field type conflict") == 1
        assert (spool.depth, spool.quarantined) == (2, 1)
        assert [p.key.time_ns for p in (await spool.next_batch(10)).points] == [0, 2]
        await spool.mark_delivered(type(batch)(rest))
    kept = list(export_points(path, states=[PointState.QUARANTINED]))
    assert [(p.line, p.state, p.reason) for p in kept] == [
        (point(1).line, PointState.QUARANTINED, "HTTP 400: field type conflict")
    ]
    async with Spool(path) as spool:
        assert (spool.depth, spool.quarantined) == (0, 1)
        assert await spool.requeue_quarantined() == 1
        assert (spool.depth, spool.quarantined) == (1, 0)


@pytest.mark.asyncio
async def test_local_store_keeps_points_and_exports_them_as_line_protocol(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    crossings: list[HighWater] = []
    async with Spool(path, forward=False, high_water=2, on_high_water=crossings.append) as store:
        await store.accept([point(n) for n in range(3)])
        await store.accept([point(0), point(3)])
        assert (store.depth, store.over_high_water, crossings) == (0, False, [])
        assert not await store.next_batch(10)
        exported = list(export_points(path))  # while the store is open: WAL readers are fine
    assert [p.line for p in exported] == lines([point(n) for n in range(4)])
    assert {p.state for p in exported} == {PointState.STORED}


@pytest.mark.asyncio
async def test_keep_delivered_marks_instead_of_deleting(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with Spool(path, keep_delivered=True) as spool:
        await spool.accept([point(1)])
        await spool.mark_delivered(await spool.next_batch(10))
        assert (await spool.accept([point(1)])).duplicates == 1  # already delivered: not resent
        assert spool.depth == 0
    assert [(p.line, p.state) for p in export_points(path)] == [
        (point(1).line, PointState.DELIVERED)
    ]


@pytest.mark.asyncio
async def test_bad_input_and_misuse_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty line"):
        SpoolPoint(PointKey.of("m", [], 1), "")
    with pytest.raises(ValueError, match="non-empty line"):
        SpoolPoint(PointKey.of("m", [], 1), "m v=1 1\nm v=2 2")
    with pytest.raises(SpoolError, match="not open"):
        await Spool(tmp_path / "spool.db").accept([point(1)])
    with pytest.raises(SpoolError, match="no spool"):
        list(export_points(tmp_path / "missing.db"))


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from monitor.storage.spool import PointKey, Spool, SpoolPoint

    async def main() -> None:
        async with Spool(Path(sys.argv[1])) as spool:
            n = 0
            while True:
                points = [
                    SpoolPoint(PointKey.of("m", [("series", "a")], i), f"m,series=a v={i} {i}")
                    for i in range(n, n + 25)
                ]
                await spool.accept(points)
                n += 25
                print(n, flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.asyncio
async def test_a_killed_process_loses_no_accepted_point(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(path), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    accepted = 0
    try:
        async with asyncio.timeout(20):
            while accepted < 500:
                line = await child.stdout.readline()
                assert line, "the child exited early"
                accepted = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    async with Spool(path) as survivor:
        assert survivor.depth >= accepted
        stored = [p.key.time_ns for p in export_points(path)]
    assert stored[:accepted] == list(range(accepted))
    assert stored == list(range(len(stored)))  # whole transactions only, no gaps, no repeats


@pytest.mark.asyncio
async def test_the_alarm_journal_survives_delivery_and_keeps_each_event_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    entries = [JournalEntry("S-1", n, f'{{"sequence": {n}}}') for n in (2, 1, 3)]
    async with Spool(path) as spool:
        await spool.accept([point(1)], journal=entries[:2])
        await spool.accept([], journal=[*entries, JournalEntry("S-2", 1, "{}")])
        await spool.mark_delivered(await spool.next_batch(10))  # the point goes, events stay
        assert spool.depth == 0
    async with Spool(path) as reopened:
        journal = await reopened.journal("S-1")
        assert [entry.sequence for entry in journal] == [1, 2, 3]
        assert journal[0] == JournalEntry("S-1", 1, '{"sequence": 1}')
        assert await reopened.journal("S-9") == []


@pytest.mark.asyncio
async def test_a_version_1_file_gains_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with Spool(path) as spool:
        await spool.accept([point(1)])
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE alarm_journal")
        db.execute("PRAGMA user_version = 1")
    async with Spool(path) as reopened:
        assert reopened.depth == 1
        await reopened.accept([], journal=[JournalEntry("S-1", 1, "{}")])
        assert len(await reopened.journal("S-1")) == 1


@pytest.mark.asyncio
async def test_a_full_disk_is_reported_as_such_and_nothing_is_half_accepted(tmp_path: Path) -> None:
    """Issue 9 item 4: SQLite's "database or disk is full" was hidden behind "cannot rollback -
    no transaction is active"."""
    with SmallFilesystem(tmp_path / "disk", size_kib=16384) as disk:
        path = disk.path / "spool.db"
        async with Spool(path) as spool:
            await spool.accept([point(n) for n in range(10)])
            disk.fill()
            big = [point(n, series="x" * 200) for n in range(10, 600)]
            with pytest.raises(SpoolError, match="database or disk is full"):
                await spool.accept(big)
            assert spool.depth == 10  # none of the failed batch counts as accepted
            disk.free()
            result = await spool.accept(big)
            assert (result.added, spool.depth) == (590, 600)
        async with Spool(path) as reopened:
            assert reopened.depth == 600

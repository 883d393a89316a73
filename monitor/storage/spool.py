"""The durable spool: every point is committed to SQLite before it counts as accepted.

InfluxDB can be down for hours during a session; readings and alarm events must not be lost when
it is, nor when the service itself is killed. So points go to a local SQLite file first (WAL
mode, ``synchronous = FULL``: a commit has reached the disk before :meth:`Spool.accept` returns),
and the writer drains the file in batches, deleting (or marking) a point only after InfluxDB has
acknowledged it.

A point's identity is InfluxDB's: measurement, tag set and timestamp. The ``key`` column is
``UNIQUE``, so a point accepted twice (a replay, a retry upstream) is stored once, and a different
point with the same identity replaces the stored one, exactly as InfluxDB would overwrite it.

SQLite calls block, so each :class:`Spool` owns one worker thread and that thread owns the one
connection; the event loop only awaits futures. The file is locked (``flock``) while a spool has
it open, so two services cannot drain the same file; the kernel drops the lock when a process
dies, so a killed service's successor opens it at once.

Without an InfluxDB server (``forward=False``) the same file is the local store: points are kept
as ``stored`` rather than queued, and :func:`export_points` reads them back as line protocol.

The file also keeps the alarm journal: every alarm event, by session and sequence number, in
the same transaction as its point and never deleted with delivery, so a service killed mid-session
restores its active alarms and acknowledgements from the file it was writing anyway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import enum
import fcntl
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Self, TypeVar

from monitor.clock import Clock, SystemClock
from monitor.throttle import LogThrottle

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_HOLD_S",
    "AcceptResult",
    "Batch",
    "HighWater",
    "HighWaterMark",
    "JournalEntry",
    "PointKey",
    "PointState",
    "Spool",
    "SpoolError",
    "SpoolLockedError",
    "SpoolPoint",
    "SpooledPoint",
    "StoredPoint",
    "export_points",
]

log = logging.getLogger(__name__)

DEFAULT_HIGH_WATER = 100_000
"""Undelivered points that mean InfluxDB has been away long enough for staff to be told."""

_SCHEMA_VERSION = 2  # 2 added the alarm journal; a version 1 file gains it on open
_REASON_CHARS = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    line TEXT NOT NULL,
    state INTEGER NOT NULL,
    rev INTEGER NOT NULL DEFAULT 0,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS points_by_state ON points (state, seq);
CREATE TABLE IF NOT EXISTS alarm_journal (
    session TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (session, sequence)
);
"""

T = TypeVar("T")


class SpoolError(Exception):
    """The spool could not do what was asked (disk full, a damaged file): nothing changed."""


class SpoolLockedError(SpoolError):
    """Another spool (in this or another process) has the file open."""


class PointState(enum.IntEnum):
    """Where a stored point is in its life; stored as an integer in the ``state`` column."""

    PENDING = 0  # waiting for InfluxDB
    DELIVERED = 1  # acknowledged by InfluxDB and kept (``keep_delivered``)
    QUARANTINED = 2  # InfluxDB rejected it as a bad point; kept for diagnosis, never resent alone
    STORED = 3  # local store only (``forward=False``): there is no InfluxDB to send it to


@dataclasses.dataclass(frozen=True, slots=True)
class PointKey:
    """InfluxDB's identity of a point: two points with the same key are the same point."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    time_ns: int

    @classmethod
    def of(cls, measurement: str, tags: Iterable[tuple[str, str]], time_ns: int) -> Self:
        """Tags sorted and empty values dropped, as the line-protocol serialiser does."""
        return cls(measurement, tuple(sorted((k, v) for k, v in tags if v)), time_ns)

    def encode(self) -> str:
        return json.dumps([self.measurement, self.tags, self.time_ns], separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Self:
        measurement, tags, time_ns = json.loads(text)
        return cls(measurement, tuple((str(k), str(v)) for k, v in tags), int(time_ns))


@dataclasses.dataclass(frozen=True, slots=True)
class SpoolPoint:
    """A point ready to be accepted: its identity and its line protocol."""

    key: PointKey
    line: str

    def __post_init__(self) -> None:
        if not self.line or "\n" in self.line:
            msg = f"a point must be one non-empty line of line protocol, got {self.line!r}"
            raise ValueError(msg)


@dataclasses.dataclass(frozen=True, slots=True)
class SpooledPoint:
    """A pending point as read back for delivery; ``rev`` detects a replacement in flight."""

    seq: int
    rev: int
    key: PointKey
    line: str


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """Pending points in acceptance order, delivered (or rejected) together."""

    points: tuple[SpooledPoint, ...]

    def __len__(self) -> int:
        return len(self.points)

    def __bool__(self) -> bool:
        return bool(self.points)

    @property
    def body(self) -> bytes:
        """The request body for either write endpoint."""
        return "\n".join(point.line for point in self.points).encode()

    def split(self) -> tuple[Batch, Batch]:
        """Halves, to find the point InfluxDB rejects without quarantining its neighbours."""
        middle = len(self.points) // 2
        return Batch(self.points[:middle]), Batch(self.points[middle:])


@dataclasses.dataclass(frozen=True, slots=True)
class StoredPoint:
    """A point as :func:`export_points` reads it back, for ``monitor export`` (lines or CSV)."""

    seq: int
    key: PointKey
    line: str
    state: PointState
    reason: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class AcceptResult:
    """What :meth:`Spool.accept` did: ``added + duplicates + replaced`` is the number of points."""

    added: int = 0
    duplicates: int = 0  # identical to a stored point: stored once
    replaced: int = 0  # same identity, different content: the newer one wins, as in InfluxDB


@dataclasses.dataclass(frozen=True, slots=True)
class JournalEntry:
    """One alarm event in the journal: the session's sequence number and the event as JSON."""

    session: str
    sequence: int
    event: str


@dataclasses.dataclass(frozen=True, slots=True)
class HighWater:
    """A crossing of the high-water mark; the service turns ``over=True`` into a technical alarm."""

    over: bool
    depth: int
    mark: int


DEFAULT_HOLD_S = 120.0
"""How long the depth must stay at or over the mark before it counts as a backlog."""


class HighWaterMark:
    """Whether the spool holds too many undelivered points, without flapping.

    A healthy writer drains in cycles: points pile up while one batch is in flight and drop to
    almost nothing when it lands. Judged on depth alone, a mark below one cycle's worth (a small
    mark, or accelerated time) would raise and clear the alarm every cycle. So the spool is over
    only once the depth has stayed at or above ``mark`` for ``hold_s`` (the writer has not caught
    up once in that time), and back under as soon as the depth falls below ``clear_below`` (it
    has caught up). Pure state: feed it depths with the time they were seen; it answers with a
    :class:`HighWater` only when the state flips.
    """

    __slots__ = ("_above_since", "clear_below", "hold_s", "mark", "over")

    def __init__(
        self, mark: int, clear_below: int | None = None, *, hold_s: float = DEFAULT_HOLD_S
    ) -> None:
        if mark < 1:
            msg = f"the high-water mark must be at least 1, got {mark}"
            raise ValueError(msg)
        below = clear_below if clear_below is not None else max(1, mark * 9 // 10)
        if not 1 <= below <= mark:
            msg = f"clear_below must be between 1 and the mark ({mark}), got {below}"
            raise ValueError(msg)
        if not hold_s >= 0:
            msg = f"hold_s must be at least 0, got {hold_s}"
            raise ValueError(msg)
        self.mark = mark
        self.clear_below = below
        self.hold_s = hold_s
        self.over = False
        self._above_since: float | None = None  # when the depth last reached the mark

    def update(self, depth: int, moment: float, *, held: bool = False) -> HighWater | None:
        """``moment``: a monotonic time in seconds (the service's clock); ``held``: the depth has
        already waited (a spool reopened with points from an earlier run), so no hold applies."""
        if held and depth >= self.mark:
            self._above_since = moment - self.hold_s
        if depth < self.mark:
            self._above_since = None
        elif self._above_since is None:
            self._above_since = moment
        if not self.over and self._above_since is not None:
            if moment - self._above_since < self.hold_s:
                return None
            self.over = True
        elif self.over and depth < self.clear_below:
            self.over = False
        else:
            return None
        return HighWater(over=self.over, depth=depth, mark=self.mark)


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    else:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA busy_timeout = 10000")
    return connection


class Spool:
    """The SQLite spool in front of the InfluxDB writer (or, with ``forward=False``, the store).

    Use as an async context manager. ``depth`` (undelivered points), ``quarantined`` and
    ``over_high_water`` are cheap properties, current when any awaited call returns;
    ``on_high_water`` runs on the event loop at each crossing of the mark (and at open, when the
    file is already over it). Not thread-safe: use one spool from one event loop.
    """

    def __init__(
        self,
        path: Path,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        clear_below: int | None = None,
        hold_s: float = DEFAULT_HOLD_S,
        clock: Clock | None = None,
        on_high_water: Callable[[HighWater], None] | None = None,
        forward: bool = True,
        keep_delivered: bool = False,
    ) -> None:
        self.path = path
        self.forward = forward
        self.keep_delivered = keep_delivered
        self._mark = HighWaterMark(high_water, clear_below, hold_s=hold_s)
        self._clock: Clock = SystemClock() if clock is None else clock
        # a gateway resending different values under one key must not flood the log
        self._replaced_log = LogThrottle(10.0)
        self._replaced_unlogged = 0
        self._on_high_water = on_high_water
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()  # replaced at each change: every waiter wakes once
        self._lock_file: IO[bytes] | None = None
        # Touched only by the worker thread; read from the loop (plain ints, atomic reads).
        self._connection: sqlite3.Connection | None = None
        self._pending = 0
        self._quarantined = 0

    # --- state ----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Points accepted and not yet acknowledged by InfluxDB."""
        return self._pending

    @property
    def quarantined(self) -> int:
        """Points InfluxDB rejected as bad, kept in the file (never dropped, never resent alone)."""
        return self._quarantined

    @property
    def over_high_water(self) -> bool:
        return self._mark.over

    @property
    def high_water_mark(self) -> int:
        return self._mark.mark

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._executor is not None:
            msg = "the spool is already open"
            raise SpoolError(msg)
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"spool-{self.path.name}"
        )
        try:
            await self._call(self._open_in_thread)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        log.info(
            "spool %s open: %d undelivered, %d quarantined", self.path, self.depth, self.quarantined
        )

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.wrap_future(executor.submit(self._close_in_thread))
        finally:
            executor.shutdown(wait=False)

    # --- the API the service and the writer call -------------------------------------------

    async def accept(
        self, points: Iterable[SpoolPoint], *, journal: Iterable[JournalEntry] = ()
    ) -> AcceptResult:
        """Commit ``points`` (and alarm ``journal`` entries) in one transaction; when this
        returns they survive a crash.

        Raises :class:`SpoolError` when the file cannot take them (disk full...): then none of
        them is accepted and the caller still holds them. Cancelled while the commit runs, the
        points may be accepted all the same; accepting them again is harmless (idempotent; a
        journal entry is kept once per session and sequence).
        """
        batch = tuple(points)
        entries = tuple(journal)
        if not batch and not entries:
            return AcceptResult()
        result = await self._call(lambda: self._accept_in_thread(batch, entries))
        self._replaced_unlogged += result.replaced
        if self._replaced_unlogged and self._replaced_log.ready(asyncio.get_running_loop().time()):
            log.warning(
                "%d point(s) replaced by a different point with the same measurement, tags "
                "and time; InfluxDB keeps only the newer",
                self._replaced_unlogged,
            )
            self._replaced_unlogged = 0
        return result

    async def journal(self, session: str) -> list[JournalEntry]:
        """The session's alarm journal in sequence order (empty for a session never run here)."""
        return await self._call(lambda: self._journal_in_thread(session))

    async def next_batch(self, limit: int) -> Batch:
        """The oldest ``limit`` pending points; they stay pending until marked."""
        if limit < 1:
            msg = f"limit must be at least 1, got {limit}"
            raise ValueError(msg)
        return await self._call(lambda: self._next_batch_in_thread(limit))

    async def mark_delivered(self, batch: Batch) -> int:
        """InfluxDB took ``batch``; a point replaced meanwhile stays pending in its new form."""
        return await self._call(lambda: self._mark_delivered_in_thread(batch))

    async def quarantine(self, batch: Batch, reason: str) -> int:
        """InfluxDB rejected ``batch`` as bad points: keep them, out of the queue, with why."""
        return await self._call(lambda: self._quarantine_in_thread(batch, reason))

    async def requeue_quarantined(self) -> int:
        """Put every quarantined point back in the queue (after the cause has been fixed)."""
        return await self._call(self._requeue_in_thread)

    async def wait_until(self, condition: Callable[[Spool], bool]) -> None:
        """Return once ``condition(spool)`` holds (``lambda s: s.depth == 0`` at shutdown...)."""
        while not condition(self):
            await self._changed.wait()

    async def wait_for_points(self) -> None:
        """Return once there is at least one pending point."""
        await self.wait_until(lambda spool: spool.depth > 0)

    # --- worker thread ----------------------------------------------------------------------

    async def _call(self, job: Callable[[], T]) -> T:
        if self._executor is None:
            msg = "the spool is not open (use it as an async context manager)"
            raise SpoolError(msg)
        try:
            return await asyncio.wrap_future(self._executor.submit(job))
        except sqlite3.Error as err:
            msg = f"spool {self.path}: {err}"
            raise SpoolError(msg) from err

    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None
        return self._connection

    def _open_in_thread(self) -> None:
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            msg = f"spool {self.path}: {folder} is not a folder"
            raise SpoolError(msg)
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = Path(f"{self.path}.lock").open("ab")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            msg = f"spool {self.path} is in use by another spool or process"
            raise SpoolLockedError(msg) from None
        self._lock_file = lock_file
        try:
            connection = _connect(self.path)
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, _SCHEMA_VERSION):
                connection.close()
                msg = f"spool {self.path} has schema version {version}, expected {_SCHEMA_VERSION}"
                raise SpoolError(msg)
            if version != _SCHEMA_VERSION:  # a current file is opened without a write (full disk)
                connection.executescript(_SCHEMA)
                connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            self._release_lock()
            raise
        self._connection = connection
        counts = dict(connection.execute("SELECT state, COUNT(*) FROM points GROUP BY state"))
        self._pending = counts.get(PointState.PENDING, 0)
        self._quarantined = counts.get(PointState.QUARANTINED, 0)
        self._after_change(reopened=True)

    def _close_in_thread(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        pending, quarantined = self._pending, self._quarantined
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (SQLITE_FULL among them); a ROLLBACK
            # then fails with "no transaction is active" and would hide the real cause.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self._pending, self._quarantined = pending, quarantined
            raise
        self._after_change()

    def _count(self, state: int, delta: int) -> None:
        if state == PointState.PENDING:
            self._pending += delta
        elif state == PointState.QUARANTINED:
            self._quarantined += delta

    def _after_change(self, *, reopened: bool = False) -> None:
        """Wake waiters and report a crossing, on the loop, even if the caller was cancelled."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._wake)
        change = self._mark.update(self._pending, self._clock.monotonic(), held=reopened)
        if change is not None:
            self._loop.call_soon_threadsafe(self._report, change)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _report(self, change: HighWater) -> None:
        if change.over:
            log.warning(
                "spool %s holds %d undelivered points (high-water mark %d)",
                self.path,
                change.depth,
                change.mark,
            )
        else:
            log.info("spool %s back under its high-water mark (%d points)", self.path, change.depth)
        if self._on_high_water is not None:
            self._on_high_water(change)

    def _accept_in_thread(
        self, points: Sequence[SpoolPoint], journal: Sequence[JournalEntry]
    ) -> AcceptResult:
        state = PointState.PENDING if self.forward else PointState.STORED
        added = duplicates = replaced = 0
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO alarm_journal (session, sequence, event) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(entry.session, entry.sequence, entry.event) for entry in journal],
            )
            for point in points:
                key = point.key.encode()
                inserted = db.execute(
                    "INSERT INTO points (key, line, state) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (key, point.line, state),
                ).rowcount
                if inserted:
                    added += 1
                    self._count(state, +1)
                    continue
                seq, line, old_state = db.execute(
                    "SELECT seq, line, state FROM points WHERE key = ?", (key,)
                ).fetchone()
                if line == point.line:
                    duplicates += 1
                    continue
                db.execute(
                    "UPDATE points SET line = ?, state = ?, rev = rev + 1, reason = NULL "
                    "WHERE seq = ?",
                    (point.line, state, seq),
                )
                replaced += 1
                self._count(old_state, -1)
                self._count(state, +1)
        return AcceptResult(added=added, duplicates=duplicates, replaced=replaced)

    def _journal_in_thread(self, session: str) -> list[JournalEntry]:
        rows = self._db().execute(
            "SELECT sequence, event FROM alarm_journal WHERE session = ? ORDER BY sequence",
            (session,),
        )
        return [JournalEntry(session, sequence, event) for sequence, event in rows]

    def _next_batch_in_thread(self, limit: int) -> Batch:
        rows = self._db().execute(
            "SELECT seq, rev, key, line FROM points WHERE state = ? ORDER BY seq LIMIT ?",
            (PointState.PENDING, limit),
        )
        return Batch(
            tuple(
                SpooledPoint(seq, rev, PointKey.decode(key), line) for seq, rev, key, line in rows
            )
        )

    def _settle(self, batch: Batch, sql: str, new_state: PointState | None, *extra: object) -> int:
        """Move in-flight points out of the queue, unless a replacement arrived meanwhile."""
        with self._transaction() as db:
            done = 0
            for point in batch.points:
                done += db.execute(sql, (*extra, point.seq, point.rev, PointState.PENDING)).rowcount
            self._count(PointState.PENDING, -done)
            if new_state is not None:
                self._count(new_state, +done)
            return done

    def _mark_delivered_in_thread(self, batch: Batch) -> int:
        if self.keep_delivered:
            sql = "UPDATE points SET state = ? WHERE seq = ? AND rev = ? AND state = ?"
            return self._settle(batch, sql, PointState.DELIVERED, PointState.DELIVERED)
        sql = "DELETE FROM points WHERE seq = ? AND rev = ? AND state = ?"
        return self._settle(batch, sql, None)

    def _quarantine_in_thread(self, batch: Batch, reason: str) -> int:
        sql = "UPDATE points SET state = ?, reason = ? WHERE seq = ? AND rev = ? AND state = ?"
        return self._settle(
            batch, sql, PointState.QUARANTINED, PointState.QUARANTINED, reason[:_REASON_CHARS]
        )

    def _requeue_in_thread(self) -> int:
        with self._transaction() as db:
            moved = db.execute(
                "UPDATE points SET state = ?, reason = NULL WHERE state = ?",
                (PointState.PENDING, PointState.QUARANTINED),
            ).rowcount
            self._count(PointState.QUARANTINED, -moved)
            self._count(PointState.PENDING, +moved)
            return moved


def export_points(
    path: Path, *, states: Iterable[PointState] | None = None
) -> Iterator[StoredPoint]:
    """Every point in a spool or local-store file, oldest first; blocking, for ``monitor export``.

    Opens the file read-only on its own connection, so it works while the service is running
    (WAL readers do not block the writer) and never changes what the service will deliver.
    """
    wanted = sorted({int(state) for state in (PointState if states is None else states)})
    if not path.is_file():
        msg = f"no spool at {path}"
        raise SpoolError(msg)
    connection = _connect(path, read_only=True)
    try:
        marks = ", ".join("?" * len(wanted))
        rows = connection.execute(
            f"SELECT seq, key, line, state, reason FROM points WHERE state IN ({marks}) "  # noqa: S608
            "ORDER BY seq",
            wanted,
        )
        for seq, key, line, state, reason in rows:
            yield StoredPoint(seq, PointKey.decode(key), line, PointState(state), reason)
    finally:
        connection.close()

"""What the spool cannot take yet, held in memory and offered again until it can.

A full disk or a file system turned read-only must not stop alarming: the service goes on
detecting and publishing, and the points (readings, device events, alarm events with their
journal entries) wait here. The first refusal and the recovery are reported once each
(:class:`StoreHealth`), so the service can raise and clear the ``storage-failed`` alarm; while
the store refuses, a retry is made at most every ``retry_s`` seconds of the service's clock,
with everything held and everything new in one transaction, so nothing is written twice or out
of step with its journal entry.

Memory is bounded: past ``limit`` held points, the oldest readings and device events are
discarded, counted and logged at ERROR (the staff already see the ``storage-failed`` alarm, and
a ``--record`` folder on another disk still has them). Alarm events and their journal entries
are never discarded.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Iterable

from monitor.clock import Clock
from monitor.storage.spool import JournalEntry, Spool, SpoolError, SpoolPoint
from monitor.throttle import LogThrottle

__all__ = ["DEFAULT_HELD_LIMIT", "HoldingSpool", "StoreHealth"]

DEFAULT_HELD_LIMIT = 500_000
"""Points held in memory before the oldest readings go: about 250 MB, hours of a large session."""

DEFAULT_RETRY_S = 1.0

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class StoreHealth:
    """The store refused a write (``failed``) or took everything held again."""

    failed: bool
    held: int
    reason: str = ""


class HoldingSpool:
    """The service's way into the spool: :meth:`accept` never raises for a refused write."""

    def __init__(
        self,
        spool: Spool,
        clock: Clock,
        *,
        on_health: Callable[[StoreHealth], None] | None = None,
        limit: int = DEFAULT_HELD_LIMIT,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> None:
        if limit < 1:
            msg = f"limit must be at least 1, got {limit}"
            raise ValueError(msg)
        self.spool = spool
        self._clock = clock
        self._on_health = on_health
        self._limit = limit
        self._retry_s = retry_s
        self._ordinary: collections.deque[SpoolPoint] = collections.deque()
        self._precious: list[SpoolPoint] = []  # alarm events: never discarded
        self._journal: list[JournalEntry] = []
        self._failure: str | None = None
        self._next_try = 0.0
        self._discards_logged = LogThrottle(60.0)
        self.discarded = 0

    @property
    def held(self) -> int:
        """Points waiting in memory for the store."""
        return len(self._ordinary) + len(self._precious)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    async def accept(
        self,
        points: Iterable[SpoolPoint],
        *,
        journal: Iterable[JournalEntry] = (),
        precious: bool = False,
    ) -> None:
        """Store ``points`` now, or hold them while the store refuses (see the module doc)."""
        (self._precious if precious else self._ordinary).extend(points)
        self._journal.extend(journal)
        if self._failure is not None and self._clock.monotonic() < self._next_try:
            self._bound()
            return
        await self.retry()

    async def retry(self) -> None:
        """Offer everything held to the store once (a no-op with nothing held)."""
        if not self.held and not self._journal:
            return
        points = [*self._precious, *self._ordinary]
        journal = list(self._journal)
        try:
            await self.spool.accept(points, journal=journal)
        except SpoolError as error:
            self._next_try = self._clock.monotonic() + self._retry_s
            self._bound()
            if self._failure is None:
                self._failure = str(error)
                log.error(
                    "the store refuses writes (%s): %d points held in memory, retried every "
                    "%.0f s; alarms are still published",
                    error,
                    self.held,
                    self._retry_s,
                )
                self._report(StoreHealth(failed=True, held=self.held, reason=str(error)))
            return
        self._ordinary.clear()
        del self._precious[: len(self._precious)]
        del self._journal[: len(journal)]
        if self._failure is not None:
            log.info("the store takes writes again: %d held points written", len(points))
            self._failure = None
            self._report(StoreHealth(failed=False, held=0))

    def close_report(self) -> None:
        """At exit: what could never be stored is said, never dropped in silence."""
        if self.held or self.discarded:
            log.error(
                "%d points held in memory were never stored (the store kept refusing: %s) and "
                "%d were discarded over the memory bound; a --record folder has them",
                self.held,
                self._failure,
                self.discarded,
            )

    def _bound(self) -> None:
        excess = self.held - self._limit
        if excess <= 0:
            return
        dropped = min(excess, len(self._ordinary))
        for _ in range(dropped):
            self._ordinary.popleft()
        self.discarded += dropped
        if self._discards_logged.ready(self._clock.monotonic()):
            log.error(
                "held readings and device events discarded: %d points held in memory is the "
                "bound while the store refuses writes (%d discarded in all)",
                self._limit,
                self.discarded,
            )

    def _report(self, health: StoreHealth) -> None:
        if self._on_health is not None:
            self._on_health(health)

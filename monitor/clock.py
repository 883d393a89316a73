"""The one clock: nothing else in the service reads the wall clock or sleeps on real time.

Detection, replay and the simulators take a :class:`Clock`, so a six-hour session can run in
seconds (``AcceleratedClock``) or step by step in a test (``ManualClock``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["AcceleratedClock", "Clock", "FollowingClock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """What the service needs from time."""

    def now(self) -> dt.datetime:
        """Current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; for intervals and timeouts."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AcceleratedClock:
    """Real time sped up ``speed`` times from ``start``: x60 runs an hour of session in a minute."""

    def __init__(self, start: dt.datetime, speed: float) -> None:
        if start.tzinfo is None:
            msg = "start must be timezone-aware"
            raise ValueError(msg)
        if speed <= 0:
            msg = f"speed must be positive, got {speed}"
            raise ValueError(msg)
        self.speed = speed
        self._start = start.astimezone(dt.UTC)
        self._origin = time.monotonic()

    def monotonic(self) -> float:
        return (time.monotonic() - self._origin) * self.speed

    def now(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speed)


class FollowingClock:
    """Another process's :class:`AcceleratedClock`, followed from a time it stamped.

    ``monitor detect`` beside gateways that run a simulation at xN: until :meth:`follow` is
    first called this is real time; from then on it runs N times faster from the stamped time
    (a batch's ``sent_at``), off by no more than the message's transit times N.
    """

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            msg = f"speed must be positive, got {speed}"
            raise ValueError(msg)
        self.speed = speed
        self._origin = time.monotonic()
        self._anchor: tuple[dt.datetime, float] | None = None

    @property
    def following(self) -> bool:
        return self._anchor is not None

    def follow(self, stamped: dt.datetime) -> None:
        """The other clock read ``stamped`` just now; the first call sets this clock."""
        if self._anchor is None:
            self._anchor = (stamped.astimezone(dt.UTC), time.monotonic())

    def monotonic(self) -> float:
        return (time.monotonic() - self._origin) * self.speed

    def now(self) -> dt.datetime:
        if self._anchor is None:
            return dt.datetime.now(dt.UTC)
        stamped, at = self._anchor
        return stamped + dt.timedelta(seconds=(time.monotonic() - at) * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speed)


class ManualClock:
    """Time that moves only when a test calls :meth:`advance`; sleepers wake in order."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            msg = "start must be timezone-aware"
            raise ValueError(msg)
        self._start = start.astimezone(dt.UTC)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._elapsed

    def now(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=self._elapsed)

    async def sleep(self, seconds: float) -> None:
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + max(seconds, 0.0), next(self._order), wake))
        await wake

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline and letting it run."""
        target = self._elapsed + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, wake = heapq.heappop(self._sleepers)
            self._elapsed = max(self._elapsed, deadline)
            if not wake.done():
                wake.set_result(None)
            await asyncio.sleep(0)
        self._elapsed = target

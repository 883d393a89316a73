"""Injectable clocks: the manual clock wakes sleepers in deadline order, on demand."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from monitor.clock import AcceleratedClock, FollowingClock, ManualClock, SystemClock

START = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_manual_clock_wakes_sleepers_in_order() -> None:
    clock = ManualClock(START)
    woken: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woken.append((name, clock.monotonic()))

    async with asyncio.TaskGroup() as group:
        group.create_task(sleeper("late", 30))
        group.create_task(sleeper("early", 10))
        await asyncio.sleep(0)
        await clock.advance(20)
        assert woken == [("early", 10)]
        await clock.advance(20)
    assert woken == [("early", 10), ("late", 30)]
    assert clock.now() == START + dt.timedelta(seconds=40)


def test_clocks_refuse_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(START.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        AcceleratedClock(START.replace(tzinfo=None), speed=60)


def test_accelerated_clock_refuses_non_positive_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        AcceleratedClock(START, speed=0)


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_accelerated_clock_runs_faster_than_real_time() -> None:
    clock = AcceleratedClock(START, speed=1000)
    before = clock.monotonic()
    await clock.sleep(5)
    assert clock.monotonic() - before >= 5
    assert clock.now() >= START + dt.timedelta(seconds=5)


def test_system_clock_is_aware_utc() -> None:
    assert SystemClock().now().tzinfo is dt.UTC


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_a_following_clock_takes_the_other_clock_from_its_first_stamp() -> None:
    clock = FollowingClock(speed=1000)
    assert not clock.following
    assert abs(clock.now() - SystemClock().now()) < dt.timedelta(seconds=5)  # real time till then
    clock.follow(START)
    clock.follow(START + dt.timedelta(days=1))  # later stamps do not move it
    assert clock.following
    await clock.sleep(5)
    assert START + dt.timedelta(seconds=5) <= clock.now() < START + dt.timedelta(hours=1)
    with pytest.raises(ValueError, match="speed"):
        FollowingClock(speed=0)

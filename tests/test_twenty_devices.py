"""Twenty wearables on one virtual adapter for a simulated hour: every delivered reading decoded."""

from __future__ import annotations

import pytest

from monitor.clock import AcceleratedClock
from monitor.models import DeviceKind
from simulators.scenario import load_scenario
from tests.test_simulated_session import CLOCK_START, assert_nothing_lost, connects, run_window

pytestmark = [pytest.mark.ble, pytest.mark.slow]

PARTICIPANTS = ("P-001", "P-002", "P-003", "P-004", "P-005")


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_twenty_wearables_for_an_hour_at_x60_lose_nothing() -> None:
    session, collector, connector = await run_window(
        load_scenario("multi-room"),
        AcceleratedClock(CLOCK_START, 60),
        end_s=3600,
        participants=PARTICIPANTS,
        max_links=20,
        session_timeout_s=120,
    )

    assert len(session.wearables) == 20
    assert {code for code, _ in session.keys} == set(PARTICIPANTS)
    assert {kind for _, kind in session.keys} == set(DeviceKind)
    for code, kind in session.keys:
        device = session.models[code].device_name(kind)
        assert connects(collector, device) >= 1, device
    assert_nothing_lost(session, collector)
    assert connector.stats.dropped == 0
    assert connector.stats.malformed == 0
    assert connector.stats.unknown_characteristic == 0
    delivered = sum(sum(counts.values()) for counts in session.delivered.values())
    assert delivered > 20 * 1000  # ten 1 Hz streams for most of an hour, and the rest
    assert connector.stats.notifications == delivered + connector.stats.connects  # battery reads

"""The one retry delay shared by the BLE connector, the MQTT link and the InfluxDB writer."""

from __future__ import annotations

import random

import pytest

from monitor.backoff import Backoff
from monitor.devices.connector import RECONNECT_BACKOFF as BLE
from monitor.devices.connector import ConnectorSettings
from monitor.mqtt.client import RECONNECT_BACKOFF as MQTT


def test_delays_double_from_initial_up_to_the_cap_within_the_jitter() -> None:
    backoff = Backoff(initial_s=0.25, max_s=3.0, factor=2.0, jitter=0.5)
    rng = random.Random(3)
    for attempt in range(80):
        ceiling = min(3.0, 0.25 * 2**attempt)
        delays = {backoff.delay(attempt, rng) for _ in range(30)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), attempt
        assert len(delays) > 1


def test_full_jitter_reaches_down_to_zero() -> None:
    backoff = Backoff(initial_s=1.0, max_s=1.0, jitter=1.0)
    rng = random.Random(5)
    delays = [backoff.delay(0, rng) for _ in range(500)]
    assert all(0.0 <= delay <= 1.0 for delay in delays)
    assert min(delays) < 0.05


def test_scaled_starts_later_or_sooner_but_keeps_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=4.0, jitter=0.0)
    rng = random.Random(0)
    assert backoff.scaled(0.5).delay(0, rng) == 0.25
    assert backoff.scaled(4.0).delay(1, rng) == 4.0
    assert backoff.scaled(100.0).initial_s == 4.0


@pytest.mark.parametrize(
    "settings",
    [
        {"initial_s": 0.0},
        {"initial_s": 5.0, "max_s": 1.0},
        {"factor": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_nonsense_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(**settings)


def test_every_link_uses_the_one_helper() -> None:
    """One name for the cap (``max_s``) everywhere: BLE, MQTT and InfluxDB (its default)."""
    assert ConnectorSettings().backoff is BLE
    assert isinstance(BLE, Backoff) and isinstance(MQTT, Backoff)
    assert (BLE.max_s, MQTT.max_s, Backoff().max_s) == (30.0, 4.0, 30.0)

"""The one retry delay: capped exponential backoff with jitter, for BLE, MQTT and InfluxDB.

Each link that reconnects (a wearable, the broker, the database) waits ``initial_s`` doubling up
to ``max_s`` between failed attempts. The cap bounds how long after the other side returns the
link is back; the jitter keeps a ward of monitors and gateways from retrying in lock step after
an outage. Pure and stdlib only (the caller's clock sleeps, the caller's generator draws), so
every room may use it and tests can seed it.
"""

from __future__ import annotations

import dataclasses
import random

__all__ = ["Backoff"]

_MAX_EXPONENT = 64
"""Past this the ceiling is the cap for any sane setting; it keeps ``factor ** attempt`` finite."""


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Delays ``initial_s * factor**attempt`` capped at ``max_s``, each drawn from
    ``[ceiling * (1 - jitter), ceiling]``: ``jitter=1`` is "full jitter" (any wait down to 0)."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s and self.factor >= 1 and 0 <= self.jitter <= 1):
            msg = f"invalid backoff {self}"
            raise ValueError(msg)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number ``attempt`` (0 for the first after a failure)."""
        ceiling = min(self.max_s, self.initial_s * self.factor ** min(attempt, _MAX_EXPONENT))
        return rng.uniform(ceiling * (1 - self.jitter), ceiling)

    def scaled(self, scale: float) -> Backoff:
        """The same backoff starting ``scale`` times later or sooner (still capped at ``max_s``):
        for a cause that mends slower or faster than the usual one."""
        return dataclasses.replace(self, initial_s=min(self.max_s, self.initial_s * scale))

"""A log throttle: a repeating problem (garbage commands, a full outbox) must not flood the log."""

from __future__ import annotations

__all__ = ["LogThrottle"]


class LogThrottle:
    """At most one log line per ``interval_s`` for a repeating problem, with a count of the rest."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: float | None = None
        self.suppressed = 0

    def ready(self, now: float) -> bool:
        if self._last is None or now - self._last >= self.interval_s:
            self._last = now
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count

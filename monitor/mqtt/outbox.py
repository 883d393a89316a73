"""The local outbox: every message waits here until the broker has acknowledged it.

Publishing must never block detection and must not lose a QoS 1 message while the broker is away,
so messages queue here in order and leave only on PUBACK; after a reconnect the unacknowledged ones
go first, in their original order (at least once: the receiver may see a message twice).

The outbox is bounded. What happens when it is full is a clinical decision, taken here once:

1. A retained message replaces the queued message of the same topic (a snapshot or a status is
   worth sending only in its latest version). This is not a loss: it is counted as *superseded*.
2. Otherwise the oldest queued message of the least important class goes, if that class is not
   more important than the new message's: telemetry (readings, device events) before command
   replies before alarm events and escalations before retained state. Readings and alarm events
   are also persisted locally, so what MQTT drops is not gone from the record.
3. If everything queued is more important than the new message, the new message is dropped.

Every drop is counted per class, and the link logs it at ERROR level.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["Outbox", "Outgoing", "Priority", "PutResult"]


class Priority(enum.IntEnum):
    """How much a message matters when the outbox must drop one (higher is kept longer)."""

    TELEMETRY = 0
    REPLY = 1
    ALARM = 2
    STATE = 3


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message as queued; ``key`` orders the outbox (lower was published earlier)."""

    key: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    priority: Priority
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class PutResult:
    """What :meth:`Outbox.put` had to do: at most one of the fields is set."""

    superseded: Outgoing | None = None
    evicted: Outgoing | None = None
    rejected: bool = False


@dataclass(slots=True)
class Outbox:
    """Pending messages per priority class, plus those in flight on the current connection."""

    capacity: int
    _next_key: int = 0
    _pending: list[OrderedDict[int, Outgoing]] = field(
        default_factory=lambda: [OrderedDict() for _ in Priority]
    )
    _inflight: dict[int, Outgoing] = field(default_factory=dict)
    _retained: dict[str, int] = field(default_factory=dict)  # topic -> key of its latest message

    def __post_init__(self) -> None:
        if self.capacity < 1:
            msg = f"the outbox needs room for at least one message, got {self.capacity}"
            raise ValueError(msg)

    def __len__(self) -> int:
        return self.pending + len(self._inflight)

    @property
    def pending(self) -> int:
        """Messages not yet handed to the connection."""
        return sum(len(queue) for queue in self._pending)

    @property
    def inflight(self) -> int:
        """Messages sent on the current connection and not yet acknowledged."""
        return len(self._inflight)

    def holds_retained(self, topic: str) -> bool:
        """Whether a retained message of ``topic`` is queued or in flight."""
        return topic in self._retained

    def put(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        priority: Priority,
        now: float,
    ) -> PutResult:
        """Queue a message (see the module docstring for what happens when the outbox is full)."""
        message = Outgoing(self._next_key, topic, payload, qos, retain, priority, now)
        self._next_key += 1
        superseded: Outgoing | None = None
        if retain and (old_key := self._retained.get(topic)) is not None:
            superseded = self._remove_pending(old_key)
        evicted: Outgoing | None = None
        if superseded is None and len(self) >= self.capacity:
            evicted = self._evict(priority)
            if evicted is None:
                return PutResult(rejected=True)
        self._pending[priority][message.key] = message
        if retain:
            self._retained[topic] = message.key
        return PutResult(superseded=superseded, evicted=evicted)

    def take(self) -> Outgoing | None:
        """The oldest pending message, now in flight; ``None`` when nothing is pending."""
        heads = [(next(iter(queue)), queue) for queue in self._pending if queue]
        if not heads:
            return None
        key, queue = min(heads, key=lambda head: head[0])
        message = queue.pop(key)
        self._inflight[key] = message
        return message

    def acknowledged(self, key: int) -> Outgoing | None:
        """The broker has the message: it leaves the outbox for good."""
        message = self._inflight.pop(key, None)
        if message is not None and message.retain and self._retained.get(message.topic) == key:
            del self._retained[message.topic]
        return message

    def requeue(self) -> int:
        """The connection is gone: messages in flight go back to the front, in order.

        A retained message that a newer one of its topic superseded while it was in flight is
        dropped instead. Returns how many messages went back.
        """
        back = sorted(self._inflight.values(), key=lambda message: message.key, reverse=True)
        self._inflight.clear()
        count = 0
        for message in back:
            if message.retain and self._retained.get(message.topic) != message.key:
                continue
            queue = self._pending[message.priority]
            queue[message.key] = message
            queue.move_to_end(message.key, last=False)
            count += 1
        return count

    def _remove_pending(self, key: int) -> Outgoing | None:
        for queue in self._pending:
            if key in queue:
                return queue.pop(key)
        return None  # in flight: requeue() drops it if the connection fails before its PUBACK

    def _evict(self, incoming: Priority) -> Outgoing | None:
        for priority in Priority:
            if priority > incoming:
                return None
            queue = self._pending[priority]
            if queue:
                _, message = queue.popitem(last=False)
                if message.retain and self._retained.get(message.topic) == message.key:
                    del self._retained[message.topic]
                return message
        return None

"""Small pure state machines at the MQTT edge: batch numbering, loss counting, escalation routing.

They do no I/O, so the gateway, the detector and the tests can share them and the rules they
encode (what counts as loss, what goes to the medical monitor) are written down once.
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from monitor.models import AlarmEvent, AlarmPriority, AlarmState, Reading
from monitor.mqtt.payloads import EscalationMessage, EscalationReason, VitalsBatch

__all__ = [
    "MAX_REMEMBERED_GAPS",
    "BatchNumbering",
    "EscalationTracker",
    "SequenceStats",
    "SequenceTracker",
    "escalation_reason",
]

MAX_REMEMBERED_GAPS = 4096
"""Gap ranges remembered per stream: a late batch in an older gap counts as a duplicate."""


class BatchNumbering:
    """A gateway's numbering of its batches: one counter per (session, participant) topic."""

    def __init__(self, gateway: str, run: uuid.UUID | None = None) -> None:
        self.gateway = gateway
        self.run = run if run is not None else uuid.uuid4()
        self._next: dict[tuple[str, str], int] = {}

    def batch(self, readings: Sequence[Reading], sent_at: dt.datetime) -> VitalsBatch:
        """The next batch of one participant's readings (all of one session and participant)."""
        if not readings:
            msg = "a batch needs at least one reading"
            raise ValueError(msg)
        key = (readings[0].session, readings[0].participant)
        sequence = self._next.get(key, 1)
        batch = VitalsBatch(
            gateway=self.gateway,
            run=self.run,
            sequence=sequence,
            session=key[0],
            participant=key[1],
            sent_at=sent_at,
            readings=tuple(readings),
        )
        self._next[key] = sequence + 1
        return batch


@dataclass(slots=True)
class SequenceStats:
    """What the receiver saw of the gateways' numbering.

    ``lost`` counts batches missing right now: a late batch that fills a gap takes it back (and
    counts as ``late``). ``forgotten`` counts missing batches whose gap fell out of the bounded
    record (they stay in ``lost`` for good, and a late copy of one counts as a duplicate).
    ``restarts`` counts new gateway runs, which restart numbering at 1.
    """

    batches: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    restarts: int = 0
    streams: int = 0
    forgotten: int = 0


@dataclass(slots=True)
class _Stream:
    """One stream's numbering: the highest number seen and the gaps below it, as sorted,
    disjoint, half-open ``(first, end)`` ranges, so a gap costs the same whatever its size."""

    run: uuid.UUID
    highest: int
    gaps: list[tuple[int, int]] = field(default_factory=list)


class SequenceTracker:
    """Counts lost, late and duplicate batches per (gateway, session, participant) stream.

    QoS 1 delivers at least once, so duplicates are expected after a reconnect and are not an
    error; the caller should skip a batch :meth:`observe` calls a duplicate.

    A sequence number comes from outside and may be anything the payload allows: gaps are counted
    by arithmetic and remembered as ranges, at most ``max_gaps`` per stream (the oldest are
    forgotten first), so one batch costs O(log max_gaps) whatever its number and a hostile jump
    costs one range, not one entry per missing number.
    """

    def __init__(self, max_gaps: int = MAX_REMEMBERED_GAPS) -> None:
        if max_gaps < 1:
            msg = "the tracker must remember at least one gap"
            raise ValueError(msg)
        self.stats = SequenceStats()
        self._max_gaps = max_gaps
        self._streams: dict[tuple[str, str, str], _Stream] = {}

    def observe(self, batch: VitalsBatch) -> bool:
        """Record a batch; ``False`` when it is a duplicate the caller should not use again."""
        self.stats.batches += 1
        key = (batch.gateway, batch.session, batch.participant)
        stream = self._streams.get(key)
        sequence = batch.sequence
        if stream is None:
            # the first batch this receiver sees sets the baseline: what came before it was sent
            # before the receiver listened, not lost on the way
            self.stats.streams += 1
            self._streams[key] = _Stream(batch.run, sequence)
            return True
        if stream.run != batch.run:
            # a gateway restart numbers from 1 again: batches of the new run before this one are
            # lost (the old run's tail cannot be told apart from a clean stop)
            self.stats.restarts += 1
            stream = self._streams[key] = _Stream(batch.run, 0)
        if sequence > stream.highest:
            if sequence > stream.highest + 1:
                self.stats.lost += sequence - stream.highest - 1
                stream.gaps.append((stream.highest + 1, sequence))
                self._trim(stream)
            stream.highest = sequence
            return True
        index = bisect.bisect_right(stream.gaps, sequence, key=lambda gap: gap[0]) - 1
        if index < 0 or not stream.gaps[index][0] <= sequence < stream.gaps[index][1]:
            self.stats.duplicates += 1
            return False
        first, end = stream.gaps[index]
        stream.gaps[index : index + 1] = [
            gap for gap in ((first, sequence), (sequence + 1, end)) if gap[0] < gap[1]
        ]
        self.stats.lost -= 1
        self.stats.late += 1
        self._trim(stream)
        return True

    def _trim(self, stream: _Stream) -> None:
        """Forget the oldest gaps of a long, patchy outage: they stay counted as lost, for good."""
        excess = len(stream.gaps) - self._max_gaps
        if excess > 0:
            self.stats.forgotten += sum(end - first for first, end in stream.gaps[:excess])
            del stream.gaps[:excess]


def escalation_reason(event: AlarmEvent) -> EscalationReason | None:
    """Whether an event on its own belongs on the escalation topic, and why.

    Active (so announced and unacknowledged) with ``escalation_level > 0``: escalated. Active at
    high priority: high_priority. Pending alarms are not announced yet and never go there.
    """
    if event.state is not AlarmState.ACTIVE:
        return None
    if event.escalation_level > 0:
        return EscalationReason.ESCALATED
    if event.priority is AlarmPriority.HIGH:
        return EscalationReason.HIGH_PRIORITY
    return None


class EscalationTracker:
    """Decides which alarm events go to the medical monitor.

    An event goes there when :func:`escalation_reason` says so, and afterwards every later event of
    the same alarm (acknowledged, priority fell, resolved) goes there too as ``update``, until it
    resolves: a medical monitor paged for an alarm must also learn that it was handled. An event
    with ``escalation_level > 0`` in any state is also an update (the level is kept after the
    acknowledgement), which covers alarms escalated before a restart.
    """

    def __init__(self) -> None:
        self._followed: set[uuid.UUID] = set()

    def seed(self, active: Iterable[AlarmEvent]) -> None:
        """After a restart: follow the current alarms that would have been sent here."""
        for event in active:
            if escalation_reason(event) is not None or event.escalation_level > 0:
                self._followed.add(event.alarm_id)

    def route(self, event: AlarmEvent) -> EscalationMessage | None:
        """The escalation message for this event, or ``None`` if the medical monitor skips it."""
        reason = escalation_reason(event)
        followed = event.alarm_id in self._followed
        if reason is None and (followed or event.escalation_level > 0):
            reason = EscalationReason.UPDATE
        if event.state is AlarmState.RESOLVED:
            self._followed.discard(event.alarm_id)
        elif reason is not None:
            self._followed.add(event.alarm_id)
        return None if reason is None else EscalationMessage(reason=reason, event=event)

"""Readings in, alarm events out: one session's detection, as the service, replay and score run it.

Turns :class:`~monitor.models.Reading` objects into sample batches for a :class:`Detector` (the
numpy engine, or the reference for checking), drives its ticks on a fixed grid of data time, and
passes condition updates through the :class:`AlarmLifecycle`. Pure: time comes with the input.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from monitor.alerts.engine import Engine
from monitor.alerts.inputs import Detector, SampleBatch
from monitor.alerts.lifecycle import AlarmLifecycle, FutureTimeError
from monitor.alerts.rules import ConditionStatus, ConditionUpdate, RuleSet, StalenessSpec
from monitor.models import DETECTION_PARAMETERS, EVIDENCE_KINDS, AlarmEvent, Consciousness, Reading

__all__ = ["MAX_SESSION_S", "DetectionPipeline", "PipelineStats", "restore_settle_s", "to_ms"]

MAX_SESSION_S = 24 * 3600
"""Sessions last at most this long (docs/detection.md section 1): without a clock to compare
with, input later than this after the origin belongs to no session and is refused."""

_PARAMETER_INDEX = {parameter: index for index, parameter in enumerate(DETECTION_PARAMETERS)}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
_NEVER_MS = 2**62  # later than any tick: nothing due

_Row = tuple[int, int, int, float, bool]


def to_ms(moment: dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime (the detector's time unit), exactly."""
    return (moment - _EPOCH) // _MS


@dataclass(slots=True)
class PipelineStats:
    """What went in and what came out, for summaries and metrics.

    ``out_of_order`` counts readings received earlier than input the detector had already seen:
    detection needs global time order (docs/detection.md section 1), so they are counted and left
    out rather than given a time they did not have. ``future`` counts inputs (readings, samples,
    markers, entries) stamped past the pipeline's horizon, refused for the same reason the other
    way round; ``future_stream`` names the stream of the latest such reading, for the log.
    """

    readings: int = 0
    samples: int = 0
    unknown_participant: int = 0
    ticks: int = 0
    alarm_events: int = 0
    participants: set[str] = field(default_factory=set)
    out_of_order: int = 0
    future: int = 0
    future_stream: str = ""


def restore_settle_s(rules: RuleSet) -> int:
    """How long restored alarms keep their last condition (:meth:`DetectionPipeline.restore`)."""
    present = [rule for row in rules.rules for rule in row if rule is not None]
    stale = [r.spec.stale_after_s for r in present if isinstance(r.spec, StalenessSpec)]
    return max(stale, default=0) + max((rule.delay_s for rule in present), default=0)


class DetectionPipeline:
    """Detection for one session: feed readings in time order, collect alarm events.

    Ticks run at every multiple of ``tick_ms`` of data time after the origin; a tick at ``t``
    follows every reading received at or before ``t`` (docs/detection.md section 1), so it runs
    only once a later reading arrives or :meth:`advance` reaches ``t``.

    ``horizon`` gives the latest time input may carry, in epoch ms: the service's clock plus the
    allowed skew; without it, :data:`MAX_SESSION_S` after the origin (replay, tools). Later input
    would drag session time along with it, so it is counted and refused, never evaluated.
    """

    def __init__(
        self,
        rules: RuleSet,
        *,
        session: str,
        origin: dt.datetime,
        tick_s: float = 1.0,
        detector: Callable[[RuleSet, int], Detector] | None = None,
        sequence_start: int = 1,
        horizon: Callable[[], int] | None = None,
    ) -> None:
        tick_ms = round(tick_s * 1000)
        if tick_ms < 1:
            msg = f"ticks need a period of at least 1 ms, got {tick_s} s"
            raise ValueError(msg)
        self.rules = rules
        self.session = session
        self.origin_ms = to_ms(origin)
        session_end_ms = self.origin_ms + MAX_SESSION_S * 1000
        self._horizon = horizon or (lambda: session_end_ms)
        self.tick_ms = tick_ms
        make = detector or (lambda r, o: Engine(r, origin_ms=o))
        self.detector = make(rules, self.origin_ms)
        self.lifecycle = AlarmLifecycle(rules, session=session, sequence_start=sequence_start)
        self.stats = PipelineStats()
        # Detection's current non-clear conditions, kept only between restore() and the
        # reconcile they are for.
        self._conditions: dict[tuple[int, int], ConditionUpdate] = {}
        self._reconcile_at_ms: int | None = None
        self._participant_index = {code: i for i, code in enumerate(rules.participants)}
        self._next_tick_ms = (self.origin_ms // self.tick_ms + 1) * self.tick_ms
        self._last_ms: int | None = None  # latest time the detector has been given

    # -- inputs -----------------------------------------------------------------------------

    def feed(self, readings: Iterable[Reading]) -> list[AlarmEvent]:
        """Readings of this session, in ``received_at`` order; returns the alarm events caused.

        Give the readings of one instant in one call: the lifecycle evaluates a participant's
        updates of one time together (two tiers met at once give one event), within a call.
        """
        events: list[AlarmEvent] = []
        rows: list[_Row] = []
        horizon_ms = self._horizon()
        for reading in readings:
            self.stats.readings += 1
            participant = self._participant_index.get(reading.participant)
            if participant is None or reading.session != self.session:
                self.stats.unknown_participant += 1
                continue
            self.stats.participants.add(reading.participant)
            t_ms = to_ms(reading.received_at)
            if t_ms > horizon_ms:
                self.stats.future += 1
                self.stats.future_stream = (
                    f"{reading.participant} {reading.kind} from device {reading.device}"
                )
                continue
            if self._last_ms is not None and t_ms < self._last_ms:
                self.stats.out_of_order += 1
                continue
            if t_ms > self._next_tick_ms:
                events += self._ingest(rows)
                rows = []
                events += self.advance_ms(t_ms - 1)
            self._last_ms = t_ms
            if reading.kind not in EVIDENCE_KINDS:
                continue  # cuff inflation, intermediate temperature, battery: no samples
            flagged = not reading.usable
            for parameter, value in reading.values.items():
                index = _PARAMETER_INDEX.get(parameter)
                if index is None:
                    continue
                number = math.nan if value is None else value
                rows.append((t_ms, participant, index, number, flagged))
        events += self._ingest(rows)
        return events

    def feed_samples(self, batch: SampleBatch) -> list[AlarmEvent]:
        """Samples already fanned out of readings, as :meth:`feed` would make them.

        For tools that build whole sessions as columns (``monitor score`` generates millions of
        samples, and a :class:`Reading` object each would cost more than detection). Same tick
        interleaving and the same out-of-order rule as :meth:`feed`; ``participant`` indexes
        this pipeline's rule set.
        """
        t_ms = batch.t_ms
        start = 0
        stop = int(np.searchsorted(t_ms, self._horizon(), side="right"))
        self.stats.future += len(batch) - stop
        if self._last_ms is not None and stop and int(t_ms[0]) < self._last_ms:
            start = min(stop, int(np.searchsorted(t_ms, self._last_ms, side="left")))
            self.stats.out_of_order += start
        events: list[AlarmEvent] = []
        while start < stop:
            first_ms = int(t_ms[start])
            if first_ms > self._next_tick_ms:
                events += self.advance_ms(first_ms - 1)
            end = min(stop, int(np.searchsorted(t_ms, self._next_tick_ms, side="right")))
            part = slice(start, end)
            self.stats.samples += end - start
            chunk = SampleBatch(
                t_ms=t_ms[part],
                participant=batch.participant[part],
                parameter=batch.parameter[part],
                value=batch.value[part],
                flagged=batch.flagged[part],
            )
            events += self._apply(self.detector.ingest(chunk))
            self._last_ms = int(t_ms[end - 1])
            start = end
        return events

    @property
    def time_ms(self) -> int | None:
        """The latest time detection has been given (None before any input or tick)."""
        return self._last_ms

    def advance(self, moment: dt.datetime) -> list[AlarmEvent]:
        """Run every tick up to and including ``moment`` (time passes with no readings too)."""
        return self.advance_ms(to_ms(moment))

    def advance_ms(self, t_ms: int) -> list[AlarmEvent]:
        """Ticks at each grid time ``<= t_ms``, in a time that grows with what they change.

        A tick that neither detection nor the lifecycle has anything due for is quiet (it
        would report nothing and change nothing), so it is skipped: after each tick the next
        one run is the first grid time at or after the earliest due time, but never past the
        first grid time after ``t_ms``, which must run whatever comes in before it. Jumping a
        year costs the ticks that report something, not one per period.
        """
        events: list[AlarmEvent] = []
        passed = self._next_tick_ms
        while self._next_tick_ms <= t_ms:
            tick = self._next_tick_ms
            events += self._apply(self.detector.tick(tick))
            events += self._emit(self.lifecycle.tick(tick))
            if self._reconcile_at_ms is not None and tick >= self._reconcile_at_ms:
                self._reconcile_at_ms = None
                current = sorted(self._conditions.values(), key=lambda u: (u.participant, u.rule))
                self._conditions.clear()
                events += self._emit(self.lifecycle.reconcile(tick, current))
            self._next_tick_ms = tick + self.tick_ms
            if self._next_tick_ms <= t_ms:  # more ticks to run: skip those with nothing due
                after_target = (t_ms // self.tick_ms + 1) * self.tick_ms
                skip_to = min(self._due_tick(tick), after_target)
                self._next_tick_ms = max(self._next_tick_ms, skip_to)
        if self._next_tick_ms > passed:
            last_tick = self._next_tick_ms - self.tick_ms
            self.stats.ticks += (self._next_tick_ms - passed) // self.tick_ms
            self._last_ms = last_tick if self._last_ms is None else max(self._last_ms, last_tick)
        return events

    def _due_tick(self, tick: int) -> int:
        """The first grid time at or after anything due once ``tick`` has run (or far away)."""
        due = [
            moment
            for moment in (
                self.detector.next_due_ms(tick),
                self.lifecycle.next_due_ms(),
                self._reconcile_at_ms,
            )
            if moment is not None
        ]
        if not due:
            return _NEVER_MS
        return -(-min(due) // self.tick_ms) * self.tick_ms

    def mark_dose(self, participant: str, moment: dt.datetime) -> list[AlarmEvent]:
        """A dose (or booster) marker; fixes the participant's pre-dose baselines.

        A marker stamped before input already evaluated is taken at that later time, as the
        lifecycle does with late commands: detection cannot go back.
        """
        index = self._index(participant)
        t_ms = self._not_before_last(self._within_horizon(moment, "dose marker"))
        events = self.advance_ms(t_ms - 1)
        self.detector.mark_dose(index, t_ms)
        self._last_ms = t_ms
        return events

    def set_consciousness(
        self, participant: str, moment: dt.datetime, level: Consciousness
    ) -> list[AlarmEvent]:
        """Staff-entered ACVPU for NEWS2 (a late entry is taken at the latest time seen)."""
        index = self._index(participant)
        t_ms = self._not_before_last(self._within_horizon(moment, "consciousness entry"))
        events = self.advance_ms(t_ms - 1)
        self.detector.set_consciousness(index, t_ms, level)
        self._last_ms = t_ms
        return events

    def report(
        self,
        rule_id: str,
        moment: dt.datetime,
        *,
        met: bool,
        value: float | None = None,
        threshold: float | None = None,
    ) -> list[AlarmEvent]:
        """A condition of the service itself (a reported rule) for every participant with it."""
        slot = self.rules.rule_ids.index(rule_id) if rule_id in self.rules.rule_ids else None
        column = [] if slot is None else [row[slot] for row in self.rules.rules]
        if slot is None or not any(rule is not None and rule.reported for rule in column):
            msg = f"session {self.session} has no reported rule {rule_id!r}"
            raise KeyError(msg)
        t_ms = self._not_before_last(self._within_horizon(moment, "report"))
        events = self.advance_ms(t_ms - 1)
        status = ConditionStatus.MET if met else ConditionStatus.CLEAR
        updates = [
            ConditionUpdate(t_ms, participant, slot, status, rule.priority, value, threshold)
            for participant, rule in enumerate(column)
            if rule is not None
        ]
        self._last_ms = t_ms
        return events + self._apply(updates)

    def acknowledge(self, alarm_id: str, staff: str, moment: dt.datetime) -> list[AlarmEvent]:
        """Staff acknowledge an alarm (errors name the problem; see lifecycle).

        Call :meth:`advance` up to the command's time first, so timers due before it run first.
        """
        return self._emit(self.lifecycle.acknowledge(alarm_id, staff, to_ms(moment)))

    def pause(
        self, participant: str, staff: str, duration_s: int, moment: dt.datetime
    ) -> list[AlarmEvent]:
        """Pause a participant's physiological alarms for a bounded time (advance first, too)."""
        return self._emit(self.lifecycle.pause(participant, staff, duration_s, t_ms=to_ms(moment)))

    def resume(self, participant: str, staff: str, moment: dt.datetime) -> list[AlarmEvent]:
        """End a participant's pause before it expires (advance first, too)."""
        return self._emit(self.lifecycle.resume(participant, staff, t_ms=to_ms(moment)))

    def active(self) -> list[AlarmEvent]:
        """The current alarms (the snapshot a late dashboard needs)."""
        return self.lifecycle.active()

    def restore(self, events: Iterable[AlarmEvent], *, settle_s: float | None = None) -> None:
        """Continue a session from its persisted alarm events (after a crash or a restart);
        call it before any input.

        Alarms, acknowledgements, pauses, escalation timers and the sequence come back at once.
        Detection starts afresh, so until ``settle_s`` of data time has passed each restored
        alarm keeps the condition it last showed; then the alarms follow what detection found
        by then (an alarm whose condition is gone resolves, unless it latched). The default is
        the longest staleness limit plus the longest alarm delay: by then every stream has given
        fresh evidence or is itself in alarm.
        """
        self.lifecycle.restore(events)
        settle = restore_settle_s(self.rules) if settle_s is None else settle_s
        self._reconcile_at_ms = self._next_tick_ms + round(settle * 1000)

    # -- internals --------------------------------------------------------------------------

    def _index(self, participant: str) -> int:
        try:
            return self._participant_index[participant]
        except KeyError:
            msg = f"participant {participant} is not in session {self.session}"
            raise KeyError(msg) from None

    def _within_horizon(self, moment: dt.datetime, what: str) -> int:
        """``moment`` in ms, or :class:`FutureTimeError` (counted) if it is past the horizon."""
        t_ms = to_ms(moment)
        horizon_ms = self._horizon()
        if t_ms > horizon_ms:
            self.stats.future += 1
            msg = (
                f"{what} stamped {moment.isoformat()} is past the latest time session "
                f"{self.session} accepts now ({_EPOCH + horizon_ms * _MS:%Y-%m-%dT%H:%M:%S}Z): "
                "refused, as it would move session time ahead"
            )
            raise FutureTimeError(msg)
        return t_ms

    def _not_before_last(self, t_ms: int) -> int:
        return t_ms if self._last_ms is None else max(t_ms, self._last_ms)

    def _ingest(self, rows: list[_Row]) -> list[AlarmEvent]:
        if not rows:
            return []
        self.stats.samples += len(rows)
        batch = SampleBatch(
            t_ms=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
            participant=np.fromiter((r[1] for r in rows), dtype=np.int32, count=len(rows)),
            parameter=np.fromiter((r[2] for r in rows), dtype=np.int8, count=len(rows)),
            value=np.fromiter((r[3] for r in rows), dtype=np.float64, count=len(rows)),
            flagged=np.fromiter((r[4] for r in rows), dtype=np.bool_, count=len(rows)),
        )
        return self._apply(self.detector.ingest(batch))

    def _apply(self, updates: list[ConditionUpdate]) -> list[AlarmEvent]:
        if self._reconcile_at_ms is None:
            return self._emit(self.lifecycle.apply(updates))
        for update in updates:
            if update.status == ConditionStatus.CLEAR:
                self._conditions.pop((update.participant, update.rule), None)
            else:
                self._conditions[(update.participant, update.rule)] = update
        return self._emit(self.lifecycle.apply(updates))

    def _emit(self, events: Iterable[AlarmEvent]) -> list[AlarmEvent]:
        emitted = list(events)
        self.stats.alarm_events += len(emitted)
        return emitted

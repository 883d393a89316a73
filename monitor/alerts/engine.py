"""Vectorised detection: the semantics of docs/detection.md, evaluated with numpy.

The engine must emit exactly the updates of the per-reading reference
(:mod:`monitor.alerts.reference`) while handling thousands of streams per call. Every piece of
state lives in preallocated numpy arrays (struct of arrays) and no Python loop runs per reading:
a batch is split into *rounds* in which each stream appears at most once (the n-th sample of every
stream goes to round n), and each round is evaluated across all of its streams at once. Streams
never influence each other between ticks, so rounds reproduce the per-sample order exactly. Python
loops run only over parameters and rule slots (tens), and over the updates emitted, which are rare.

Memory layout, for P participants, K = 5 detection parameters and stream ``s = p * K + k``:

Per stream, shape (P * K,):
    ``_last_t`` int64, the last non-late sample time (section 1);
    ``_prev_t`` int64 and ``_prev_v`` float64, the previous plausible unflagged sample (section 2);
    ``_evidence_t`` int64 (``NEVER`` until the first) and ``_evidence_v`` float64, the latest
    evidence, read at ticks by staleness, combined and NEWS2 rules.
Per parameter with per-sample rules, a :class:`_SampleGroup`; its columns are the parameter's
limit and baseline slots, then its trend slots. Shape (P, columns):
    ``status`` int8, ``run`` int32, ``since`` int64: the condition state machine (section 3);
    ``confirm`` int32, ``delay`` int64, ``priority`` int8: each participant's rule numbers;
    for limit and baseline columns ``offset``, ``sign``, ``breach_at``, ``clear_at`` float64, so
    both kinds read ``x = (value - offset) * sign``, breach ``x >= breach_at``, clear
    ``x <= clear_at``. A limit's offset is 0 and a strict limit breaches at the next float above
    its threshold (exact for floats); a baseline column's offset is the baseline, NaN while there
    is none, which makes every comparison false. Multiplying by +-1 and subtracting 0 are exact,
    so these are the reference's comparisons bit for bit.
Per trend slot, a :class:`_TrendSlot`: ring buffers of shape (P, capacity) holding ``t_ms``,
    ``t_s`` and ``qv`` (int64) with running int64 sums St, Sv, Stt, Stv (add the entering sample,
    subtract the leaving ones), and per-participant head, count and rule numbers.
Per parameter with a baseline rule, a :class:`_BaselineBuffer`: rings of shape (P, max_samples) of
    int64 times and float64 values, filled until the participant's baseline is fixed.
Per tick rule slot, a :class:`_TickSlot` of (P,) arrays: status, since, band, rule numbers.

Buffers are created with ``np.full`` rather than ``np.zeros`` so that their pages are touched
when the engine is built, not during the first batch.

A participant without a rule in a slot gets numbers that never breach; overrides are just other
numbers in that participant's row. For 2,000 participants and the MDMA rule set the state is a few
MB, most of it the trend and baseline rings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from monitor.alerts.inputs import Consciousness, SampleBatch
from monitor.alerts.rules import (
    DETECTION_PARAMETERS,
    BaselineSpec,
    CombinedSpec,
    CompiledRule,
    ConditionStatus,
    ConditionUpdate,
    LimitSpec,
    News2Spec,
    RuleSet,
    StalenessSpec,
    TrendSpec,
)
from monitor.models import AlarmPriority, Parameter

__all__ = ["Engine"]

I64 = npt.NDArray[np.int64]
IntP = npt.NDArray[np.intp]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]
Column = list[CompiledRule | None]
SpecT = TypeVar("SpecT")
ScalarT = TypeVar("ScalarT", bound=np.generic)

K: Final = len(DETECTION_PARAMETERS)
NEVER: Final = -(2**62)  # "no such time": far enough back that differences stay in int64
CLEAR: Final = int(ConditionStatus.CLEAR)
PENDING: Final = int(ConditionStatus.PENDING)
MET: Final = int(ConditionStatus.MET)
NO_BAND: Final = -1
PRIORITIES: Final = (AlarmPriority.LOW, AlarmPriority.MEDIUM, AlarmPriority.HIGH)
PRIORITY_CODE: Final = {priority: code for code, priority in enumerate(PRIORITIES)}
STATUSES: Final = (ConditionStatus.CLEAR, ConditionStatus.PENDING, ConditionStatus.MET)
STREAM_OF: Final = {parameter: index for index, parameter in enumerate(DETECTION_PARAMETERS)}

# NEWS2 chart 1 (docs/detection.md section 4): a value scores in the first band whose upper limit
# it does not exceed, i.e. scores[number of upper limits below the value].
NEWS2_CHART: Final = {
    STREAM_OF[parameter]: (np.array(upper_limits), np.array(scores, dtype=np.int64))
    for parameter, upper_limits, scores in (
        (Parameter.HEART_RATE, (40.0, 50.0, 90.0, 110.0, 130.0), (3, 1, 0, 1, 2, 3)),
        (Parameter.SYSTOLIC_BP, (90.0, 100.0, 110.0, 219.0), (3, 2, 1, 0, 3)),
        (Parameter.TEMPERATURE, (35.0, 36.0, 38.0, 39.0), (3, 1, 0, 1, 2)),
        (Parameter.SPO2, (91.0, 93.0, 95.0), (3, 2, 1, 0)),
    )
}
NEWS2_RED: Final = 3  # a single parameter scoring 3 (consciousness included)
NEWS2_HIGH_AT: Final = 7
NEWS2_MEDIUM_AT: Final = 5
NEWS2_LOW_AT: Final = 1
NEWS2_LOWER_BOUND: Final = np.array(
    [NEWS2_LOW_AT, NEWS2_MEDIUM_AT, NEWS2_HIGH_AT], dtype=np.float64
)


@dataclass(slots=True)
class _Changes:
    """Condition changes found during one call, turned into objects once, in order, at the end."""

    t_ms: list[I64] = field(default_factory=list)
    participant: list[I64] = field(default_factory=list)
    slot: list[I64] = field(default_factory=list)
    status: list[I64] = field(default_factory=list)
    priority: list[I64] = field(default_factory=list)
    value: list[F64] = field(default_factory=list)  # NaN: no value
    threshold: list[F64] = field(default_factory=list)

    def add(
        self,
        *,
        t_ms: I64,
        participant: I64,
        slot: I64,
        status: npt.NDArray[np.integer],
        priority: npt.NDArray[np.integer],
        value: F64,
        threshold: F64,
    ) -> None:
        self.t_ms.append(t_ms)
        self.participant.append(participant)
        self.slot.append(slot)
        self.status.append(status.astype(np.int64))
        self.priority.append(priority.astype(np.int64))
        self.value.append(value)
        self.threshold.append(threshold)

    def updates(self) -> list[ConditionUpdate]:
        """Section 6 order: by (t_ms, participant, rule)."""
        if not self.t_ms:
            return []
        t_ms = np.concatenate(self.t_ms)
        participant = np.concatenate(self.participant)
        slot = np.concatenate(self.slot)
        order = np.lexsort((slot, participant, t_ms))
        value = np.concatenate(self.value)[order]
        threshold = np.concatenate(self.threshold)[order]
        return list(
            map(
                ConditionUpdate,
                t_ms[order].tolist(),
                participant[order].tolist(),
                slot[order].tolist(),
                map(STATUSES.__getitem__, np.concatenate(self.status)[order].tolist()),
                map(PRIORITIES.__getitem__, np.concatenate(self.priority)[order].tolist()),
                _optional(value),
                _optional(threshold),
            )
        )


def _flatnonzero(mask: Bool) -> IntP:
    """``np.flatnonzero`` for 1-D masks without its Python-level wrapper calls (hot path)."""
    return mask.nonzero()[0]


def _may_change(breach: Bool, status: I8) -> Bool:
    """Cells whose condition state may change: all but clear-and-quiet and met-and-breaching."""
    may_change: Bool = (breach != (status == MET)) | (status == PENDING)
    return may_change


def _optional(values: F64) -> list[float | None]:
    """NaN as None, everything else as a Python float."""
    listed: list[float | None] = values.tolist()
    for missing in _flatnonzero(np.isnan(values)).tolist():
        listed[missing] = None
    return listed


def _priority_codes(column: Column) -> I8:
    return np.array(
        [PRIORITY_CODE[rule.priority] if rule is not None else 0 for rule in column], dtype=np.int8
    )


def _specs(column: Column, kind: type[SpecT]) -> list[SpecT | None]:
    return [
        rule.spec if rule is not None and isinstance(rule.spec, kind) else None for rule in column
    ]


@dataclass(slots=True)
class _TrendSlot:
    """One trend slot for every participant: ring buffers with running integer sums."""

    column: int
    active: Bool
    rising: Bool
    rate: F64
    threshold: F64  # rate_per_min when rising, -rate_per_min when falling
    window_s: I64
    window_ms: I64
    resolution_ms: I64
    min_samples: I64
    at_least: F64
    at_most: F64
    capacity: int
    buffer_ms: I64  # (P * capacity,) row-major rings
    buffer_t: I64  # whole seconds since origin
    buffer_q: I64  # round(value * 100)
    head: I64
    count: I64
    sum_t: I64
    sum_q: I64
    sum_tt: I64
    sum_tq: I64
    last_entered_ms: I64

    @classmethod
    def build(cls, column: int, rules: Column) -> _TrendSlot:
        trends = _specs(rules, TrendSpec)
        n = len(rules)
        capacity = max((spec.capacity for spec in trends if spec is not None), default=1)
        never = TrendSpec(DETECTION_PARAMETERS[0], rising=True, rate_per_min=math.inf, window_s=1)
        specs = [never if spec is None else spec for spec in trends]
        rate = np.array([spec.rate_per_min for spec in specs])
        rising = np.array([spec.rising for spec in specs], dtype=np.bool_)
        return cls(
            column=column,
            active=np.array([spec is not None for spec in trends], dtype=np.bool_),
            rising=rising,
            rate=rate,
            threshold=np.where(rising, rate, -rate),
            window_s=np.array([spec.window_s for spec in specs], dtype=np.int64),
            window_ms=np.array([spec.window_s * 1000 for spec in specs], dtype=np.int64),
            resolution_ms=np.array([spec.resolution_s * 1000 for spec in specs], dtype=np.int64),
            min_samples=np.array([spec.min_samples for spec in specs], dtype=np.int64),
            at_least=np.array(
                [-math.inf if s.while_at_least is None else s.while_at_least for s in specs]
            ),
            at_most=np.array(
                [math.inf if s.while_at_most is None else s.while_at_most for s in specs]
            ),
            capacity=capacity,
            buffer_ms=np.full(n * capacity, 0, dtype=np.int64),
            buffer_t=np.full(n * capacity, 0, dtype=np.int64),
            buffer_q=np.full(n * capacity, 0, dtype=np.int64),
            head=np.zeros(n, dtype=np.int64),
            count=np.zeros(n, dtype=np.int64),
            sum_t=np.zeros(n, dtype=np.int64),
            sum_q=np.zeros(n, dtype=np.int64),
            sum_tt=np.zeros(n, dtype=np.int64),
            sum_tq=np.zeros(n, dtype=np.int64),
            last_entered_ms=np.full(n, NEVER, dtype=np.int64),
        )

    def offer(self, participants: IntP, t_ms: I64, t_s: I64, values: F64) -> tuple[IntP, Bool, F64]:
        """Section 3 trend window: rows that entered, and their breach and slope (NaN: none)."""
        due = self.active.take(participants) & (
            t_ms - self.last_entered_ms.take(participants) >= self.resolution_ms.take(participants)
        )
        rows = _flatnonzero(due)
        if len(rows) == 0:
            return rows, np.zeros(0, dtype=np.bool_), np.zeros(0)
        p = participants.take(rows)
        now_ms = t_ms.take(rows)
        capacity = self.capacity
        # Leaving: older than window_s before the entering sample (several after a gap). The
        # spacing of entered samples keeps the count within capacity, so nothing else leaves.
        leaving, newest = p, now_ms
        while len(leaving):
            head = self.head.take(leaving)
            oldest = leaving * capacity + head
            out = (self.count.take(leaving) > 0) & (
                newest - self.buffer_ms.take(oldest) > self.window_ms.take(leaving)
            )
            if not out.any():
                break
            leaving, newest, head, oldest = leaving[out], newest[out], head[out], oldest[out]
            old_t = self.buffer_t.take(oldest)
            old_q = self.buffer_q.take(oldest)
            self.sum_t[leaving] -= old_t
            self.sum_q[leaving] -= old_q
            self.sum_tt[leaving] -= old_t * old_t
            self.sum_tq[leaving] -= old_t * old_q
            self.head[leaving] = (head + 1) % capacity
            self.count[leaving] -= 1
        ts = t_s.take(rows)
        v = values.take(rows)
        q = np.rint(v * 100.0).astype(np.int64)
        head = self.head.take(p)
        count = self.count.take(p) + 1
        at = p * capacity + (head + count - 1) % capacity
        self.buffer_ms[at] = now_ms
        self.buffer_t[at] = ts
        self.buffer_q[at] = q
        self.count[p] = count
        self.last_entered_ms[p] = now_ms
        sum_t = self.sum_t.take(p) + ts
        sum_q = self.sum_q.take(p) + q
        sum_tt = self.sum_tt.take(p) + ts * ts
        sum_tq = self.sum_tq.take(p) + ts * q
        self.sum_t[p] = sum_t
        self.sum_q[p] = sum_q
        self.sum_tt[p] = sum_tt
        self.sum_tq[p] = sum_tq

        span_s = ts - self.buffer_t.take(p * capacity + head)
        enough = (count >= self.min_samples.take(p)) & (2 * span_s >= self.window_s.take(p))
        numerator = count * sum_tq - sum_t * sum_q
        denominator = np.where(enough, count * sum_tt - sum_t * sum_t, 1)
        slope = (numerator.astype(np.float64) / denominator.astype(np.float64)) * 60.0 / 100.0
        threshold = self.threshold.take(p)
        steep = np.where(self.rising.take(p), slope >= threshold, slope <= threshold)
        within = (v >= self.at_least.take(p)) & (v <= self.at_most.take(p))
        return rows, enough & steep & within, np.where(enough, slope, np.nan)


@dataclass(slots=True)
class _BaselineBuffer:
    """Pre-dose evidence of one parameter for every participant, until its baseline is fixed."""

    resolution_ms: int
    window_ms: int
    min_samples: int
    wanted: Bool  # (P,) has a baseline rule on this parameter and no baseline yet
    capacity: int
    t_ms: I64  # (P * capacity,) row-major rings
    value: F64
    head: I64
    count: I64
    last_entered_ms: I64

    def offer(self, participants: IntP, t_ms: I64, values: F64, status: I8, stale: Bool) -> None:
        """Take due samples that arrived with every condition on the parameter clear (``status``
        after evaluating them, ``stale`` from the last tick); an excluded one is not entered."""
        rows = _flatnonzero(
            self.wanted.take(participants)
            & (t_ms - self.last_entered_ms.take(participants) >= self.resolution_ms)
        )
        if len(rows) == 0:
            return
        p = participants.take(rows)
        busy = (status.take(p, axis=0) != CLEAR).any(axis=1) | stale.take(p)
        rows, p = rows[~busy], p[~busy]
        if len(rows) == 0:
            return
        capacity = self.capacity
        head = self.head.take(p)
        count = self.count.take(p)
        full = count == capacity
        at = p * capacity + (head + count) % capacity
        self.t_ms[at] = t_ms.take(rows)
        self.value[at] = values.take(rows)
        self.head[p] = np.where(full, (head + 1) % capacity, head)
        self.count[p] = np.where(full, count, count + 1)
        self.last_entered_ms[p] = t_ms.take(rows)

    def fix(self, participants: IntP, t_ms: I64) -> F64:
        """The lower median of each participant's buffered samples in the window ending at its
        marker; NaN where fewer than ``min_samples`` are in the window."""
        baseline = np.full(len(participants), np.nan)
        needed = max(self.min_samples, 1)
        count = self.count.take(participants)
        rows = _flatnonzero(count >= needed)
        if len(rows) == 0:
            return baseline
        p, end, count = participants.take(rows), t_ms.take(rows), count.take(rows)
        width = int(count.max())
        position = np.arange(width)
        # The ring's first ``count`` slots hold its samples; their order does not matter here.
        cells = p[:, None] * self.capacity + position
        times = self.t_ms.take(cells)
        in_window = (
            (position < count[:, None])
            & (times >= (end - self.window_ms)[:, None])
            & (times <= end[:, None])
        )
        n = np.count_nonzero(in_window, axis=1)
        ordered = np.sort(np.where(in_window, self.value.take(cells), math.inf), axis=1)
        median = ordered[np.arange(len(rows)), np.maximum(n - 1, 0) // 2]
        enough = n >= needed
        baseline[rows[enough]] = median[enough]
        return baseline


@dataclass(slots=True)
class _SampleGroup:
    """The per-sample rules of one parameter: limit and baseline columns, then trend columns."""

    parameter: int
    slots: I64  # the rule slot of each column
    lb_columns: int
    baseline_columns: list[int]
    status: I8  # (P, columns)
    run: I32
    since: I64
    confirm: I32
    delay: I64
    priority: I8
    offset: F64 | None  # (P, lb_columns); None when the parameter has no baseline rule
    sign: F64
    breach_at: F64
    clear_at: F64
    reported_threshold: F64
    trends: list[_TrendSlot]
    baseline: _BaselineBuffer | None

    @property
    def columns(self) -> int:
        return len(self.slots)


@dataclass(slots=True)
class _TickSlot:
    """A time rule slot (staleness, combined or NEWS2) for every participant."""

    slot: int
    active: Bool
    status: I8
    since: I64
    priority: I8
    delay: I64
    max_age_ms: I64
    band: I64  # NEWS2: the band last reported as a priority code, NO_BAND when clear

    @classmethod
    def build(cls, slot: int, column: Column, *, with_delay: bool) -> _TickSlot:
        n = len(column)
        max_age = [
            rule.spec.max_age_s * 1000
            if rule is not None and isinstance(rule.spec, News2Spec | CombinedSpec)
            else 0
            for rule in column
        ]
        return cls(
            slot=slot,
            active=np.array([rule is not None for rule in column], dtype=np.bool_),
            status=np.zeros(n, dtype=np.int8),
            since=np.zeros(n, dtype=np.int64),
            priority=_priority_codes(column),
            delay=np.array(
                [rule.delay_ms if rule is not None and with_delay else 0 for rule in column],
                dtype=np.int64,
            ),
            max_age_ms=np.array(max_age, dtype=np.int64),
            band=np.full(n, NO_BAND, dtype=np.int64),
        )


@dataclass(slots=True)
class _CombinedParts:
    """The parts of one combined slot, padded to the longest participant's list."""

    stream: IntP  # (parts, P) stream index of each part
    sign: F64
    breach_at: F64  # -inf for padding, which always holds

    @classmethod
    def build(cls, column: Column) -> _CombinedParts:
        specs = _specs(column, CombinedSpec)
        n = len(specs)
        width = max((len(spec.parts) for spec in specs if spec is not None), default=0)
        stream = np.tile(np.arange(n, dtype=np.intp) * K, (width, 1))
        sign = np.ones((width, n))
        breach_at = np.full((width, n), -math.inf)
        for p, spec in enumerate(specs):
            for j, part in enumerate(spec.parts if spec is not None else ()):
                direction = 1.0 if part.high else -1.0
                signed = direction * part.threshold
                stream[j, p] += STREAM_OF[part.parameter]
                sign[j, p] = direction
                breach_at[j, p] = signed if part.inclusive else np.nextafter(signed, math.inf)
        return cls(stream, sign, breach_at)


class Engine:
    """The vectorised :class:`~monitor.alerts.inputs.Detector` (docs/detection.md)."""

    def __init__(self, rules: RuleSet, *, origin_ms: int) -> None:
        self.rules = rules
        self.origin_ms = origin_ms
        self.late_samples = 0
        self._doses: list[tuple[int, int]] = []
        participants = len(rules.participants)
        self._participants = participants
        streams = participants * K
        artefacts = rules.artefacts
        self._plausible_low = np.array([artefacts.plausible[k][0] for k in DETECTION_PARAMETERS])
        self._plausible_high = np.array([artefacts.plausible[k][1] for k in DETECTION_PARAMETERS])
        spike = [artefacts.spike_delta.get(k) for k in DETECTION_PARAMETERS]
        self._spike_delta = np.array([math.inf if delta is None else delta for delta in spike])
        self._spike_gap_ms = artefacts.spike_max_gap_s * 1000
        self._last_t = np.full(streams, NEVER, dtype=np.int64)
        self._prev_t = np.full(streams, NEVER, dtype=np.int64)
        self._prev_v = np.zeros(streams)
        self._evidence_t = np.full(streams, NEVER, dtype=np.int64)
        self._evidence_v = np.zeros(streams)
        self._unconscious = np.zeros(participants, dtype=np.bool_)
        self._stale = np.zeros((K, participants), dtype=np.bool_)  # a staleness rule is met
        self._order_table = np.full(K * participants, -1, dtype=np.intp)
        self._group_bounds = np.arange(K + 1, dtype=np.intp) * participants

        columns = [[row[slot] for row in rules.rules] for slot in range(len(rules.rule_ids))]
        self._groups = [
            group for k in range(K) if (group := self._sample_group(k, columns)) is not None
        ]
        self._staleness: list[tuple[_TickSlot, I64, int]] = []
        self._combined: list[tuple[_TickSlot, _CombinedParts]] = []
        self._news2: list[tuple[_TickSlot, Bool]] = []
        for slot, column in enumerate(columns):
            specs = [rule.spec for rule in column if rule is not None]
            if not specs:
                continue
            spec = specs[0]
            if isinstance(spec, StalenessSpec):
                stale_ms = np.array(
                    [
                        0 if s is None else s.stale_after_s * 1000
                        for s in _specs(column, StalenessSpec)
                    ],
                    dtype=np.int64,
                )
                tick_slot = _TickSlot.build(slot, column, with_delay=False)
                self._staleness.append((tick_slot, stale_ms, STREAM_OF[spec.parameter]))
            elif isinstance(spec, CombinedSpec):
                tick_slot = _TickSlot.build(slot, column, with_delay=True)
                self._combined.append((tick_slot, _CombinedParts.build(column)))
            elif isinstance(spec, News2Spec):
                alert_low = np.array(
                    [s is not None and s.alert_low for s in _specs(column, News2Spec)],
                    dtype=np.bool_,
                )
                self._news2.append((_TickSlot.build(slot, column, with_delay=False), alert_low))

    def _sample_group(self, k: int, columns: list[Column]) -> _SampleGroup | None:
        """Lay out the limit, baseline and trend slots of parameter k as columns."""
        parameter = DETECTION_PARAMETERS[k]

        def slots_of(kind: type) -> list[int]:
            return [
                slot
                for slot, column in enumerate(columns)
                if any(
                    rule is not None and isinstance(rule.spec, kind) and rule.parameter is parameter
                    for rule in column
                )
            ]

        limit_slots = slots_of(LimitSpec)
        baseline_slots = slots_of(BaselineSpec)
        trend_slots = slots_of(TrendSpec)
        lb_slots = limit_slots + baseline_slots
        all_slots = lb_slots + trend_slots
        if not all_slots:
            return None
        participants = self._participants
        shape = (participants, len(all_slots))
        lb_shape = (participants, len(lb_slots))
        confirm = np.ones(shape, dtype=np.int32)
        delay = np.zeros(shape, dtype=np.int64)
        priority = np.zeros(shape, dtype=np.int8)
        sign = np.ones(lb_shape)
        breach_at = np.full(lb_shape, math.inf)
        clear_at = np.full(lb_shape, -math.inf)
        reported = np.full(lb_shape, np.nan)
        for column, slot in enumerate(all_slots):
            priority[:, column] = _priority_codes(columns[slot])
            for p, rule in enumerate(columns[slot]):
                if rule is None:
                    continue
                confirm[p, column] = rule.confirm
                delay[p, column] = rule.delay_ms
                spec = rule.spec
                if isinstance(spec, LimitSpec):
                    direction = 1.0 if spec.high else -1.0
                    signed = direction * spec.threshold
                    if spec.high:
                        clear_level = spec.threshold - spec.clear_band
                    else:
                        clear_level = spec.threshold + spec.clear_band
                    sign[p, column] = direction
                    breach_at[p, column] = (
                        signed if spec.inclusive else np.nextafter(signed, math.inf)
                    )
                    clear_at[p, column] = direction * clear_level
                    reported[p, column] = spec.threshold
                elif isinstance(spec, BaselineSpec):
                    sign[p, column] = 1.0 if spec.high else -1.0
                    breach_at[p, column] = spec.delta
                    clear_at[p, column] = spec.delta - spec.clear_band
        baseline_columns = list(range(len(limit_slots), len(lb_slots)))
        offset: F64 | None = None
        baseline: _BaselineBuffer | None = None
        if baseline_slots:
            offset = np.zeros(lb_shape)
            offset[:, baseline_columns] = np.nan
            settings = self.rules.baseline
            baseline = _BaselineBuffer(
                resolution_ms=settings.resolution_s * 1000,
                window_ms=settings.window_s * 1000,
                min_samples=settings.min_samples,
                wanted=np.array(
                    [
                        any(columns[slot][p] is not None for slot in baseline_slots)
                        for p in range(participants)
                    ],
                    dtype=np.bool_,
                ),
                capacity=settings.max_samples,
                t_ms=np.full(participants * settings.max_samples, 0, dtype=np.int64),
                value=np.full(participants * settings.max_samples, 0.0),
                head=np.zeros(participants, dtype=np.int64),
                count=np.zeros(participants, dtype=np.int64),
                last_entered_ms=np.full(participants, NEVER, dtype=np.int64),
            )
        return _SampleGroup(
            parameter=k,
            slots=np.array(all_slots, dtype=np.int64),
            lb_columns=len(lb_slots),
            baseline_columns=baseline_columns,
            status=np.zeros(shape, dtype=np.int8),
            run=np.zeros(shape, dtype=np.int32),
            since=np.zeros(shape, dtype=np.int64),
            confirm=confirm,
            delay=delay,
            priority=priority,
            offset=offset,
            sign=sign,
            breach_at=breach_at,
            clear_at=clear_at,
            reported_threshold=reported,
            trends=[
                _TrendSlot.build(len(lb_slots) + i, columns[slot])
                for i, slot in enumerate(trend_slots)
            ],
            baseline=baseline,
        )

    # -- Detector -----------------------------------------------------------------------------

    def ingest(self, batch: SampleBatch) -> list[ConditionUpdate]:
        """Section 1-3 on a batch: drop late samples, then evaluate it round by round."""
        self._fix_baselines()
        n = len(batch)
        if n == 0:
            return []
        stream = batch.participant.astype(np.intp) * K + batch.parameter.astype(np.intp)
        t_ms = batch.t_ms.astype(np.int64, copy=False)
        changes = _Changes()
        if np.bincount(stream).max() <= 1:  # the usual case: one sample per stream
            fresh = t_ms > self._last_t.take(stream)
            if fresh.all():
                self._round(batch, None, stream, t_ms, changes)
            else:
                self.late_samples += n - int(np.count_nonzero(fresh))
                kept = _flatnonzero(fresh)
                self._round(batch, kept, stream.take(kept), t_ms.take(kept), changes)
            return changes.updates()
        # Several samples of a stream: stable sort by stream keeps each stream's time order.
        order = np.argsort(stream, kind="stable")
        sorted_stream = stream.take(order)
        sorted_t = t_ms.take(order)
        first = np.ones(n, dtype=np.bool_)
        first[1:] = sorted_stream[1:] != sorted_stream[:-1]
        fresh = sorted_t > self._last_t.take(sorted_stream)
        fresh[1:] &= first[1:] | (sorted_t[1:] > sorted_t[:-1])
        self.late_samples += n - int(np.count_nonzero(fresh))
        order = order[fresh]
        sorted_stream = sorted_stream[fresh]
        first = np.ones(len(order), dtype=np.bool_)
        first[1:] = sorted_stream[1:] != sorted_stream[:-1]
        positions = np.arange(len(order))
        rank = positions - np.maximum.accumulate(np.where(first, positions, 0))
        for r in range(int(rank.max(initial=-1)) + 1):
            index = np.sort(order[rank == r])
            self._round(batch, index, stream.take(index), t_ms.take(index), changes)
        return changes.updates()

    def mark_dose(self, participant: int, t_ms: int) -> None:
        """Section 3: fix the participant's baselines that are not fixed yet.

        Markers are queued and fixed together before the next batch: only a batch changes the
        baseline buffers, so this is exact, and a session dosing many participants at once pays
        one vectorised pass instead of one per participant.
        """
        self._doses.append((participant, t_ms))

    def _fix_baselines(self) -> None:
        """Apply queued markers in order; a participant's later marker sees its earlier one."""
        if not self._doses:
            return
        queued = np.array(self._doses, dtype=np.int64).reshape(-1, 2)
        self._doses.clear()
        participants, times = queued[:, 0].astype(np.intp), queued[:, 1]
        while len(participants):
            _, first = np.unique(participants, return_index=True)
            first.sort()
            for group in self._groups:
                self._fix_group_baselines(group, participants.take(first), times.take(first))
            rest = np.ones(len(participants), dtype=np.bool_)
            rest[first] = False
            participants, times = participants[rest], times[rest]

    @staticmethod
    def _fix_group_baselines(group: _SampleGroup, participants: IntP, t_ms: I64) -> None:
        buffer, offset = group.baseline, group.offset
        if buffer is None or offset is None:
            return
        wanted = buffer.wanted.take(participants)
        participants, t_ms = participants[wanted], t_ms[wanted]
        if len(participants) == 0:
            return
        baseline = buffer.fix(participants, t_ms)
        fixed = ~np.isnan(baseline)
        participants, baseline = participants[fixed], baseline[fixed]
        if len(participants) == 0:
            return
        buffer.wanted[participants] = False
        columns = group.baseline_columns
        rows = participants[:, None]
        offset[rows, columns] = baseline[:, None]
        # A baseline column breaches at delta; a slot without a rule never breaches (inf).
        delta = group.breach_at[rows, columns]
        group.reported_threshold[rows, columns] = np.where(
            np.isfinite(delta), baseline[:, None] + group.sign[rows, columns] * delta, np.nan
        )

    def set_consciousness(self, participant: int, t_ms: int, level: Consciousness) -> None:
        """Section 4: anything but alert scores 3 in NEWS2 until alert is entered."""
        del t_ms  # the entry counts from now on; ticks come in time order
        self._unconscious[participant] = level is not Consciousness.ALERT

    def tick(self, t_ms: int) -> list[ConditionUpdate]:
        """Section 4: staleness, combined and NEWS2 rules for every participant."""
        changes = _Changes()
        evidence_t = self._evidence_t.reshape(self._participants, K)
        evidence_v = self._evidence_v.reshape(self._participants, K)
        self._stale[:] = False
        for tick_slot, stale_ms, k in self._staleness:
            last = evidence_t[:, k]
            age = t_ms - np.where(last == NEVER, self.origin_ms, last)
            breach = tick_slot.active & (age >= stale_ms)
            self._stale[k] |= breach
            self._tick_update(
                tick_slot=tick_slot,
                t_ms=t_ms,
                breach=breach,
                value=age / 1000.0,
                threshold=stale_ms / 1000.0,
                changes=changes,
            )
        nothing = np.full(self._participants, np.nan)
        for tick_slot, parts in self._combined:
            breach = tick_slot.active.copy()
            for j in range(len(parts.stream)):
                stream = parts.stream[j]
                fresh = t_ms - self._evidence_t.take(stream) <= tick_slot.max_age_ms
                holds = self._evidence_v.take(stream) * parts.sign[j] >= parts.breach_at[j]
                breach &= (fresh & holds) | (parts.breach_at[j] == -math.inf)
            self._tick_update(
                tick_slot=tick_slot,
                t_ms=t_ms,
                breach=breach,
                value=nothing,
                threshold=nothing,
                changes=changes,
            )
        for tick_slot, alert_low in self._news2:
            self._news2_tick(
                tick_slot=tick_slot,
                alert_low=alert_low,
                t_ms=t_ms,
                evidence_t=evidence_t,
                evidence_v=evidence_v,
                changes=changes,
            )
        return changes.updates()

    # -- sections 1-3: one round ----------------------------------------------------------------

    def _round(
        self, batch: SampleBatch, index: IntP | None, stream: IntP, t_ms: I64, changes: _Changes
    ) -> None:
        """Evaluate fresh samples, at most one per stream, as if one by one."""
        if index is None:
            values, flagged = batch.value, batch.flagged
            parameter, participant = batch.parameter, batch.participant
        else:
            values, flagged = batch.value.take(index), batch.flagged.take(index)
            parameter, participant = batch.parameter.take(index), batch.participant.take(index)
        parameter = parameter.astype(np.intp)
        self._last_t[stream] = t_ms
        # Section 2: NaN fails both plausibility comparisons; +-inf fails one.
        plausible = (values >= self._plausible_low.take(parameter)) & (
            values <= self._plausible_high.take(parameter)
        )
        if flagged.any():
            plausible &= ~flagged
        jump = (t_ms - self._prev_t.take(stream) <= self._spike_gap_ms) & (
            np.abs(values - self._prev_v.take(stream)) > self._spike_delta.take(parameter)
        )
        evidence = plausible & ~jump
        if plausible.all():
            self._prev_t[stream] = t_ms
            self._prev_v[stream] = values
        else:
            kept = plausible.nonzero()[0]
            self._prev_t[stream.take(kept)] = t_ms.take(kept)
            self._prev_v[stream.take(kept)] = values.take(kept)
        # The evidence in parameter-major order, participants ascending: each group reads one
        # slice, and a slice holding every participant reads the group's arrays without
        # gathering. Keys are unique within a round, so a scatter into a table orders them in
        # linear time.
        key = parameter * self._participants + participant.astype(np.intp)
        table = self._order_table
        if evidence.all():
            table[key] = np.arange(len(key))
        else:
            rows = evidence.nonzero()[0]
            if len(rows) == 0:
                return
            table[key.take(rows)] = rows
        order = table[table >= 0]
        table[key] = -1
        bounds = np.searchsorted(key.take(order), self._group_bounds).tolist()
        stream, t_ms, values = stream.take(order), t_ms.take(order), values.take(order)
        evidence_participants: IntP = participant.take(order).astype(np.intp)
        self._evidence_t[stream] = t_ms
        self._evidence_v[stream] = values
        for group in self._groups:
            start, end = bounds[group.parameter], bounds[group.parameter + 1]
            if end > start:
                self._evaluate(
                    group,
                    evidence_participants[start:end],
                    t_ms[start:end],
                    values[start:end],
                    changes,
                    every=end - start == self._participants,
                )

    def _evaluate(
        self,
        group: _SampleGroup,
        p: IntP,
        t_ms: I64,
        values: F64,
        changes: _Changes,
        *,
        every: bool,
    ) -> None:
        """Section 3 for one parameter's evidence samples (one per participant, ascending;
        ``every``: all participants, so ``p`` is the identity and rows need no gathering)."""
        columns = group.columns
        lb = group.lb_columns

        def rows(array: npt.NDArray[ScalarT]) -> npt.NDArray[ScalarT]:
            return array if every else array.take(p, axis=0)

        status = rows(group.status)  # read before _advance writes the group's arrays
        if group.offset is None:
            x = values[:, None] * rows(group.sign)
        else:
            x = (values[:, None] - rows(group.offset)) * rows(group.sign)
        lb_breach = x >= rows(group.breach_at)
        slopes: list[F64] = []
        if group.trends:
            breach = np.zeros((len(p), columns), dtype=np.bool_)
            breach[:, :lb] = lb_breach
            work = _may_change(breach, status)
            t_s = (t_ms - self.origin_ms) // 1000
            for trend in group.trends:
                entered, trend_breach, entered_slope = trend.offer(p, t_ms, t_s, values)
                column = trend.column
                breach[entered, column] = trend_breach
                # Only samples that entered the window evaluate the rule.
                evaluated = np.zeros(len(p), dtype=np.bool_)
                evaluated[entered] = True
                work[:, column] = evaluated & _may_change(breach[:, column], status[:, column])
                slope = np.full(len(p), np.nan)
                slope[entered] = entered_slope
                slopes.append(slope)
        else:
            breach = lb_breach
            work = _may_change(breach, status)
        pairs = np.flatnonzero(work)  # 2-D: flat cell numbers
        if len(pairs):
            self._advance(
                group=group,
                p=p,
                t_ms=t_ms,
                values=values,
                x=x,
                breach=breach,
                status=status,
                pairs=pairs,
                slopes=slopes,
                changes=changes,
            )
        if group.baseline is not None:
            group.baseline.offer(p, t_ms, values, group.status, self._stale[group.parameter])

    def _advance(
        self,
        *,
        group: _SampleGroup,
        p: IntP,
        t_ms: I64,
        values: F64,
        x: F64,
        breach: Bool,
        status: I8,
        pairs: IntP,
        slopes: list[F64],
        changes: _Changes,
    ) -> None:
        """The section 3 state machine on the (sample, column) pairs that may change."""
        columns = group.columns
        lb = group.lb_columns
        row, column = np.divmod(pairs, columns)
        pp = p.take(row)
        cell = pp * columns + column  # into the group's (P, columns) arrays, flattened
        old = status.reshape(-1).take(pairs).astype(np.int64)
        hit = breach.reshape(-1).take(pairs)
        t = t_ms.take(row)
        run = group.run.reshape(-1).take(cell).astype(np.int64)
        since = group.since.reshape(-1).take(cell)
        start = hit & (old == CLEAR)
        more = hit & (old == PENDING)
        run = np.where(start, 1, np.where(more, run + 1, run))
        since = np.where(start, t, since)
        ready = (run >= group.confirm.reshape(-1).take(cell)) & (
            t - since >= group.delay.reshape(-1).take(cell)
        )
        new = np.where(hit, np.where(ready, MET, PENDING), np.where(old == MET, MET, CLEAR))
        new[hit & (old == MET)] = MET
        # A met condition clears on a non-breaching sample that satisfies the clear predicate.
        met_quiet = _flatnonzero((old == MET) & ~hit)
        if len(met_quiet):
            quiet_column = column.take(met_quiet)
            in_lb = quiet_column < lb
            clears = ~in_lb  # a trend clears on any non-breaching evaluation
            lb_pairs = met_quiet[in_lb]
            if len(lb_pairs):
                lb_row, lb_column = row.take(lb_pairs), column.take(lb_pairs)
                clears[in_lb] = x.reshape(-1).take(lb_row * lb + lb_column) <= (
                    group.clear_at.reshape(-1).take(pp.take(lb_pairs) * lb + lb_column)
                )
            new[met_quiet[clears]] = CLEAR
        group.status.reshape(-1)[cell] = new
        group.run.reshape(-1)[cell] = run
        group.since.reshape(-1)[cell] = since
        changed = _flatnonzero(new != old)
        if len(changed) == 0:
            return
        row, column, cell = row.take(changed), column.take(changed), cell.take(changed)
        value = values.take(row)
        threshold = np.full(len(changed), np.nan)
        lb_changed = _flatnonzero(column < lb)
        if len(lb_changed):
            lb_cell = pp.take(changed).take(lb_changed) * lb + column.take(lb_changed)
            threshold[lb_changed] = group.reported_threshold.reshape(-1).take(lb_cell)
        for trend, slope in zip(group.trends, slopes, strict=True):
            trend_changed = _flatnonzero(column == trend.column)
            if len(trend_changed):
                trend_row = row.take(trend_changed)
                value[trend_changed] = slope.take(trend_row)
                threshold[trend_changed] = trend.threshold.take(p.take(trend_row))
        changes.add(
            t_ms=t.take(changed),
            participant=pp.take(changed).astype(np.int64),
            slot=group.slots.take(column),
            status=new.take(changed),
            priority=group.priority.reshape(-1).take(cell),
            value=value,
            threshold=threshold,
        )

    # -- section 4: ticks -----------------------------------------------------------------------

    def _tick_update(
        self,
        *,
        tick_slot: _TickSlot,
        t_ms: int,
        breach: Bool,
        value: F64,
        threshold: F64,
        changes: _Changes,
    ) -> None:
        """The section 3 state machine in tick time, confirmation 1."""
        old = tick_slot.status
        since = np.where(breach & (old == CLEAR), t_ms, tick_slot.since)
        new = np.where(breach, np.where(t_ms - since >= tick_slot.delay, MET, PENDING), CLEAR)
        tick_slot.since = since
        tick_slot.status = new.astype(np.int8)
        changed = _flatnonzero(new != old)
        if len(changed):
            changes.add(
                t_ms=np.full(len(changed), t_ms, dtype=np.int64),
                participant=changed.astype(np.int64),
                slot=np.full(len(changed), tick_slot.slot, dtype=np.int64),
                status=new.take(changed),
                priority=tick_slot.priority.take(changed),
                value=value.take(changed),
                threshold=threshold.take(changed),
            )

    def _news2_tick(
        self,
        *,
        tick_slot: _TickSlot,
        alert_low: Bool,
        t_ms: int,
        evidence_t: I64,
        evidence_v: F64,
        changes: _Changes,
    ) -> None:
        """NEWS2 band per participant; an update whenever the band changes."""
        red = self._unconscious.copy()
        aggregate = np.where(red, NEWS2_RED, 0)
        for k, (upper_limits, scores) in NEWS2_CHART.items():
            fresh = t_ms - evidence_t[:, k] <= tick_slot.max_age_ms
            score = scores.take(np.searchsorted(upper_limits, evidence_v[:, k]))
            score = np.where(fresh, score, 0)
            aggregate += score
            red |= score == NEWS2_RED
        band = np.full(self._participants, NO_BAND, dtype=np.int64)
        band[alert_low & (aggregate >= NEWS2_LOW_AT)] = PRIORITY_CODE[AlarmPriority.LOW]
        band[red | (aggregate >= NEWS2_MEDIUM_AT)] = PRIORITY_CODE[AlarmPriority.MEDIUM]
        band[aggregate >= NEWS2_HIGH_AT] = PRIORITY_CODE[AlarmPriority.HIGH]
        band[~tick_slot.active] = NO_BAND
        changed = _flatnonzero(band != tick_slot.band)
        tick_slot.band = band
        if len(changed) == 0:
            return
        band = band.take(changed)
        met = band != NO_BAND
        changes.add(
            t_ms=np.full(len(changed), t_ms, dtype=np.int64),
            participant=changed.astype(np.int64),
            slot=np.full(len(changed), tick_slot.slot, dtype=np.int64),
            status=np.where(met, MET, CLEAR),
            priority=np.where(met, band, tick_slot.priority.take(changed)),
            value=aggregate.take(changed).astype(np.float64),
            threshold=np.where(met, NEWS2_LOWER_BOUND.take(np.maximum(band, 0)), np.nan),
        )

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
The per-sample rules of every stream, a :class:`_StreamRules` of *cells*: each stream has
    ``lb_columns`` limit/baseline cells (its parameter's slots, padded with cells that never
    breach) and ``trend_columns`` trend cells, stored as two contiguous blocks of flat arrays:
    ``status`` int8, ``run`` int32, ``since`` int64: the condition state machine (section 3);
    ``confirm`` int32, ``delay`` int64, ``priority`` int8, ``threshold``, ``slot`` and
    ``participant``: each cell's rule numbers and what its updates report;
    for the limit/baseline block, (P * K, lb_columns) ``offset``, ``sign``, ``breach_at``,
    ``clear_at`` float64, so both kinds read ``x = (value - offset) * sign``, breach
    ``x >= breach_at``, clear ``x <= clear_at``. A limit's offset is 0 and a strict limit
    breaches at the next float above its threshold (exact for floats); a baseline cell's offset
    is the baseline, NaN while there is none, which makes every comparison false. Multiplying by
    +-1 and subtracting 0 are exact, so these are the reference's comparisons bit for bit.
A round tests the whole limit/baseline block at once (in place when most streams have a sample,
    on gathered rows otherwise), the trend cells of the samples that entered a window, then
    advances only the cells that may change, all parameters together.
Per trend slot, a :class:`_TrendSlot`: ring buffers of shape (P, capacity) holding ``t_ms``,
    ``t_s`` and ``qv`` (int64) with running int64 sums St, Sv, Stt, Stv (add the entering sample,
    subtract the leaving ones), and per-participant head, count and rule numbers.
Per parameter with a baseline rule, a :class:`_BaselineBuffer`: rings of shape (P, max_samples) of
    int64 times and float64 values, filled until the participant's baseline is fixed.
Per combined or NEWS2 slot, a :class:`_TickSlot` of (P,) arrays: status, since, band, rule
    numbers; every staleness slot together in one :class:`_Staleness` of (P, slots) arrays.
Dose markers are queued and fix baselines in one vectorised pass before the next batch.

Buffers are created with ``np.full`` rather than ``np.zeros`` so that their pages are touched
when the engine is built, not during the first batch.

A participant without a rule in a slot gets numbers that never breach; overrides are just other
numbers in that participant's row. For 2,000 participants and the MDMA rule set the state is a few
MB, most of it the trend and baseline rings.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

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
assert (CLEAR, PENDING, MET) == (0, 1, 2), "_may_change relies on these codes"
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
        fields = zip(
            t_ms[order].tolist(),
            participant[order].tolist(),
            slot[order].tolist(),
            map(STATUSES.__getitem__, np.concatenate(self.status)[order].tolist()),
            map(PRIORITIES.__getitem__, np.concatenate(self.priority)[order].tolist()),
            _optional(value),
            _optional(threshold),
            strict=True,
        )
        return list(map(_new_update, fields))


_new_update: Final = functools.partial(tuple.__new__, ConditionUpdate)
"""``ConditionUpdate._make`` without its Python-level wrapper (the fields are complete)."""


def _flatnonzero(mask: Bool) -> IntP:
    """``np.flatnonzero`` for 1-D masks without its Python-level wrapper calls (hot path)."""
    return mask.nonzero()[0]


def _may_change(breach: Bool, status: I8) -> Bool:
    """Cells whose condition state may change: all but clear-and-quiet and met-and-breaching.

    With CLEAR 0, PENDING 1, MET 2: ``status + breach`` is 0 (clear, quiet) or 3 (met,
    breaching) exactly for the cells that stay as they are; ``sum - 1`` wraps 0 to 255 in uint8.
    """
    total = status.view(np.uint8) + breach.view(np.uint8)
    total -= 1
    may_change: Bool = total <= 1
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

    parameter: int
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
    def build(cls, parameter: int, column: int, rules: Column) -> _TrendSlot:
        trends = _specs(rules, TrendSpec)
        n = len(rules)
        capacity = max((spec.capacity for spec in trends if spec is not None), default=1)
        never = TrendSpec(DETECTION_PARAMETERS[0], rising=True, rate_per_min=math.inf, window_s=1)
        specs = [never if spec is None else spec for spec in trends]
        rate = np.array([spec.rate_per_min for spec in specs])
        rising = np.array([spec.rising for spec in specs], dtype=np.bool_)
        return cls(
            parameter=parameter,
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

    parameter: int
    columns: list[int]  # the parameter's baseline columns in the stream rules
    resolution_ms: int
    window_ms: int
    min_samples: int
    wanted: Bool  # (P,) has a baseline rule on this parameter and no baseline yet
    waiting: int  # how many participants are wanted, so a fixed parameter costs nothing
    capacity: int
    t_ms: I64  # (P * capacity,) row-major rings
    value: F64
    head: I64
    count: I64
    last_entered_ms: I64

    def offer(
        self,
        participants: IntP,
        t_ms: I64,
        values: F64,
        status: tuple[I8, ...],
        stale: Bool,
    ) -> None:
        """Take due samples that arrived with every condition on the parameter clear (``status``
        after evaluating them, ``stale`` from the last tick); an excluded one is not entered."""
        rows = _flatnonzero(
            self.wanted.take(participants)
            & (t_ms - self.last_entered_ms.take(participants) >= self.resolution_ms)
        )
        if len(rows) == 0:
            return
        p = participants.take(rows)
        busy = stale.take(p)
        for cells in status:
            busy |= (cells.take(p, axis=0) != CLEAR).any(axis=1)
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
class _StreamRules:
    """The per-sample rules of every stream ``s = p * K + k``, as cells.

    Each stream has ``lb_columns`` limit and baseline cells (its parameter's slots, padded with
    cells that never breach) and ``trend_columns`` trend cells. Per-cell arrays are flat: the
    limit/baseline block first, cell ``s * lb_columns + c``, then the trend block, cell
    ``streams * lb_columns + s * trend_columns + j``; ``lb(array)`` and ``trend(array)`` are
    their (streams, columns) views. Each block is contiguous, so whole-block tests run at full
    speed.
    """

    streams: int
    lb_columns: int
    trend_columns: int
    status: I8
    run: I32
    since: I64
    confirm: I32
    delay: I64
    priority: I8
    threshold: F64  # what an update reports; NaN in a baseline cell until the baseline is fixed
    slot: I64  # the rule slot of each cell, -1 for padding
    participant: I64  # the participant of each cell
    offset: F64  # (streams, lb_columns): 0, or the baseline (NaN until fixed) in a baseline cell
    sign: F64
    breach_at: F64
    clear_at: F64
    trends: list[_TrendSlot]
    baselines: list[_BaselineBuffer]

    @property
    def trend_base(self) -> int:
        return self.streams * self.lb_columns

    def lb(self, array: npt.NDArray[ScalarT]) -> npt.NDArray[ScalarT]:
        return array[: self.trend_base].reshape(self.streams, self.lb_columns)

    def trend(self, array: npt.NDArray[ScalarT]) -> npt.NDArray[ScalarT]:
        return array[self.trend_base :].reshape(self.streams, self.trend_columns)


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
class _Staleness:
    """Every staleness slot at once: (P, slots) arrays, so a tick tests them in one pass."""

    slot: I64  # (slots,) rule slot of each column
    parameter: list[int]  # each column's detection parameter
    active: Bool  # (P, slots)
    stale_ms: I64
    priority: I8
    status: I8

    @classmethod
    def build(cls, slots: list[tuple[int, Column]]) -> _Staleness:
        def matrix(values: list[list[int]], dtype: type[np.generic]) -> npt.NDArray[Any]:
            return np.array(values, dtype=dtype).reshape(len(slots), -1).T.copy()

        specs = [_specs(column, StalenessSpec) for _, column in slots]
        return cls(
            slot=np.array([slot for slot, _ in slots], dtype=np.int64),
            parameter=[
                STREAM_OF[next(s for s in column if s is not None).parameter] for column in specs
            ],
            active=matrix([[s is not None for s in column] for column in specs], np.bool_),
            stale_ms=matrix(
                [[0 if s is None else s.stale_after_s * 1000 for s in column] for column in specs],
                np.int64,
            ),
            priority=matrix([_priority_codes(column).tolist() for _, column in slots], np.int8),
            status=np.zeros((len(slots[0][1]) if slots else 0, len(slots)), dtype=np.int8),
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
        self._dosed: list[int] = []  # queued markers: participants and times
        self._dosed_at: list[int] = []
        participants = len(rules.participants)
        self._participants = participants
        streams = participants * K
        artefacts = rules.artefacts
        self._plausible_low = np.array([artefacts.plausible[k][0] for k in DETECTION_PARAMETERS])
        self._plausible_high = np.array([artefacts.plausible[k][1] for k in DETECTION_PARAMETERS])
        spike = [artefacts.spike_delta.get(k) for k in DETECTION_PARAMETERS]
        self._spike_delta = np.array([math.inf if delta is None else delta for delta in spike])
        self._spike_gap_ms = artefacts.spike_max_gap_s * 1000
        self._stream_low = np.tile(self._plausible_low, participants)  # by stream, for dense rounds
        self._stream_high = np.tile(self._plausible_high, participants)
        self._stream_spike = np.tile(self._spike_delta, participants)
        self._last_t = np.full(streams, NEVER, dtype=np.int64)
        self._prev_t = np.full(streams, NEVER, dtype=np.int64)
        self._prev_v = np.zeros(streams)
        self._evidence_t = np.full(streams, NEVER, dtype=np.int64)
        self._evidence_v = np.zeros(streams)
        self._unconscious = np.zeros(participants, dtype=np.bool_)
        self._stale = np.zeros((K, participants), dtype=np.bool_)  # a staleness rule is met

        columns = [[row[slot] for row in rules.rules] for slot in range(len(rules.rule_ids))]
        self._stream_rules = self._build_stream_rules(columns)
        staleness: list[tuple[int, Column]] = []
        self._combined: list[tuple[_TickSlot, _CombinedParts]] = []
        self._news2: list[tuple[_TickSlot, Bool]] = []
        for slot, column in enumerate(columns):
            specs = [rule.spec for rule in column if rule is not None]
            if not specs:
                continue
            spec = specs[0]
            if isinstance(spec, StalenessSpec):
                staleness.append((slot, column))
            elif isinstance(spec, CombinedSpec):
                tick_slot = _TickSlot.build(slot, column, with_delay=True)
                self._combined.append((tick_slot, _CombinedParts.build(column)))
            elif isinstance(spec, News2Spec):
                alert_low = np.array(
                    [s is not None and s.alert_low for s in _specs(column, News2Spec)],
                    dtype=np.bool_,
                )
                self._news2.append((_TickSlot.build(slot, column, with_delay=False), alert_low))
        self._staleness = _Staleness.build(staleness) if staleness else None
        self._no_values = np.full(participants, np.nan)

    def _build_stream_rules(self, columns: list[Column]) -> _StreamRules:
        """Lay out every parameter's limit, baseline and trend slots as stream-row columns."""
        participants = self._participants
        layouts: list[tuple[list[int], list[int], list[int]]] = []
        for parameter in DETECTION_PARAMETERS:

            def slots_of(kind: type, parameter: Parameter = parameter) -> list[int]:
                return [
                    slot
                    for slot, column in enumerate(columns)
                    if any(
                        rule is not None
                        and isinstance(rule.spec, kind)
                        and rule.parameter is parameter
                        for rule in column
                    )
                ]

            baseline_slots = slots_of(BaselineSpec)
            layouts.append(
                (slots_of(LimitSpec) + baseline_slots, baseline_slots, slots_of(TrendSpec))
            )
        lb = max(len(lb_slots) for lb_slots, _, _ in layouts)
        trend_columns = max(len(trend_slots) for _, _, trend_slots in layouts)
        streams = participants * K
        cells = streams * (lb + trend_columns)
        lb_shape = (streams, lb)
        rules = _StreamRules(
            streams=streams,
            lb_columns=lb,
            trend_columns=trend_columns,
            status=np.zeros(cells, dtype=np.int8),
            run=np.zeros(cells, dtype=np.int32),
            since=np.zeros(cells, dtype=np.int64),
            confirm=np.ones(cells, dtype=np.int32),
            delay=np.zeros(cells, dtype=np.int64),
            priority=np.zeros(cells, dtype=np.int8),
            threshold=np.full(cells, np.nan),
            slot=np.full(cells, -1, dtype=np.int64),
            participant=np.zeros(cells, dtype=np.int64),
            offset=np.zeros(lb_shape),
            sign=np.ones(lb_shape),
            breach_at=np.full(lb_shape, math.inf),
            clear_at=np.full(lb_shape, -math.inf),
            trends=[],
            baselines=[],
        )
        stream_participant = np.arange(streams, dtype=np.int64) // K
        rules.lb(rules.participant)[:] = stream_participant[:, None]
        rules.trend(rules.participant)[:] = stream_participant[:, None]
        for k, (lb_slots, baseline_slots, trend_slots) in enumerate(layouts):
            for block, placed in (
                (rules.lb, list(enumerate(lb_slots))),
                (rules.trend, list(enumerate(trend_slots))),
            ):
                for c, slot in placed:
                    block(rules.slot)[k::K, c] = slot
                    block(rules.priority)[k::K, c] = _priority_codes(columns[slot])
                    for p, rule in enumerate(columns[slot]):
                        if rule is not None:
                            block(rules.confirm)[p * K + k, c] = rule.confirm
                            block(rules.delay)[p * K + k, c] = rule.delay_ms
                            self._place(rules, p * K + k, c, rule)
            for j, slot in enumerate(trend_slots):
                trend = _TrendSlot.build(k, j, columns[slot])
                rules.trend(rules.threshold)[k::K, j] = trend.threshold
                rules.trends.append(trend)
            if baseline_slots:
                baseline_columns = [lb_slots.index(slot) for slot in baseline_slots]
                for c in baseline_columns:
                    rules.offset[k::K, c] = np.nan
                rules.baselines.append(
                    self._baseline_buffer(k, baseline_columns, columns, baseline_slots)
                )
        return rules

    @staticmethod
    def _place(rules: _StreamRules, stream: int, c: int, rule: CompiledRule) -> None:
        """A limit or baseline rule's numbers: both read ``x = (value - offset) * sign``, breach
        ``x >= breach_at``, clear ``x <= clear_at``. A strict limit breaches at the next float
        above its threshold (exact for floats)."""
        spec = rule.spec
        if isinstance(spec, LimitSpec):
            direction = 1.0 if spec.high else -1.0
            signed = direction * spec.threshold
            clear_level = (
                spec.threshold - spec.clear_band if spec.high else spec.threshold + spec.clear_band
            )
            rules.sign[stream, c] = direction
            rules.breach_at[stream, c] = (
                signed if spec.inclusive else np.nextafter(signed, math.inf)
            )
            rules.clear_at[stream, c] = direction * clear_level
            rules.lb(rules.threshold)[stream, c] = spec.threshold
        elif isinstance(spec, BaselineSpec):
            rules.sign[stream, c] = 1.0 if spec.high else -1.0
            rules.breach_at[stream, c] = spec.delta
            rules.clear_at[stream, c] = spec.delta - spec.clear_band

    def _baseline_buffer(
        self, k: int, baseline_columns: list[int], columns: list[Column], slots: list[int]
    ) -> _BaselineBuffer:
        participants = self._participants
        settings = self.rules.baseline
        wanted = np.array(
            [any(columns[slot][p] is not None for slot in slots) for p in range(participants)],
            dtype=np.bool_,
        )
        return _BaselineBuffer(
            parameter=k,
            columns=baseline_columns,
            resolution_ms=settings.resolution_s * 1000,
            window_ms=settings.window_s * 1000,
            min_samples=settings.min_samples,
            wanted=wanted,
            waiting=int(np.count_nonzero(wanted)),
            capacity=settings.max_samples,
            t_ms=np.full(participants * settings.max_samples, 0, dtype=np.int64),
            value=np.full(participants * settings.max_samples, 0.0),
            head=np.zeros(participants, dtype=np.int64),
            count=np.zeros(participants, dtype=np.int64),
            last_entered_ms=np.full(participants, NEVER, dtype=np.int64),
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
        self._dosed.append(participant)
        self._dosed_at.append(t_ms)

    def _fix_baselines(self) -> None:
        """Apply queued markers in order; a participant's later marker sees its earlier one."""
        if not self._dosed:
            return
        participants = np.array(self._dosed, dtype=np.intp)
        times = np.array(self._dosed_at, dtype=np.int64)
        self._dosed.clear()
        self._dosed_at.clear()
        while len(participants):
            _, first = np.unique(participants, return_index=True)
            first.sort()
            for buffer in self._stream_rules.baselines:
                self._fix_buffer(buffer, participants.take(first), times.take(first))
            rest = np.ones(len(participants), dtype=np.bool_)
            rest[first] = False
            participants, times = participants[rest], times[rest]

    def _fix_buffer(self, buffer: _BaselineBuffer, participants: IntP, t_ms: I64) -> None:
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
        buffer.waiting = int(np.count_nonzero(buffer.wanted))
        rules = self._stream_rules
        rows = (participants * K + buffer.parameter)[:, None]
        columns = buffer.columns
        rules.offset[rows, columns] = baseline[:, None]
        # A baseline column breaches at delta; a slot without a rule never breaches (inf).
        delta = rules.breach_at[rows, columns]
        rules.lb(rules.threshold)[rows, columns] = np.where(
            np.isfinite(delta), baseline[:, None] + rules.sign[rows, columns] * delta, np.nan
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
        if self._staleness is not None:
            self._staleness_tick(t_ms, evidence_t, changes)
        nothing = self._no_values
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
            values, flagged, parameter = batch.value, batch.flagged, batch.parameter
        else:
            values, flagged = batch.value.take(index), batch.flagged.take(index)
            parameter = batch.parameter.take(index)
        parameter = parameter.astype(np.intp)
        if 2 * len(stream) >= self._stream_rules.streams:
            self._dense_round(stream, t_ms, values, flagged, changes)
            return
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
            kept = _flatnonzero(plausible)
            self._prev_t[stream.take(kept)] = t_ms.take(kept)
            self._prev_v[stream.take(kept)] = values.take(kept)
        if not evidence.all():
            rows = _flatnonzero(evidence)
            if len(rows) == 0:
                return
            stream, t_ms, values = stream.take(rows), t_ms.take(rows), values.take(rows)
        self._evidence_t[stream] = t_ms
        self._evidence_v[stream] = values
        self._evaluate(changes, stream=stream, t=t_ms, v=values)

    def _dense_round(
        self, stream: IntP, t_ms: I64, values: F64, flagged: Bool, changes: _Changes
    ) -> None:
        """:meth:`_round` when most streams have a sample: the samples are scattered into
        stream-indexed arrays once and every test runs on whole arrays, with no gathering."""
        streams = self._stream_rules.streams
        present = np.zeros(streams, dtype=np.bool_)
        present[stream] = True
        v = np.full(streams, np.nan)
        v[stream] = values
        t = np.zeros(streams, dtype=np.int64)
        t[stream] = t_ms
        np.copyto(self._last_t, t, where=present)
        # Section 2 on every stream; an absent stream's NaN fails the plausibility test.
        plausible = (v >= self._stream_low) & (v <= self._stream_high)
        if flagged.any():
            plausible[stream.take(_flatnonzero(flagged))] = False
        evidence = plausible & ~(
            (t - self._prev_t <= self._spike_gap_ms)
            & (np.abs(v - self._prev_v) > self._stream_spike)
        )
        np.copyto(self._prev_t, t, where=plausible)
        np.copyto(self._prev_v, v, where=plausible)
        np.copyto(self._evidence_t, t, where=evidence)
        np.copyto(self._evidence_v, v, where=evidence)
        self._evaluate(changes, present=evidence, t=t, v=v)

    def _evaluate(
        self,
        changes: _Changes,
        *,
        t: I64,
        v: F64,
        stream: IntP | None = None,
        present: Bool | None = None,
    ) -> None:
        """Section 3 on evidence samples, at most one per stream.

        Either ``stream`` names the streams of the samples ``t``/``v`` (the rule rows are
        gathered), or ``t``/``v`` are indexed by stream and ``present`` marks the streams with
        an evidence sample (whole rule arrays are tested, absent rows masked out). Limit and
        baseline cells are tested as one matrix; trend cells only where a sample entered the
        window. The cells that may change go to :meth:`_advance` together.
        """
        rules = self._stream_rules
        lb = rules.lb_columns
        status_lb = rules.lb(rules.status)
        if present is not None:
            x = v[:, None] - rules.offset
            x *= rules.sign
            lb_breach = x >= rules.breach_at
            work = _may_change(lb_breach, status_lb)
            work &= present[:, None]
            pairs = np.flatnonzero(work)  # cells of the limit/baseline block
            row = pairs // lb
            cell = pairs
            clears = x.reshape(-1).take(pairs) <= rules.clear_at.reshape(-1).take(pairs)
        else:
            assert stream is not None
            x = v[:, None] - rules.offset.take(stream, axis=0)
            x *= rules.sign.take(stream, axis=0)
            lb_breach = x >= rules.breach_at.take(stream, axis=0)
            work = _may_change(lb_breach, status_lb.take(stream, axis=0))
            pairs = np.flatnonzero(work)  # (row, column) of the gathered rows
            row, column = np.divmod(pairs, lb)
            cell = stream.take(row) * lb + column
            clears = x.reshape(-1).take(pairs) <= rules.clear_at.reshape(-1).take(cell)
        # ``clears``: for a met cell that does not breach, whether the clear predicate holds.
        hit = lb_breach.reshape(-1).take(pairs)

        rows_by_parameter: dict[int, tuple[IntP, IntP]] = {}

        def rows_of(k: int) -> tuple[IntP, IntP]:
            """The round's rows of parameter k and their participants (ascending)."""
            if k not in rows_by_parameter:
                if present is not None:
                    participants = _flatnonzero(present[k::K])
                    rows = participants * K + k
                else:
                    assert stream is not None
                    rows = _flatnonzero(stream % K == k)
                    participants = stream.take(rows) // K
                rows_by_parameter[k] = (rows, participants)
            return rows_by_parameter[k]

        parts = [(cell, hit, clears, t.take(row), v.take(row))]
        status_trend = rules.trend(rules.status)
        for trend in rules.trends:
            rows, participants = rows_of(trend.parameter)
            if len(rows) == 0:
                continue
            t_rows = t.take(rows)
            entered, trend_breach, slope = trend.offer(
                participants, t_rows, (t_rows - self.origin_ms) // 1000, v.take(rows)
            )
            trend_streams = participants.take(entered) * K + trend.parameter
            trend_status = status_trend[trend_streams, trend.column]
            changing = _flatnonzero(_may_change(trend_breach, trend_status))
            if len(changing):
                trend_hit = trend_breach.take(changing)
                parts.append(
                    (
                        rules.trend_base
                        + trend_streams.take(changing) * rules.trend_columns
                        + trend.column,
                        trend_hit,
                        ~trend_hit,  # a trend clears on any non-breaching evaluation
                        t_rows.take(entered).take(changing),
                        slope.take(changing),
                    )
                )
        if len(parts) > 1:
            cell, hit, clears, t_cell, value = (
                np.concatenate(field) for field in zip(*parts, strict=True)
            )
        else:
            cell, hit, clears, t_cell, value = parts[0]
        if len(cell):
            self._advance(cell=cell, hit=hit, clears=clears, t=t_cell, value=value, changes=changes)
        participants_count = self._participants
        for buffer in rules.baselines:
            if not buffer.waiting:  # every baseline of this parameter is fixed
                continue
            rows, participants = rows_of(buffer.parameter)
            if len(rows):
                k = buffer.parameter
                buffer.offer(
                    participants,
                    t.take(rows),
                    v.take(rows),
                    (
                        status_lb.reshape(participants_count, K, lb)[:, k, :],
                        status_trend.reshape(participants_count, K, rules.trend_columns)[:, k, :],
                    ),
                    self._stale[k],
                )

    def _advance(
        self, *, cell: IntP, hit: Bool, clears: Bool, t: I64, value: F64, changes: _Changes
    ) -> None:
        """The section 3 state machine on the cells that may change."""
        rules = self._stream_rules
        old = rules.status.take(cell).astype(np.int64)
        run = rules.run.take(cell).astype(np.int64)
        since = rules.since.take(cell)
        start = hit & (old == CLEAR)
        more = hit & (old == PENDING)
        run = np.where(start, 1, np.where(more, run + 1, run))
        since = np.where(start, t, since)
        ready = (run >= rules.confirm.take(cell)) & (t - since >= rules.delay.take(cell))
        met = old == MET
        # Breaching: met, or pending until ready. Not breaching: a pending condition is
        # cancelled; a met one clears only on a sample that satisfies the clear predicate.
        new = np.where(
            hit,
            np.where(met | ready, MET, PENDING),
            np.where(met & ~clears, MET, CLEAR),
        )
        rules.status[cell] = new
        rules.run[cell] = run
        rules.since[cell] = since
        changed = _flatnonzero(new != old)
        if len(changed) == 0:
            return
        cell = cell.take(changed)
        changes.add(
            t_ms=t.take(changed),
            participant=rules.participant.take(cell),
            slot=rules.slot.take(cell),
            status=new.take(changed),
            priority=rules.priority.take(cell),
            value=value.take(changed),
            threshold=rules.threshold.take(cell),
        )

    # -- section 4: ticks -----------------------------------------------------------------------

    def _staleness_tick(self, t_ms: int, evidence_t: I64, changes: _Changes) -> None:
        """Section 4 staleness: met while the age of the last evidence reaches the limit."""
        stale = self._staleness
        assert stale is not None
        last = evidence_t[:, stale.parameter]
        age = t_ms - np.where(last == NEVER, self.origin_ms, last)
        breach = stale.active & (age >= stale.stale_ms)
        for j, k in enumerate(stale.parameter):
            self._stale[k] |= breach[:, j]
        new = np.where(breach, MET, CLEAR).astype(np.int8)
        changed = np.flatnonzero(new != stale.status)  # 2-D: (participant, column)
        stale.status = new
        if len(changed) == 0:
            return
        participant, column = np.divmod(changed, len(stale.parameter))
        changes.add(
            t_ms=np.full(len(changed), t_ms, dtype=np.int64),
            participant=participant,
            slot=stale.slot.take(column),
            status=new.reshape(-1).take(changed),
            priority=stale.priority.reshape(-1).take(changed),
            value=age.reshape(-1).take(changed) / 1000.0,
            threshold=stale.stale_ms.reshape(-1).take(changed) / 1000.0,
        )

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

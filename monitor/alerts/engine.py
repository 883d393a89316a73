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
    evidence, read at ticks by staleness, combined and NEWS2 rules;
    ``_news2_code`` int16, the NEWS2 code of the latest evidence (see ``NEWS2_RED_CODE``), kept
    by the rounds, so a tick only sums codes.
The per-sample rules of every stream, a :class:`_StreamRules` of *cells*: each stream has
    ``lb_columns`` limit/baseline cells (its parameter's slots, padded with cells that never
    breach) and ``trend_columns`` trend cells, stored as two contiguous blocks of flat arrays:
    ``status`` int8, ``run`` int32, ``since`` int64: the condition state machine (section 3);
    ``confirm`` int32, ``delay`` int64, ``priority`` int8, ``threshold`` and ``rank``
    (participant and slot): each cell's rule numbers and what its updates report; each block is
    column-major (cell ``c * P * K + s``), so a test of one value per stream against every
    column broadcasts along the outer axis and runs at full speed;
    for the limit/baseline block, (lb_columns, P * K) ``offset``, ``sign``, ``breach_at``,
    ``clear_at`` float64, so both kinds read ``x = (value - offset) * sign``, breach
    ``x >= breach_at``, clear ``x <= clear_at``. A limit's offset is 0 and a strict limit
    breaches at the next float above its threshold (exact for floats); a baseline cell's offset
    is the baseline, NaN while there is none, which makes every comparison false. Multiplying by
    +-1 and subtracting 0 are exact, so these are the reference's comparisons bit for bit.
Quiet intervals. Whether a cell breaches is monotone in the value, so for each cell and status
    there is an exact open interval of values on which the cell stays as it is (clear: below
    its first breaching value; met: from it on; pending: none), computed once per cell
    (``quiet_low``/``quiet_high``) and intersected per stream over its cells' current status
    (``lb_low``/``lb_high``, recomputed for the streams whose cells change). Likewise each
    stream's NEWS2 band is an interval. Most samples fall inside both, so a round tests the
    limit/baseline cells and rescores NEWS2 only for the few outside (gathered; on whole
    arrays when they are most streams), tests the trend cells of the samples that entered a
    window, then advances only the cells that may change, all parameters together.
Per trend slot, a :class:`_TrendSlot`: ring buffers of shape (capacity, P) holding ``t_ms``,
    ``t_s`` and ``qv`` (int64) with running int64 sums St, Sv, Stt, Stv (add the entering sample,
    subtract the leaving ones), and per-participant head, count and rule numbers. Position-major,
    so the samples that enter together (the usual case) are written side by side.
Per parameter with a baseline rule, a :class:`_BaselineBuffer`: rings of shape (max_samples, P)
    of int64 times and float64 values, filled until the participant's baseline is fixed.
Per combined or NEWS2 slot, a :class:`_TickSlot` of (P,) arrays: status, since, band, rule
    numbers; every staleness slot together in one :class:`_Staleness` of (P, slots) arrays.
    A tick reads every stream's latest evidence in a few whole-array passes and runs the state
    machines only on the participants whose result may change; staleness costs nothing while
    no evidence can be old enough.
Dose markers are queued and fix baselines in one vectorised pass before the next batch.

Buffers are created with ``np.full`` rather than ``np.zeros`` so that their pages are touched
when the engine is built, not during the first batch.

A participant without a rule in a slot gets numbers that never breach; overrides are just other
numbers in that participant's row. For 2,000 participants and the MDMA rule set the state is a few
MB, most of it the trend and baseline rings.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from monitor.alerts.inputs import SampleBatch
from monitor.alerts.rules import (
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
from monitor.models import DETECTION_PARAMETERS, AlarmPriority, Consciousness, Parameter

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
LATEST: Final = 2**62  # "not until the end of time"
CLEAR: Final = int(ConditionStatus.CLEAR)
PENDING: Final = int(ConditionStatus.PENDING)
MET: Final = int(ConditionStatus.MET)
assert (CLEAR, PENDING, MET) == (0, 1, 2), "_may_change relies on these codes"
NO_BAND: Final = -1
FIRST_BREACHING_STEPS: Final = 64
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
# Each stream's NEWS2 score is kept as a *code*: the score, plus NEWS2_RED_CODE when it is red.
# NEWS2_RED_CODE exceeds any aggregate, so one sum of codes per participant carries both the
# aggregate (sum % NEWS2_RED_CODE) and whether a single score was red (sum >= NEWS2_RED_CODE),
# and one lookup in NEWS2_BANDS gives a tick the band.
NEWS2_RED_CODE: Final = sum(int(scores.max()) for _, scores in NEWS2_CHART.values()) + NEWS2_RED + 1
NEWS2_UNCONSCIOUS: Final = NEWS2_RED + NEWS2_RED_CODE  # anything but alert scores a red 3
NEWS2_CODES: Final = (len(NEWS2_CHART) + 1) * NEWS2_UNCONSCIOUS + 1  # every possible sum


def _news2_band(code: int, *, alert_low: bool) -> int:
    """The band of a participant's sum of codes (section 4)."""
    aggregate = code % NEWS2_RED_CODE
    if aggregate >= NEWS2_HIGH_AT:
        return PRIORITY_CODE[AlarmPriority.HIGH]
    if code >= NEWS2_RED_CODE or aggregate >= NEWS2_MEDIUM_AT:
        return PRIORITY_CODE[AlarmPriority.MEDIUM]
    if alert_low and aggregate >= NEWS2_LOW_AT:
        return PRIORITY_CODE[AlarmPriority.LOW]
    return NO_BAND


# Three tables of NEWS2_CODES bands, one after the other: without and with alert_low, and all
# NO_BAND for a participant without the rule; each participant looks up in its own.
NEWS2_BANDS: Final = np.array(
    [_news2_band(code, alert_low=low) for low in (False, True) for code in range(NEWS2_CODES)]
    + [NO_BAND] * NEWS2_CODES,
    dtype=np.int64,
)


_ChangePart = tuple[I64, I64, npt.NDArray[np.integer], npt.NDArray[np.integer], F64, F64]
"""Times, ranks, statuses, priorities, values and thresholds of some changes."""


class _Changes:
    """Condition changes found during one call, turned into objects once, in order, at the end.

    Each change names its participant and rule slot by one *rank*, ``participant * slots +
    slot``, which orders changes of equal time as section 6 does.
    """

    __slots__ = ("_ordered", "_parts", "_slots")

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._parts: list[_ChangePart] = []
        self._ordered = True

    def add(
        self,
        *,
        t_ms: I64,
        rank: I64,
        status: npt.NDArray[np.integer],
        priority: npt.NDArray[np.integer],
        value: F64,  # NaN: no value
        threshold: F64,
        ordered: bool,
    ) -> None:
        """``ordered``: these changes are already in section 6 order among themselves."""
        self._parts.append((t_ms, rank, status, priority, value, threshold))
        self._ordered = ordered and len(self._parts) == 1

    def updates(self) -> list[ConditionUpdate]:
        """Section 6 order: by (t_ms, participant, rule).

        The objects are built by ``tuple.__new__`` on complete rows, skipping the named tuple's
        Python-level ``__new__``, with the enum members looked up by numpy in object arrays.
        """
        if not self._parts:
            return []
        if len(self._parts) == 1:
            t_ms, rank, status, priority, value, threshold = self._parts[0]
        else:
            t_ms, rank, status, priority, value, threshold = (
                np.concatenate(field) for field in zip(*self._parts, strict=True)
            )
        if not self._ordered:
            order = _order(t_ms, rank)
            t_ms, rank, status = t_ms.take(order), rank.take(order), status.take(order)
            priority, value, threshold = (
                priority.take(order),
                value.take(order),
                threshold.take(order),
            )
        participant, slot = np.divmod(rank, self._slots)
        fields = zip(
            t_ms.tolist(),
            participant.tolist(),
            slot.tolist(),
            STATUS_OBJECTS.take(status).tolist(),
            PRIORITY_OBJECTS.take(priority).tolist(),
            _optional(value),
            _optional(threshold),
            strict=True,
        )
        return list(map(tuple.__new__, itertools.repeat(ConditionUpdate), fields))


STATUS_OBJECTS: Final = np.array(STATUSES, dtype=object)
PRIORITY_OBJECTS: Final = np.array(PRIORITIES, dtype=object)


def _order(t_ms: I64, rank: I64) -> IntP:
    """The stable order by (t_ms, rank): one sort of a combined int64 key when it fits, which
    is several times faster than ``np.lexsort``."""
    start, end = int(t_ms.min()), int(t_ms.max())
    if start == end:  # a tick's changes
        by_rank: IntP = rank.argsort(kind="stable")
        return by_rank
    span = int(rank.max()) + 1
    if (end - start + 1) * span >= 2**63:
        return np.lexsort((rank, t_ms))
    key = t_ms - start
    key *= span
    key += rank
    order: IntP = key.argsort(kind="stable")
    return order


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


def _first_breaching(u: F64, b: F64) -> F64:
    """Elementwise the least float ``y`` with ``fl(y - u) >= b``: since ``fl(y - u)`` never
    decreases as ``y`` grows, ``fl(y - u) >= b`` exactly when ``y >= result``.

    ``u + b`` is within a few ulps of it, so a few steps of one ulp find it; an element that has
    not settled after ``FIRST_BREACHING_STEPS`` (no finite input needs that many) is NaN, which
    makes every quiet interval built on it empty.
    """
    y = u + b
    for _ in range(FIRST_BREACHING_STEPS):
        below = np.nextafter(y, -math.inf)
        down = below - u >= b  # the float below breaches too
        up = ~(y - u >= b)  # y itself does not breach
        if not (down.any() or up.any()):
            return y
        y = np.where(down, below, np.where(up, np.nextafter(y, math.inf), y))
    settled = (y - u >= b) & ~(np.nextafter(y, -math.inf) - u >= b)
    return np.where(settled, y, np.nan)


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
    buffer_ms: I64  # (capacity * P,): position j of participant p's ring at j * P + p
    buffer_t: I64  # whole seconds since origin
    buffer_q: I64  # round(value * 100)
    head: I64
    count: I64
    sum_t: I64
    sum_q: I64
    sum_tt: I64
    sum_tq: I64
    due_ms: I64  # when the next sample may enter: LATEST without the rule

    @classmethod
    def build(cls, parameter: int, column: int, rules: Column) -> _TrendSlot:
        trends = _specs(rules, TrendSpec)
        n = len(rules)
        capacity = max((spec.capacity for spec in trends if spec is not None), default=1)
        never = TrendSpec(DETECTION_PARAMETERS[0], rising=True, rate_per_min=math.inf, window_s=1)
        specs = [never if spec is None else spec for spec in trends]
        rate = np.array([spec.rate_per_min for spec in specs])
        rising = np.array([spec.rising for spec in specs], dtype=np.bool_)
        active = np.array([spec is not None for spec in trends], dtype=np.bool_)
        return cls(
            parameter=parameter,
            column=column,
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
            due_ms=np.where(active, NEVER, LATEST),
        )

    def offer(self, participants: IntP, t_ms: I64, t_s: I64, values: F64) -> tuple[IntP, Bool, F64]:
        """Section 3 trend window: rows that entered, and their breach and slope (NaN: none)."""
        rows = _flatnonzero(t_ms >= self.due_ms.take(participants))
        if len(rows) == 0:
            return rows, np.zeros(0, dtype=np.bool_), np.zeros(0)
        p = participants.take(rows)
        now_ms = t_ms.take(rows)
        capacity = self.capacity
        rings = len(self.head)
        # Leaving: older than window_s before the entering sample (several after a gap). The
        # spacing of entered samples keeps the count within capacity, so nothing else leaves.
        leaving, newest = p, now_ms
        while len(leaving):
            head = self.head.take(leaving)
            oldest = head * rings + leaving
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
        at = (head + count - 1) % capacity * rings + p
        self.buffer_ms[at] = now_ms
        self.buffer_t[at] = ts
        self.buffer_q[at] = q
        self.count[p] = count
        self.due_ms[p] = now_ms + self.resolution_ms.take(p)
        sum_t = self.sum_t.take(p) + ts
        sum_q = self.sum_q.take(p) + q
        sum_tt = self.sum_tt.take(p) + ts * ts
        sum_tq = self.sum_tq.take(p) + ts * q
        self.sum_t[p] = sum_t
        self.sum_q[p] = sum_q
        self.sum_tt[p] = sum_tt
        self.sum_tq[p] = sum_tq

        span_s = ts - self.buffer_t.take(head * rings + p)
        enough = (count >= self.min_samples.take(p)) & (2 * span_s >= self.window_s.take(p))
        if not enough.any():  # e.g. while the windows fill: no slope, so no breach
            return rows, np.zeros(len(rows), dtype=np.bool_), np.full(len(rows), np.nan)
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
    t_ms: I64  # (capacity * P,): position j of participant p's ring at j * P + p
    value: F64
    head: I64
    count: I64
    due_ms: I64  # when the next sample may enter: LATEST once not wanted

    def offer(
        self,
        participants: IntP,
        t_ms: I64,
        values: F64,
        status: tuple[I8, ...],
        stale: Bool | None,
    ) -> None:
        """Take due samples that arrived with every condition on the parameter clear (``status``
        after evaluating them, ``stale`` from the last tick); an excluded one is not entered."""
        rows = _flatnonzero(t_ms >= self.due_ms.take(participants))
        if len(rows) == 0:
            return
        p = participants.take(rows)
        busy = np.zeros(len(p), dtype=np.bool_) if stale is None else stale.take(p)
        for cells in status:  # (columns, P); CLEAR is 0
            busy |= cells.take(p, axis=1).any(axis=0)
        rows, p = rows[~busy], p[~busy]
        if len(rows) == 0:
            return
        capacity = self.capacity
        head = self.head.take(p)
        count = self.count.take(p)
        full = count == capacity
        at = (head + count) % capacity * len(self.head) + p
        self.t_ms[at] = t_ms.take(rows)
        self.value[at] = values.take(rows)
        self.head[p] = np.where(full, (head + 1) % capacity, head)
        self.count[p] = np.where(full, count, count + 1)
        self.due_ms[p] = t_ms.take(rows) + self.resolution_ms

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
        cells = position * len(self.head) + p[:, None]
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
    limit/baseline block first, cell ``c * streams + s``, then the trend block, cell
    ``streams * lb_columns + j * streams + s``; ``lb(array)`` and ``trend(array)`` are their
    (columns, streams) views. Column-major, because numpy broadcasts a per-stream row along an
    outer axis at full speed but loops slowly over a short inner one (3x to 50x here).
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
    rank: I64  # participant * slots + slot of each cell: what its updates report and sort by
    offset: F64  # (lb_columns, streams): 0, or the baseline (NaN until fixed) in a baseline cell
    sign: F64
    breach_at: F64
    clear_at: F64
    trends: list[_TrendSlot]
    baselines: list[_BaselineBuffer]
    # Quiet intervals: a cell in a given status does not change on any value v with
    # low < v < high (NaN: no such v). (3, lb_columns, streams) by status, flat.
    quiet_low: F64
    quiet_high: F64
    lb_low: F64  # (streams,): the intersection over the stream's cells in their current status
    lb_high: F64

    @property
    def trend_base(self) -> int:
        return self.streams * self.lb_columns

    def lb(self, array: npt.NDArray[ScalarT]) -> npt.NDArray[ScalarT]:
        return array[: self.trend_base].reshape(self.lb_columns, self.streams)

    def trend(self, array: npt.NDArray[ScalarT]) -> npt.NDArray[ScalarT]:
        return array[self.trend_base :].reshape(self.trend_columns, self.streams)

    def set_quiet(self, columns: IntP, streams: IntP) -> None:
        """The quiet intervals of cells ``(columns, streams)`` (broadcast), from their numbers.

        With ``y = sign * v`` a cell breaches exactly when ``y >= w``, ``w`` its first breaching
        ``y`` (:func:`_first_breaching`): clear, it stays put below ``w``; met, from ``w`` on;
        pending, never. A baseline cell without a baseline never breaches.
        """
        offset = self.offset[columns, streams]
        sign = self.sign[columns, streams]
        fixed = ~np.isnan(offset)
        w = _first_breaching(np.where(fixed, offset * sign, 0.0), self.breach_at[columns, streams])
        below = np.nextafter(w, -math.inf)
        up = sign > 0
        low = self.quiet_low.reshape(3, self.lb_columns, self.streams)
        high = self.quiet_high.reshape(3, self.lb_columns, self.streams)
        low[CLEAR][columns, streams] = np.where(fixed & ~up, -w, -math.inf)
        high[CLEAR][columns, streams] = np.where(fixed & up, w, math.inf)
        low[MET][columns, streams] = np.where(fixed, np.where(up, below, -math.inf), np.nan)
        high[MET][columns, streams] = np.where(fixed, np.where(up, math.inf, -below), np.nan)

    def relax(self, streams: IntP) -> None:
        """Recompute the streams' quiet intervals from their cells' current status."""
        cells = np.arange(self.lb_columns, dtype=np.intp)[:, None] * self.streams + streams
        at = self.status.take(cells).astype(np.intp) * self.trend_base + cells
        self.lb_low[streams] = self.quiet_low.take(at).max(axis=0, initial=-math.inf)
        self.lb_high[streams] = self.quiet_high.take(at).min(axis=0, initial=math.inf)


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
    max_age: int | None  # the max_age_ms of every participant with the rule, if they share it
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
        shared = {ms for ms, rule in zip(max_age, column, strict=True) if rule is not None}
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
            max_age=shared.pop() if len(shared) == 1 else None,
            band=np.full(n, NO_BAND, dtype=np.int64),
        )


@dataclass(slots=True)
class _Staleness:
    """Every staleness slot at once: (P, slots) arrays, so a tick tests them in one pass."""

    slot: I64  # (slots,) rule slot of each column
    parameter: list[int]  # each column's detection parameter
    columns: IntP  # the same, for gathering evidence times
    active: Bool  # (P, slots)
    stale_ms: I64
    longest_ms: int  # the longest active stale_ms: from then on, no stream is fresh by default
    shortest_ms: int  # the shortest active stale_ms
    priority: I8
    met: Bool
    any_met: bool

    @classmethod
    def build(cls, slots: list[tuple[int, Column]]) -> _Staleness:
        def matrix(values: list[list[int]], dtype: type[np.generic]) -> npt.NDArray[Any]:
            return np.array(values, dtype=dtype).reshape(len(slots), -1).T.copy()

        specs = [_specs(column, StalenessSpec) for _, column in slots]
        parameter = [
            STREAM_OF[next(s for s in column if s is not None).parameter] for column in specs
        ]
        stale_ms = [
            [0 if s is None else s.stale_after_s * 1000 for s in column] for column in specs
        ]
        return cls(
            slot=np.array([slot for slot, _ in slots], dtype=np.int64),
            parameter=parameter,
            columns=np.array(parameter, dtype=np.intp),
            active=matrix([[s is not None for s in column] for column in specs], np.bool_),
            stale_ms=matrix(stale_ms, np.int64),
            longest_ms=max(max(column) for column in stale_ms),
            shortest_ms=min(
                ms
                for column, specs_of in zip(stale_ms, specs, strict=True)
                for ms, spec in zip(column, specs_of, strict=True)
                if spec is not None
            ),
            priority=matrix([_priority_codes(column).tolist() for _, column in slots], np.int8),
            met=np.zeros((len(slots[0][1]) if slots else 0, len(slots)), dtype=np.bool_),
            any_met=False,
        )

    def met_on(self, k: int) -> Bool | None:
        """Participants with a staleness rule on parameter ``k`` met at the last tick."""
        columns = [j for j, parameter in enumerate(self.parameter) if parameter == k]
        if not columns:
            return None
        met_on = self.met[:, columns[0]].copy()
        for j in columns[1:]:
            met_on |= self.met[:, j]
        return met_on


@dataclass(slots=True)
class _CombinedParts:
    """The parts of one combined slot, padded to the longest participant's list."""

    stream: IntP  # (parts, P) stream index of each part
    sign: F64
    breach_at: F64  # -inf for padding, which always holds
    padding: list[Bool | None]  # per part, where it is padding; None when it is nowhere
    # Per part, when every participant's is on one parameter k with one direction (overrides
    # change only numbers): k, whether high, and the value bound (v >= it or v <= it), so a
    # tick reads the strided column and compares once. None otherwise.
    uniform: list[tuple[int, bool, F64] | None]

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
        pad = breach_at == -math.inf
        uniform: list[tuple[int, bool, F64] | None] = []
        for j in range(width):
            real = ~pad[j]
            offsets = set((stream[j, real] % K).tolist())
            signs = set(sign[j, real].tolist())
            if len(offsets) != 1 or len(signs) != 1:
                uniform.append(None)
                continue
            high = signs == {1.0}
            # High: v >= breach_at. Low: -v >= breach_at, i.e. v <= -breach_at. Padding holds.
            if high:
                bound = np.where(real, breach_at[j], -math.inf)
            else:
                bound = np.where(real, -breach_at[j], math.inf)
            uniform.append((offsets.pop(), high, bound))
        return cls(stream, sign, breach_at, [row if row.any() else None for row in pad], uniform)


@dataclass(slots=True)
class _News2Chart:
    """NEWS2 chart 1 by detection parameter, for the rounds that keep each stream's code of its
    latest evidence up to date, with the open interval of values that keep that code.

    The tables are tiny and stay in cache; a gathered lookup reads them by parameter, and only
    a round that rescores most streams uses the per-stream copy of the limits.
    """

    upper: F64  # (limits, K): each parameter's upper band limits, padded with +inf
    codes: npt.NDArray[np.int16]  # (K * bands,): each parameter's code per band
    bounds: F64  # (K * bands, 2): each band's interval (low, high) of values
    bands: int  # limits + 1
    upper_by_stream: F64  # (limits, streams)
    first_by_stream: IntP  # (streams,): where each stream's parameter's bands start

    @classmethod
    def build(cls, participants: int) -> _News2Chart:
        limits = max(len(upper) for upper, _ in NEWS2_CHART.values())
        upper = np.full((limits, K), math.inf)
        codes = np.zeros((K, limits + 1), dtype=np.int16)
        for k, (upper_limits, scores) in NEWS2_CHART.items():
            upper[: len(upper_limits), k] = upper_limits
            codes[k, : len(scores)] = np.where(scores == NEWS2_RED, NEWS2_UNCONSCIOUS, scores)
        # Band i holds upper[i - 1] < v <= upper[i], i.e. the open (upper[i - 1], next(upper[i])).
        bounds = np.concatenate([np.full((1, K), -math.inf), upper, np.full((1, K), math.inf)])
        first = np.arange(K, dtype=np.intp) * (limits + 1)
        return cls(
            upper=upper,
            codes=codes.reshape(-1),
            bounds=np.stack(
                [bounds[:-1].T.reshape(-1), np.nextafter(bounds[1:], math.inf).T.reshape(-1)],
                axis=1,
            ),
            bands=limits + 1,
            upper_by_stream=np.tile(upper, participants),
            first_by_stream=np.tile(first, participants),
        )

    def band(self, values: F64, streams: IntP | None = None) -> IntP:
        """Where each value's band is in the tables: its parameter's first band plus the number
        of its upper limits below it. ``values`` are those of ``streams``, or of every stream
        when ``streams`` is None."""
        if streams is None:
            upper, first = self.upper_by_stream, self.first_by_stream
        else:
            parameter = streams % K
            upper, first = self.upper.take(parameter, axis=1), parameter * self.bands
        above = np.greater(values, upper).view(np.int8).sum(axis=0, dtype=np.int8)
        at: IntP = first + above
        return at


@dataclass(slots=True)
class _News2Slot:
    """One NEWS2 slot: its tick state, and per participant where its band table starts."""

    tick: _TickSlot
    bands_at: IntP  # (P,) offset into NEWS2_BANDS by alert_low, or the NO_BAND table
    max_age_ms: I64  # (streams,)

    @classmethod
    def build(cls, slot: int, column: Column) -> _News2Slot:
        tick = _TickSlot.build(slot, column, with_delay=False)
        specs = _specs(column, News2Spec)
        table = [2 if spec is None else int(spec.alert_low) for spec in specs]
        return cls(
            tick=tick,
            bands_at=np.array(table, dtype=np.intp) * NEWS2_CODES,
            max_age_ms=np.repeat(tick.max_age_ms, K),
        )


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
        self._slots = len(rules.rule_ids)
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
        self._consciousness = np.zeros(participants, dtype=np.int16)  # NEWS2 code: 0 when alert

        columns = [[row[slot] for row in rules.rules] for slot in range(len(rules.rule_ids))]
        self._stream_rules = self._build_stream_rules(columns)
        staleness: list[tuple[int, Column]] = []
        self._combined: list[tuple[_TickSlot, _CombinedParts]] = []
        self._news2: list[_News2Slot] = []
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
                self._news2.append(_News2Slot.build(slot, column))
        self._staleness = _Staleness.build(staleness) if staleness else None
        self._news2_chart = _News2Chart.build(participants) if self._news2 else None
        # Each stream's NEWS2 code of its latest evidence and the values that keep it; until
        # the first evidence, no value does.
        self._news2_code = np.zeros(streams, dtype=np.int16)
        self._news2_band = np.full((streams, 2), [math.inf, -math.inf])  # (low, high) by stream
        every = np.arange(streams, dtype=np.intp)
        lb_columns = np.arange(self._stream_rules.lb_columns, dtype=np.intp)[:, None]
        self._stream_rules.set_quiet(lb_columns, every)
        self._stream_rules.relax(every)

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
        lb_shape = (lb, streams)
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
            rank=np.zeros(cells, dtype=np.int64),  # padding keeps its participant's slot 0
            offset=np.zeros(lb_shape),
            sign=np.ones(lb_shape),
            breach_at=np.full(lb_shape, math.inf),
            clear_at=np.full(lb_shape, -math.inf),
            trends=[],
            baselines=[],
            quiet_low=np.full(3 * streams * lb, math.inf),  # pending: never quiet
            quiet_high=np.full(3 * streams * lb, -math.inf),
            lb_low=np.full(streams, -math.inf),
            lb_high=np.full(streams, math.inf),
        )
        stream_rank = np.arange(streams, dtype=np.int64) // K * len(columns)
        rules.lb(rules.rank)[:] = stream_rank
        rules.trend(rules.rank)[:] = stream_rank
        for k, (lb_slots, baseline_slots, trend_slots) in enumerate(layouts):
            for block, placed in (
                (rules.lb, list(enumerate(lb_slots))),
                (rules.trend, list(enumerate(trend_slots))),
            ):
                for c, slot in placed:
                    block(rules.rank)[c, k::K] += slot
                    block(rules.priority)[c, k::K] = _priority_codes(columns[slot])
                    for p, rule in enumerate(columns[slot]):
                        if rule is not None:
                            block(rules.confirm)[c, p * K + k] = rule.confirm
                            block(rules.delay)[c, p * K + k] = rule.delay_ms
                            self._place(rules, p * K + k, c, rule)
            for j, slot in enumerate(trend_slots):
                trend = _TrendSlot.build(k, j, columns[slot])
                rules.trend(rules.threshold)[j, k::K] = trend.threshold
                rules.trends.append(trend)
            if baseline_slots:
                baseline_columns = [lb_slots.index(slot) for slot in baseline_slots]
                for c in baseline_columns:
                    rules.offset[c, k::K] = np.nan
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
            rules.sign[c, stream] = direction
            rules.breach_at[c, stream] = (
                signed if spec.inclusive else np.nextafter(signed, math.inf)
            )
            rules.clear_at[c, stream] = direction * clear_level
            rules.lb(rules.threshold)[c, stream] = spec.threshold
        elif isinstance(spec, BaselineSpec):
            rules.sign[c, stream] = 1.0 if spec.high else -1.0
            rules.breach_at[c, stream] = spec.delta
            rules.clear_at[c, stream] = spec.delta - spec.clear_band

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
            due_ms=np.where(wanted, NEVER, LATEST),
        )

    # -- Detector -----------------------------------------------------------------------------

    def ingest(self, batch: SampleBatch) -> list[ConditionUpdate]:
        """Section 1-3 on a batch: drop late samples, then evaluate it round by round."""
        self._fix_baselines()
        n = len(batch)
        if n == 0:
            return []
        stream = np.multiply(batch.participant, K, dtype=np.intp)
        stream += batch.parameter
        t_ms = batch.t_ms.astype(np.int64, copy=False)
        changes = _Changes(self._slots)
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
        buffer.due_ms[participants] = LATEST
        buffer.waiting = int(np.count_nonzero(buffer.wanted))
        rules = self._stream_rules
        streams = participants * K + buffer.parameter
        columns = np.array(buffer.columns, dtype=np.intp)[:, None]
        rules.offset[columns, streams] = baseline
        # A baseline column breaches at delta; a slot without a rule never breaches (inf).
        delta = rules.breach_at[columns, streams]
        rules.lb(rules.threshold)[columns, streams] = np.where(
            np.isfinite(delta), baseline + rules.sign[columns, streams] * delta, np.nan
        )
        rules.set_quiet(columns, streams)
        rules.relax(streams)

    def _outside(
        self,
        low: F64,
        high: F64,
        *,
        t: I64,
        v: F64,
        stream: IntP | None,
        present: Bool | None,
    ) -> tuple[Bool | None, IntP, I64, F64] | None:
        """The samples outside their stream's interval ``(low, high)`` (see :meth:`_evaluate`):
        None when there are none; else, by stream, the mask of them when they are most streams
        (whole arrays then beat gathering), and their streams, times and values."""
        if present is not None:
            inside = np.less(low, v)
            inside &= np.less(v, high)
            outside = present > inside  # present and not inside
            busy = _flatnonzero(outside)
            if len(busy) == 0:
                return None
            whole = outside if 2 * len(busy) >= len(outside) else None
            return whole, busy, t.take(busy), v.take(busy)
        assert stream is not None
        rows = _flatnonzero(~((low.take(stream) < v) & (v < high.take(stream))))
        if len(rows) == 0:
            return None
        return None, stream.take(rows), t.take(rows), v.take(rows)

    def set_consciousness(self, participant: int, t_ms: int, level: Consciousness) -> None:
        """Section 4: anything but alert scores 3 in NEWS2 until alert is entered."""
        del t_ms  # the entry counts from now on; ticks come in time order
        self._consciousness[participant] = 0 if level is Consciousness.ALERT else NEWS2_UNCONSCIOUS

    def tick(self, t_ms: int) -> list[ConditionUpdate]:
        """Section 4: staleness, combined and NEWS2 rules for every participant.

        Each rule reads the latest evidence of every stream in a few whole-array passes; the
        state machines then run only on the participants whose result may change.
        """
        changes = _Changes(self._slots)
        if self._staleness is not None:
            self._staleness_tick(self._staleness, t_ms, changes)
        for tick_slot, parts in self._combined:
            self._combined_tick(tick_slot, parts, t_ms, changes)
        for news2 in self._news2:
            self._news2_tick(news2, self._news2_code, t_ms, changes)
        return changes.updates()

    def next_due_ms(self, t_ms: int) -> int | None:
        """After a tick at ``t_ms`` and no input since, the earliest time a tick may report.

        Without input a time rule changes only when a stream's evidence reaches its staleness
        limit, a value ages out of a combined or NEWS2 rule, or a combined rule's delay runs
        out; every other tick is quiet, so the pipeline skips it and a long gap costs what it
        changes, not one tick per period. Earlier than the truth costs a tick, never an update.
        """
        due = LATEST
        last = self._evidence_t.reshape(self._participants, K)
        if self._staleness is not None:
            stale = self._staleness
            since = last.take(stale.columns, axis=1)
            since = np.where(since == NEVER, self.origin_ms, since)
            waiting = stale.active & ~stale.met
            if waiting.any():
                due = min(due, int((since + stale.stale_ms)[waiting].min()))
        ages = [(tick_slot, tick_slot.max_age_ms) for tick_slot, _ in self._combined]
        ages += [(news2.tick, news2.tick.max_age_ms) for news2 in self._news2]
        for tick_slot, max_age_ms in ages:
            pending = tick_slot.status == PENDING
            if pending.any():
                due = min(due, int((tick_slot.since + tick_slot.delay)[pending].min()))
            expiry = last + max_age_ms[:, None] + 1  # the first time a value is too old
            later = expiry[expiry > t_ms]
            if len(later):
                due = min(due, int(later.min()))
        return None if due == LATEST else due

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
        if 2 * len(stream) >= self._stream_rules.streams:
            self._dense_round(stream, t_ms, values, flagged, changes)
            return
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
        self._last_t[stream] = t_ms
        t = self._last_t  # read below only where a sample is present
        v = np.full(self._stream_rules.streams, np.nan)
        v[stream] = values
        if flagged.any():
            v[stream.take(_flatnonzero(flagged))] = np.nan  # not evidence whatever its value
        # Section 2 on every stream; NaN (absent or flagged) fails the plausibility test.
        plausible = np.greater_equal(v, self._stream_low)
        plausible &= np.less_equal(v, self._stream_high)
        jump = np.less_equal(t - self._prev_t, self._spike_gap_ms)
        step = v - self._prev_v
        np.abs(step, out=step)
        jump &= np.greater(step, self._stream_spike)
        evidence = plausible > jump  # plausible and no jump
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

        Either ``stream`` names the streams of the samples ``t``/``v``, or ``t``/``v`` are
        indexed by stream and ``present`` marks the streams with an evidence sample. Only a
        sample outside its stream's quiet interval can change one of its limit or baseline
        cells, and only one outside its NEWS2 band can change its code: those cells are tested
        (as one gathered matrix) and those codes rescored. Trend cells are tested where a sample
        entered the window. The cells that may change go to :meth:`_advance` together.
        """
        rules = self._stream_rules
        parts: list[tuple[IntP, Bool, Bool, I64, F64]] = []
        lb = self._outside(rules.lb_low, rules.lb_high, t=t, v=v, stream=stream, present=present)
        if lb is not None:
            outside, busy, busy_t, busy_v = lb
            if outside is not None:
                parts.append(self._all_limit_cells(outside, t, v))
            else:
                parts.append(self._limit_cells(busy, busy_t, busy_v))
        if self._news2_chart is not None:
            news2 = self._outside(
                self._news2_band[:, 0],
                self._news2_band[:, 1],
                t=t,
                v=v,
                stream=stream,
                present=present,
            )
            if news2 is not None:
                outside, busy, _, busy_v = news2
                if outside is not None:
                    self._rescore_all(self._news2_chart, outside, v)
                else:
                    self._rescore(self._news2_chart, busy, busy_v)

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

        status_trend = rules.trend(rules.status)
        for trend in rules.trends:
            rows, participants = rows_of(trend.parameter)
            if len(rows) == 0:
                continue
            t_rows = t.take(rows)
            entered, trend_breach, slope = trend.offer(
                participants, t_rows, (t_rows - self.origin_ms) // 1000, v.take(rows)
            )
            if len(entered) == 0:
                continue
            trend_streams = participants.take(entered) * K + trend.parameter
            trend_status = status_trend[trend.column].take(trend_streams)
            changing = _flatnonzero(_may_change(trend_breach, trend_status))
            if len(changing):
                trend_hit = trend_breach.take(changing)
                parts.append(
                    (
                        rules.trend_base
                        + trend.column * rules.streams
                        + trend_streams.take(changing),
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
        elif parts:
            cell, hit, clears, t_cell, value = parts[0]
        if parts and len(cell):
            changed = self._advance(
                cell=cell, hit=hit, clears=clears, t=t_cell, value=value, changes=changes
            )
            changed = changed[changed < rules.trend_base]
            if len(changed):
                rules.relax(changed % rules.streams)
        participants_count = self._participants
        status_lb = rules.lb(rules.status)
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
                        status_lb.reshape(-1, participants_count, K)[:, :, k],
                        status_trend.reshape(-1, participants_count, K)[:, :, k],
                    ),
                    None if self._staleness is None else self._staleness.met_on(k),
                )

    def _limit_cells(self, stream: IntP, t: I64, v: F64) -> tuple[IntP, Bool, Bool, I64, F64]:
        """The limit and baseline cells of these samples' streams that may change: cell,
        breach, clear predicate (for a met cell that does not breach), time and value."""
        rules = self._stream_rules
        x = v - rules.offset.take(stream, axis=1)
        x *= rules.sign.take(stream, axis=1)
        lb_breach = x >= rules.breach_at.take(stream, axis=1)
        work = _may_change(lb_breach, rules.lb(rules.status).take(stream, axis=1))
        pairs = _flatnonzero(work.reshape(-1))  # (column, row) of the gathered rows
        column, row = np.divmod(pairs, len(stream))
        cell = column * rules.streams + stream.take(row)
        clears = x.reshape(-1).take(pairs) <= rules.clear_at.reshape(-1).take(cell)
        return cell, lb_breach.reshape(-1).take(pairs), clears, t.take(row), v.take(row)

    def _all_limit_cells(self, loud: Bool, t: I64, v: F64) -> tuple[IntP, Bool, Bool, I64, F64]:
        """:meth:`_limit_cells` when most streams have a sample outside their quiet interval:
        ``t``/``v`` are indexed by stream and whole arrays are tested, with no gathering."""
        rules = self._stream_rules
        x = v - rules.offset
        x *= rules.sign
        lb_breach = x >= rules.breach_at
        work = _may_change(lb_breach, rules.lb(rules.status))
        work &= loud
        cell = _flatnonzero(work.reshape(-1))
        row = cell % rules.streams
        clears = x.reshape(-1).take(cell) <= rules.clear_at.reshape(-1).take(cell)
        return cell, lb_breach.reshape(-1).take(cell), clears, t.take(row), v.take(row)

    def _rescore(self, chart: _News2Chart, streams: IntP, values: F64) -> None:
        """NEWS2 codes of the streams' new evidence values, and the values that keep them."""
        band = chart.band(values, streams)
        self._news2_code[streams] = chart.codes.take(band)
        self._news2_band[streams] = chart.bounds.take(band, axis=0)

    def _rescore_all(self, chart: _News2Chart, loud: Bool, v: F64) -> None:
        """:meth:`_rescore` on the streams marked ``loud``, ``v`` indexed by stream."""
        band = chart.band(v)  # an absent stream's NaN is in band 0, and not copied
        np.copyto(self._news2_code, chart.codes.take(band), where=loud)
        np.copyto(self._news2_band, chart.bounds.take(band, axis=0), where=loud[:, None])

    def _advance(
        self, *, cell: IntP, hit: Bool, clears: Bool, t: I64, value: F64, changes: _Changes
    ) -> IntP:
        """The section 3 state machine on the cells that may change; the cells that did."""
        rules = self._stream_rules
        old = rules.status.take(cell)
        start = old == CLEAR
        start &= hit
        # A breaching sample starts a run (1) or extends one; any other leaves it as it is.
        run = np.where(start, 1, rules.run.take(cell) + (hit & (old == PENDING)))
        since = np.where(start, t, rules.since.take(cell))
        ready = run >= rules.confirm.take(cell)
        ready &= t - since >= rules.delay.take(cell)
        met = old == MET
        # Breaching: met, or pending until ready (PENDING + 1 is MET). Not breaching: a pending
        # condition is cancelled; a met one clears only on a sample that satisfies the clear
        # predicate.
        ready |= met
        new = np.where(hit, ready.view(np.int8) + PENDING, (met > clears).view(np.int8) * MET)
        rules.status[cell] = new
        rules.run[cell] = run
        rules.since[cell] = since
        changed = _flatnonzero(new != old)
        if len(changed) == 0:
            return changed
        cell = cell.take(changed)
        changes.add(
            t_ms=t.take(changed),
            rank=rules.rank.take(cell),
            status=new.take(changed),
            priority=rules.priority.take(cell),
            value=value.take(changed),
            threshold=rules.threshold.take(cell),
            ordered=False,  # by cell
        )
        return cell

    # -- section 4: ticks -----------------------------------------------------------------------

    def _staleness_tick(self, stale: _Staleness, t_ms: int, changes: _Changes) -> None:
        """Section 4 staleness: met while the age of the last evidence reaches the limit.

        Age ``t - last >= stale_ms`` is ``last <= t - stale_ms``; a stream without evidence
        counts from registration, which matters only until the longest limit has passed. While
        none is met, nothing changes until the oldest evidence reaches the shortest limit.
        """
        if not stale.any_met:
            earliest = int(self._evidence_t.min())
            if earliest == NEVER:  # such a stream counts from registration
                seen = np.where(self._evidence_t == NEVER, self.origin_ms, self._evidence_t)
                earliest = int(seen.min())
            if t_ms - earliest < stale.shortest_ms:
                return
        last = self._evidence_t.reshape(self._participants, K).take(stale.columns, axis=1)
        limit = t_ms - stale.stale_ms
        breach = last <= limit
        if t_ms - self.origin_ms < stale.longest_ms:
            breach &= (last != NEVER) | (limit >= self.origin_ms)
        breach &= stale.active
        changed = _flatnonzero((breach != stale.met).reshape(-1))
        stale.met = breach
        stale.any_met = bool(breach.any())
        if len(changed) == 0:
            return
        participant, column = np.divmod(changed, len(stale.parameter))
        last_changed = last.reshape(-1).take(changed)
        age = t_ms - np.where(last_changed == NEVER, self.origin_ms, last_changed)
        changes.add(
            t_ms=np.full(len(changed), t_ms, dtype=np.int64),
            rank=participant * self._slots + stale.slot.take(column),
            status=np.where(breach.reshape(-1).take(changed), MET, CLEAR),
            priority=stale.priority.reshape(-1).take(changed),
            value=age / 1000.0,
            threshold=stale.stale_ms.reshape(-1).take(changed) / 1000.0,
            ordered=True,  # by participant, then column (ascending slots)
        )

    def _combined_tick(
        self, tick_slot: _TickSlot, parts: _CombinedParts, t_ms: int, changes: _Changes
    ) -> None:
        """Section 4 combined: every part holds on fresh evidence; the section 3 state machine
        in tick time (confirmation 1) runs on the participants that breach or are not clear."""
        # Fresh: age <= max_age, i.e. time >= oldest.
        max_age = tick_slot.max_age_ms if tick_slot.max_age is None else tick_slot.max_age
        oldest = t_ms - max_age
        breach = tick_slot.active.copy()
        for j, (padding, uniform) in enumerate(zip(parts.padding, parts.uniform, strict=True)):
            if uniform is None:
                stream = parts.stream[j]
                holds = self._evidence_t.take(stream) >= oldest
                holds &= self._evidence_v.take(stream) * parts.sign[j] >= parts.breach_at[j]
            else:
                k, high, bound = uniform
                holds = self._evidence_t[k::K] >= oldest
                values = self._evidence_v[k::K]
                holds &= values >= bound if high else values <= bound
            if padding is not None:
                holds |= padding
            breach &= holds
        old = tick_slot.status
        rows = _flatnonzero(breach | (old != CLEAR))  # every other participant stays clear
        if len(rows) == 0:
            return
        breach = breach.take(rows)
        was = old.take(rows)
        since = np.where(breach & (was == CLEAR), t_ms, tick_slot.since.take(rows))
        new = np.where(
            breach, np.where(t_ms - since >= tick_slot.delay.take(rows), MET, PENDING), CLEAR
        )
        tick_slot.since[rows] = since
        tick_slot.status[rows] = new
        changed = _flatnonzero(new != was)
        if len(changed) == 0:
            return
        nothing = np.full(len(changed), np.nan)
        participant = rows.take(changed)
        changes.add(
            t_ms=np.full(len(changed), t_ms, dtype=np.int64),
            rank=participant * self._slots + tick_slot.slot,
            status=new.take(changed),
            priority=tick_slot.priority.take(participant),
            value=nothing,
            threshold=nothing,
            ordered=True,  # by participant
        )

    def _news2_tick(
        self, news2: _News2Slot, codes: npt.NDArray[np.int16], t_ms: int, changes: _Changes
    ) -> None:
        """NEWS2 band per participant from the codes of its fresh streams; an update whenever
        the band changes."""
        tick_slot = news2.tick
        max_age = news2.max_age_ms if tick_slot.max_age is None else tick_slot.max_age
        fresh = self._evidence_t >= t_ms - max_age
        fresh_codes = (codes * fresh).reshape(self._participants, K)
        total = self._consciousness.copy()
        for k in NEWS2_CHART:
            total += fresh_codes[:, k]
        band = NEWS2_BANDS.take(news2.bands_at + total)
        changed = _flatnonzero(band != tick_slot.band)
        tick_slot.band = band
        if len(changed) == 0:
            return
        band = band.take(changed)
        met = band != NO_BAND
        changes.add(
            t_ms=np.full(len(changed), t_ms, dtype=np.int64),
            rank=changed * self._slots + tick_slot.slot,
            status=np.where(met, MET, CLEAR),
            priority=np.where(met, band, tick_slot.priority.take(changed)),
            value=(total.take(changed) % NEWS2_RED_CODE).astype(np.float64),
            threshold=np.where(met, NEWS2_LOWER_BOUND.take(np.maximum(band, 0)), np.nan),
            ordered=True,  # by participant
        )

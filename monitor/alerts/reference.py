"""Per-reading reference detector: docs/detection.md followed literally, one sample at a time.

The vectorised engine must emit exactly the updates this class emits. It is written to be read,
not to be fast: every step is a small function that cites the section of docs/detection.md it
implements, so a disagreement with the engine can be settled by reading both side by side.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from monitor.alerts.inputs import SampleBatch
from monitor.alerts.rules import (
    BaselineSpec,
    CombinedPart,
    CombinedSpec,
    CompiledRule,
    ConditionStatus,
    ConditionUpdate,
    LimitSpec,
    News2Spec,
    RuleSet,
    RuleSetError,
    StalenessSpec,
    TrendSpec,
)
from monitor.models import DETECTION_PARAMETERS, AlarmPriority, Consciousness, Parameter

__all__ = ["NEWS2_CHART", "ReferenceDetector", "news2_band", "news2_score"]

_STREAM_OF: Mapping[Parameter, int] = MappingProxyType(
    {parameter: index for index, parameter in enumerate(DETECTION_PARAMETERS)}
)

NEWS2_CHART: Mapping[Parameter, tuple[tuple[float, int], ...]] = MappingProxyType(
    {
        Parameter.HEART_RATE: (
            (40.0, 3),
            (50.0, 1),
            (90.0, 0),
            (110.0, 1),
            (130.0, 2),
            (float("inf"), 3),
        ),
        Parameter.SYSTOLIC_BP: ((90.0, 3), (100.0, 2), (110.0, 1), (219.0, 0), (float("inf"), 3)),
        Parameter.TEMPERATURE: ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1), (float("inf"), 2)),
        Parameter.SPO2: ((91.0, 3), (93.0, 2), (95.0, 1), (float("inf"), 0)),
    }
)
"""RCP 2017 chart 1 (SpO2 scale 1, air) as ``(printed upper limit, score)`` rows, low to high.

Section 4 of docs/detection.md: a value scores in the first row whose upper limit it does not
exceed, so values between two printed ranges score as the range above.
"""

_NEWS2_LOWER_BOUND: Mapping[AlarmPriority, float] = MappingProxyType(
    {AlarmPriority.HIGH: 7.0, AlarmPriority.MEDIUM: 5.0, AlarmPriority.LOW: 1.0}
)


def news2_score(parameter: Parameter, value: float) -> int:
    """Chart 1 score of one value (section 4, NEWS2)."""
    for upper_limit, score in NEWS2_CHART[parameter]:
        if value <= upper_limit:
            return score
    msg = f"{parameter} value {value} is outside every NEWS2 range"
    raise ValueError(msg)


def news2_band(scores: list[int], *, alert_low: bool) -> AlarmPriority | None:
    """Aggregate and single-parameter triggers to a band; None is the clear band (section 4)."""
    aggregate = sum(scores)
    if aggregate >= 7:
        return AlarmPriority.HIGH
    if aggregate >= 5 or 3 in scores:
        return AlarmPriority.MEDIUM
    if aggregate >= 1 and alert_low:
        return AlarmPriority.LOW
    return None


@dataclass(frozen=True, slots=True)
class _Check:
    """One evaluation of a rule: its breach and clear predicates and what an update reports."""

    breach: bool
    clears: bool
    value: float | None
    threshold: float | None


@dataclass(slots=True)
class _Condition:
    """Section 3 condition state of one (participant, rule)."""

    status: ConditionStatus = ConditionStatus.CLEAR
    run: int = 0  # consecutive breaching evaluations
    since_ms: int = 0  # time of the evaluation that left clear
    band: AlarmPriority | None = None  # NEWS2 only: the band last reported


@dataclass(slots=True)
class _Stream:
    """What one (participant, parameter) stream remembers (sections 1-3)."""

    baseline_samples: deque[tuple[int, float]]
    last_sample_ms: int | None = None
    spike_reference: tuple[int, float] | None = None  # previous plausible unflagged sample
    last_evidence: tuple[int, float] | None = None
    baseline_last_entered_ms: int | None = None
    baseline: float | None = None


@dataclass(slots=True)
class _TrendWindow:
    """Section 3 trend window of one (participant, trend rule): ``(t_ms, t_s, qv)`` samples."""

    spec: TrendSpec
    samples: deque[tuple[int, int, int]] = field(default_factory=deque)

    def offer(self, t_ms: int, t_s: int, value: float) -> bool:
        """Take the sample if ``resolution_s`` has passed since the last one taken."""
        if self.samples and t_ms - self.samples[-1][0] < self.spec.resolution_s * 1000:
            return False
        self.samples.append((t_ms, t_s, round(value * 100)))
        while t_ms - self.samples[0][0] > self.spec.window_s * 1000:
            self.samples.popleft()
        while len(self.samples) > self.spec.capacity:
            self.samples.popleft()
        return True

    def slope_per_min(self) -> float | None:
        """Least-squares slope with exact integer sums; None while the window is too thin."""
        n = len(self.samples)
        if n < self.spec.min_samples:
            return None
        span_s = self.samples[-1][1] - self.samples[0][1]
        if 2 * span_s < self.spec.window_s:
            return None
        sum_t = sum(t_s for _, t_s, _ in self.samples)
        sum_v = sum(qv for _, _, qv in self.samples)
        sum_tt = sum(t_s * t_s for _, t_s, _ in self.samples)
        sum_tv = sum(t_s * qv for _, t_s, qv in self.samples)
        numerator = n * sum_tv - sum_t * sum_v
        denominator = n * sum_tt - sum_t * sum_t
        return (float(numerator) / float(denominator)) * 60.0 / 100.0


def _limit_check(spec: LimitSpec, value: float) -> _Check:
    """Section 3 table, ``limit`` row."""
    if spec.high:
        breach = value >= spec.threshold if spec.inclusive else value > spec.threshold
        clears = value <= spec.threshold - spec.clear_band
    else:
        breach = value <= spec.threshold if spec.inclusive else value < spec.threshold
        clears = value >= spec.threshold + spec.clear_band
    return _Check(breach=breach, clears=clears, value=value, threshold=spec.threshold)


def _trend_check(spec: TrendSpec, slope: float | None, value: float) -> _Check:
    """Section 3 table, ``trend`` row: clear is simply not breach."""
    threshold = spec.rate_per_min if spec.rising else -spec.rate_per_min
    if slope is None:
        return _Check(breach=False, clears=True, value=None, threshold=threshold)
    steep = slope >= threshold if spec.rising else slope <= threshold
    above_floor = spec.while_at_least is None or value >= spec.while_at_least
    below_ceiling = spec.while_at_most is None or value <= spec.while_at_most
    breach = steep and above_floor and below_ceiling
    return _Check(breach=breach, clears=not breach, value=slope, threshold=threshold)


def _baseline_check(spec: BaselineSpec, baseline: float | None, value: float) -> _Check:
    """Section 3 table, ``baseline`` row; without a baseline the rule never breaches."""
    if baseline is None:
        return _Check(breach=False, clears=True, value=value, threshold=None)
    if spec.high:
        excess = value - baseline
        threshold = baseline + spec.delta
    else:
        excess = baseline - value
        threshold = baseline - spec.delta
    return _Check(
        breach=excess >= spec.delta,
        clears=excess <= spec.delta - spec.clear_band,
        value=value,
        threshold=threshold,
    )


def _part_holds(part: CombinedPart, value: float) -> bool:
    """One limit of a combined rule (section 4)."""
    if part.high:
        return value >= part.threshold if part.inclusive else value > part.threshold
    return value <= part.threshold if part.inclusive else value < part.threshold


def _advance(
    condition: _Condition, check: _Check, t_ms: int, *, confirm: int, delay_ms: int
) -> bool:
    """Section 3 state machine (section 4 reuses it at ticks); True when the status changed."""
    if condition.status is ConditionStatus.CLEAR:
        if not check.breach:
            return False
        condition.run = 1
        condition.since_ms = t_ms
        condition.status = _pending_or_met(condition, t_ms, confirm=confirm, delay_ms=delay_ms)
        return True
    if condition.status is ConditionStatus.PENDING:
        if not check.breach:
            condition.status = ConditionStatus.CLEAR
            return True
        condition.run += 1
        condition.status = _pending_or_met(condition, t_ms, confirm=confirm, delay_ms=delay_ms)
        return condition.status is ConditionStatus.MET
    if not check.breach and check.clears:
        condition.status = ConditionStatus.CLEAR
        return True
    return False


def _pending_or_met(
    condition: _Condition, t_ms: int, *, confirm: int, delay_ms: int
) -> ConditionStatus:
    """Met once both the confirmation count and the condition delay are satisfied."""
    if condition.run >= confirm and t_ms - condition.since_ms >= delay_ms:
        return ConditionStatus.MET
    return ConditionStatus.PENDING


def _lower_median(values: list[float]) -> float:
    """Element ``(n - 1) // 2`` of the sorted values (section 3, baseline)."""
    return sorted(values)[(len(values) - 1) // 2]


def _rows(batch: SampleBatch) -> Iterator[tuple[int, int, int, float, bool]]:
    """The batch as plain Python rows, in batch order."""
    return zip(
        batch.t_ms.tolist(),
        batch.participant.tolist(),
        batch.parameter.tolist(),
        batch.value.tolist(),
        batch.flagged.tolist(),
        strict=True,
    )


def _watched_parameters(rule: CompiledRule) -> list[Parameter]:
    """Every stream a rule reads, so the constructor can reject non-detection parameters."""
    if isinstance(rule.spec, CombinedSpec):
        return [part.parameter for part in rule.spec.parts]
    return [] if rule.parameter is None else [rule.parameter]


class ReferenceDetector:
    """The :class:`~monitor.alerts.inputs.Detector` oracle: obvious per-sample Python."""

    def __init__(self, rules: RuleSet, *, origin_ms: int) -> None:
        for row in rules.rules:
            for rule in row:
                if rule is None:
                    continue
                for parameter in _watched_parameters(rule):
                    if parameter not in _STREAM_OF:
                        msg = f"rule {rule.id} watches {parameter}, which is not a detection stream"
                        raise RuleSetError(msg)
        self.late_samples = 0
        self._rules = rules
        self._origin_ms = origin_ms
        self._registered_ms = origin_ms  # section 4: staleness counts from registration
        self._now_ms: int | None = None  # time of the latest input, to refuse going back
        participants = range(len(rules.participants))
        self._streams = [
            [
                _Stream(baseline_samples=deque(maxlen=rules.baseline.max_samples))
                for _ in DETECTION_PARAMETERS
            ]
            for _ in participants
        ]
        self._conditions = [[_Condition() for _ in rules.rule_ids] for _ in participants]
        self._trends = {
            (participant, slot): _TrendWindow(rule.spec)
            for participant, row in enumerate(rules.rules)
            for slot, rule in enumerate(row)
            if rule is not None and isinstance(rule.spec, TrendSpec)
        }
        self._consciousness: list[Consciousness | None] = [None for _ in participants]

    # -- inputs (Detector protocol) -------------------------------------------------------------

    def ingest(self, batch: SampleBatch) -> list[ConditionUpdate]:
        """Section 1 order: each sample in batch order, through sections 2 and 3."""
        updates: list[ConditionUpdate] = []
        for t_ms, participant, stream_index, value, flagged in _rows(batch):
            self._advance_time(t_ms)
            self._check_participant(participant)
            if not 0 <= stream_index < len(DETECTION_PARAMETERS):
                msg = f"parameter index {stream_index} is not a detection stream"
                raise ValueError(msg)
            updates.extend(self._take_sample(t_ms, participant, stream_index, value, flagged))
        return _ordered(updates)

    def mark_dose(self, participant: int, t_ms: int) -> None:
        """Section 3, baseline: fix each stream's baseline that is not fixed yet."""
        self._advance_time(t_ms)
        self._check_participant(participant)
        for stream in self._streams[participant]:
            if stream.baseline is None:
                stream.baseline = self._baseline_at(stream, t_ms)

    def set_consciousness(self, participant: int, t_ms: int, level: Consciousness) -> None:
        """Section 4, NEWS2: the latest entry counts until the next one."""
        self._advance_time(t_ms)
        self._check_participant(participant)
        self._consciousness[participant] = level

    def tick(self, t_ms: int) -> list[ConditionUpdate]:
        """Section 4: staleness, combined and NEWS2 rules, participant by participant."""
        self._advance_time(t_ms)
        updates: list[ConditionUpdate] = []
        for participant, row in enumerate(self._rules.rules):
            for slot, rule in enumerate(row):
                if rule is None or rule.per_sample or rule.reported:
                    continue
                update = self._evaluate_time_rule(participant, slot, rule, t_ms)
                if update is not None:
                    updates.append(update)
        return _ordered(updates)

    def next_due_ms(self, t_ms: int) -> int:
        """Every tick: the reference is the yardstick that the engine's skipping is checked by."""
        return t_ms + 1

    # -- input checks ----------------------------------------------------------------------------

    def _advance_time(self, t_ms: int) -> None:
        """Callers keep global time order (inputs.Detector); refuse input that goes back."""
        if self._now_ms is not None and t_ms < self._now_ms:
            msg = f"input at {t_ms} ms is earlier than input already given at {self._now_ms} ms"
            raise ValueError(msg)
        self._now_ms = t_ms

    def _check_participant(self, participant: int) -> None:
        if not 0 <= participant < len(self._rules.participants):
            msg = f"participant index {participant} is not in the rule set"
            raise ValueError(msg)

    # -- sections 1-3: one sample ---------------------------------------------------------------

    def _take_sample(
        self, t_ms: int, participant: int, stream_index: int, value: float, flagged: bool
    ) -> list[ConditionUpdate]:
        """Late check (1), evidence filter (2), stream rules (3), then the baseline buffer (3)."""
        stream = self._streams[participant][stream_index]
        if stream.last_sample_ms is not None and t_ms <= stream.last_sample_ms:
            self.late_samples += 1
            return []
        stream.last_sample_ms = t_ms
        parameter = DETECTION_PARAMETERS[stream_index]
        if not self._is_evidence(stream, parameter, t_ms, value, flagged):
            return []
        stream.last_evidence = (t_ms, value)
        updates = self._evaluate_stream_rules(participant, parameter, t_ms, value)
        if not self._condition_active_on(participant, parameter):
            self._offer_to_baseline(stream, t_ms, value)
        return updates

    def _is_evidence(
        self, stream: _Stream, parameter: Parameter, t_ms: int, value: float, flagged: bool
    ) -> bool:
        """Section 2: unflagged, plausible and continuous with the previous plausible sample."""
        if flagged:
            return False
        low, high = self._rules.artefacts.plausible[parameter]
        if not low <= value <= high:  # a NaN fails both comparisons
            return False
        previous = stream.spike_reference
        stream.spike_reference = (t_ms, value)
        spike_delta = self._rules.artefacts.spike_delta[parameter]
        if previous is None or spike_delta is None:
            return True
        previous_ms, previous_value = previous
        if t_ms - previous_ms > self._rules.artefacts.spike_max_gap_s * 1000:
            return True
        return abs(value - previous_value) <= spike_delta

    def _evaluate_stream_rules(
        self, participant: int, parameter: Parameter, t_ms: int, value: float
    ) -> list[ConditionUpdate]:
        """Section 3: every per-sample rule of the participant that watches this stream."""
        updates: list[ConditionUpdate] = []
        for slot, rule in enumerate(self._rules.rules[participant]):
            if rule is None or not rule.per_sample or rule.parameter is not parameter:
                continue
            check = self._stream_check(participant, slot, rule, t_ms, value)
            if check is None:
                continue
            condition = self._conditions[participant][slot]
            if _advance(condition, check, t_ms, confirm=rule.confirm, delay_ms=rule.delay_ms):
                updates.append(
                    _update(
                        t_ms, participant, slot, rule=rule, status=condition.status, check=check
                    )
                )
        return updates

    def _stream_check(
        self, participant: int, slot: int, rule: CompiledRule, t_ms: int, value: float
    ) -> _Check | None:
        """The rule's predicates on this sample; None when a trend window does not take it."""
        spec = rule.spec
        if isinstance(spec, LimitSpec):
            return _limit_check(spec, value)
        if isinstance(spec, TrendSpec):
            window = self._trends[participant, slot]
            t_s = (t_ms - self._origin_ms) // 1000
            if not window.offer(t_ms, t_s, value):
                return None
            return _trend_check(spec, window.slope_per_min(), value)
        if isinstance(spec, BaselineSpec):
            stream = self._streams[participant][_STREAM_OF[spec.parameter]]
            return _baseline_check(spec, stream.baseline, value)
        msg = f"rule {rule.id} is not a per-sample rule"
        raise TypeError(msg)

    def _condition_active_on(self, participant: int, parameter: Parameter) -> bool:
        """Section 3, baseline exclusion: a condition of a rule on this parameter is not clear."""
        row = self._rules.rules[participant]
        return any(
            rule is not None
            and rule.parameter is parameter
            and self._conditions[participant][slot].status is not ConditionStatus.CLEAR
            for slot, rule in enumerate(row)
        )

    def _offer_to_baseline(self, stream: _Stream, t_ms: int, value: float) -> None:
        """Section 3, baseline buffer: one sample per ``baseline_resolution_s`` at most."""
        last = stream.baseline_last_entered_ms
        if last is not None and t_ms - last < self._rules.baseline.resolution_s * 1000:
            return
        stream.baseline_samples.append((t_ms, value))
        stream.baseline_last_entered_ms = t_ms

    def _baseline_at(self, stream: _Stream, t_ms: int) -> float | None:
        """Lower median of the buffered samples in the window ending at the marker."""
        start_ms = t_ms - self._rules.baseline.window_s * 1000
        values = [value for at_ms, value in stream.baseline_samples if start_ms <= at_ms <= t_ms]
        if not values or len(values) < self._rules.baseline.min_samples:
            return None
        return _lower_median(values)

    # -- section 4: ticks ------------------------------------------------------------------------

    def _evaluate_time_rule(
        self, participant: int, slot: int, rule: CompiledRule, t_ms: int
    ) -> ConditionUpdate | None:
        """One staleness, combined or NEWS2 rule of one participant at a tick."""
        condition = self._conditions[participant][slot]
        spec = rule.spec
        if isinstance(spec, StalenessSpec):
            check = self._staleness_check(participant, spec, t_ms)
            changed = _advance(condition, check, t_ms, confirm=1, delay_ms=0)
        elif isinstance(spec, CombinedSpec):
            check = self._combined_check(participant, spec, t_ms)
            changed = _advance(condition, check, t_ms, confirm=1, delay_ms=rule.delay_ms)
        elif isinstance(spec, News2Spec):
            return self._evaluate_news2(participant, slot, rule, spec, t_ms)
        else:
            msg = f"rule {rule.id} is not a time rule"
            raise TypeError(msg)
        if not changed:
            return None
        return _update(t_ms, participant, slot, rule=rule, status=condition.status, check=check)

    def _staleness_check(self, participant: int, spec: StalenessSpec, t_ms: int) -> _Check:
        """Section 4, staleness: age of the last evidence, or of the registration."""
        stream = self._streams[participant][_STREAM_OF[spec.parameter]]
        last_ms = self._registered_ms if stream.last_evidence is None else stream.last_evidence[0]
        age_ms = t_ms - last_ms
        breach = age_ms >= spec.stale_after_s * 1000
        return _Check(
            breach=breach,
            clears=not breach,
            value=age_ms / 1000,
            threshold=float(spec.stale_after_s),
        )

    def _combined_check(self, participant: int, spec: CombinedSpec, t_ms: int) -> _Check:
        """Section 4, combined: every part holds on a fresh enough latest evidence value."""
        breach = True
        for part in spec.parts:
            value = self._fresh_value(participant, part.parameter, t_ms, spec.max_age_s)
            if value is None or not _part_holds(part, value):
                breach = False
        return _Check(breach=breach, clears=not breach, value=None, threshold=None)

    def _fresh_value(
        self, participant: int, parameter: Parameter, t_ms: int, max_age_s: int
    ) -> float | None:
        """The stream's latest evidence value if it is at most ``max_age_s`` old."""
        last = self._streams[participant][_STREAM_OF[parameter]].last_evidence
        if last is None or t_ms - last[0] > max_age_s * 1000:
            return None
        return last[1]

    def _evaluate_news2(
        self, participant: int, slot: int, rule: CompiledRule, spec: News2Spec, t_ms: int
    ) -> ConditionUpdate | None:
        """Section 4, NEWS2: an update whenever the band changes; no delay, no confirmation."""
        scores = self._news2_scores(participant, t_ms, spec.max_age_s)
        band = news2_band(scores, alert_low=spec.alert_low)
        condition = self._conditions[participant][slot]
        if band is condition.band:
            return None
        condition.band = band
        condition.status = ConditionStatus.CLEAR if band is None else ConditionStatus.MET
        return ConditionUpdate(
            t_ms=t_ms,
            participant=participant,
            rule=slot,
            status=condition.status,
            priority=rule.priority if band is None else band,
            value=float(sum(scores)),
            threshold=None if band is None else _NEWS2_LOWER_BOUND[band],
        )

    def _news2_scores(self, participant: int, t_ms: int, max_age_s: int) -> list[int]:
        """Chart 1 scores of every available parameter, plus consciousness when entered."""
        scores = []
        for parameter in NEWS2_CHART:
            value = self._fresh_value(participant, parameter, t_ms, max_age_s)
            if value is not None:
                scores.append(news2_score(parameter, value))
        level = self._consciousness[participant]
        if level is not None:
            scores.append(0 if level is Consciousness.ALERT else 3)
        return scores


def _update(
    t_ms: int,
    participant: int,
    slot: int,
    *,
    rule: CompiledRule,
    status: ConditionStatus,
    check: _Check,
) -> ConditionUpdate:
    """Section 6: the rule's priority, and the value and threshold of the deciding check."""
    return ConditionUpdate(
        t_ms=t_ms,
        participant=participant,
        rule=slot,
        status=status,
        priority=rule.priority,
        value=check.value,
        threshold=check.threshold,
    )


def _ordered(updates: list[ConditionUpdate]) -> list[ConditionUpdate]:
    """Section 6: within one call, by ``(t_ms, participant, rule)``."""
    return sorted(updates, key=lambda update: (update.t_ms, update.participant, update.rule))

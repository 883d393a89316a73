"""The vectorised engine: direct scenarios, and identical output to the reference on any input."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.alerts.engine import Engine
from monitor.alerts.inputs import SampleBatch
from monitor.alerts.reference import ReferenceDetector
from monitor.alerts.replay_input import (
    ConsciousnessEvent,
    DetectorEvent,
    DoseEvent,
    SamplesEvent,
    TickEvent,
    run_detector,
)
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
    StalenessSpec,
    TrendSpec,
)
from monitor.models import (
    DETECTION_PARAMETERS,
    AlarmCategory,
    AlarmPriority,
    BaselineSettings,
    Consciousness,
    Parameter,
)

ORIGIN = 1_760_000_000_000
HR, SBP, DBP, TEMP, SPO2 = range(5)
CLEAR, PENDING, MET = ConditionStatus.CLEAR, ConditionStatus.PENDING, ConditionStatus.MET
LOW, MEDIUM, HIGH = AlarmPriority.LOW, AlarmPriority.MEDIUM, AlarmPriority.HIGH


def one_participant(*rules: CompiledRule, baseline: BaselineSettings | None = None) -> RuleSet:
    return RuleSet.build({"P-001": list(rules)}, baseline=baseline)


def samples(*rows: tuple[float, int, float]) -> SampleBatch:
    """Rows of (seconds after origin, parameter, value) for participant 0, none flagged."""
    return SampleBatch.from_rows([(ORIGIN + round(s * 1000), 0, k, v, False) for s, k, v in rows])


def statuses(updates: list[ConditionUpdate]) -> list[tuple[float, ConditionStatus]]:
    return [((u.t_ms - ORIGIN) / 1000, u.status) for u in updates]


def limit(
    rule_id: str,
    parameter: Parameter,
    threshold: float,
    *,
    high: bool = True,
    inclusive: bool = False,
    clear_band: float = 0.0,
    priority: AlarmPriority = MEDIUM,
    delay_s: int = 0,
    confirm: int = 1,
) -> CompiledRule:
    return CompiledRule(
        id=rule_id,
        spec=LimitSpec(parameter, high, threshold, inclusive, clear_band),
        priority=priority,
        delay_s=delay_s,
        confirm=confirm,
    )


# -- direct scenarios ----------------------------------------------------------------------------


def test_limit_with_delay_is_pending_then_met() -> None:
    engine = Engine(
        one_participant(limit("hr", Parameter.HEART_RATE, 100, delay_s=60)), origin_ms=ORIGIN
    )
    updates = engine.ingest(samples((0, HR, 110), (30, HR, 112), (60, HR, 115), (90, HR, 99)))
    assert statuses(updates) == [(0, PENDING), (60, MET), (90, CLEAR)]
    assert updates[1].value == 115 and updates[1].threshold == 100
    assert updates[1].priority is MEDIUM


def test_pending_is_cancelled_by_a_non_breaching_sample() -> None:
    engine = Engine(
        one_participant(limit("hr", Parameter.HEART_RATE, 100, delay_s=60)), origin_ms=ORIGIN
    )
    updates = engine.ingest(samples((0, HR, 110), (30, HR, 100), (60, HR, 115)))
    assert statuses(updates) == [(0, PENDING), (30, CLEAR), (60, PENDING)]


def test_confirm_needs_consecutive_breaching_samples() -> None:
    rule = limit("sbp", Parameter.SYSTOLIC_BP, 180, inclusive=True, confirm=2)
    engine = Engine(one_participant(rule), origin_ms=ORIGIN)
    updates = engine.ingest(
        samples((0, SBP, 185), (300, SBP, 170), (600, SBP, 180), (900, SBP, 190))
    )
    assert statuses(updates) == [(0, PENDING), (300, CLEAR), (600, PENDING), (900, MET)]


def test_hysteresis_band_holds_a_met_condition() -> None:
    rule = limit("temp", Parameter.TEMPERATURE, 38.5, inclusive=True, clear_band=0.3)
    engine = Engine(one_participant(rule), origin_ms=ORIGIN)
    updates = engine.ingest(
        samples((0, TEMP, 38.6), (10, TEMP, 38.3), (20, TEMP, 38.2), (30, TEMP, 38.5))
    )
    assert statuses(updates) == [(0, MET), (20, CLEAR), (30, MET)]


def test_breaching_sample_never_clears_at_the_threshold() -> None:
    rule = limit("temp", Parameter.TEMPERATURE, 38.5, inclusive=True)
    engine = Engine(one_participant(rule), origin_ms=ORIGIN)
    updates = engine.ingest(samples((0, TEMP, 38.6), (10, TEMP, 38.5), (20, TEMP, 38.4)))
    assert statuses(updates) == [(0, MET), (20, CLEAR)]


def test_spike_and_late_samples_are_not_evidence() -> None:
    engine = Engine(one_participant(limit("hr", Parameter.HEART_RATE, 100)), origin_ms=ORIGIN)
    batch = SampleBatch.from_rows(
        [
            (ORIGIN, 0, HR, 80.0, False),
            (ORIGIN + 1000, 0, HR, 140.0, False),  # spike: 60 bpm in a second
            (ORIGIN + 1000, 0, HR, 141.0, False),  # late: same time
            (ORIGIN + 2000, 0, HR, 142.0, False),  # continuous with the spike: evidence
            (ORIGIN + 3000, 0, HR, math.nan, False),
        ]
    )
    updates = engine.ingest(batch)
    assert statuses(updates) == [(2, MET)]
    assert engine.late_samples == 1


def test_rising_trend_reports_its_slope() -> None:
    rule = CompiledRule(
        id="temp-rise",
        spec=TrendSpec(Parameter.TEMPERATURE, rising=True, rate_per_min=0.02, window_s=600),
        priority=HIGH,
    )
    engine = Engine(one_participant(rule), origin_ms=ORIGIN)
    rows = [(i * 30.0, TEMP, 37.0 + 0.015 * i) for i in range(12)]
    updates = engine.ingest(samples(*rows))
    assert statuses(updates) == [(300, MET)]
    assert updates[0].threshold == 0.02
    assert updates[0].value is not None and math.isclose(updates[0].value, 0.03, rel_tol=0.05)


def test_baseline_rule_uses_the_lower_median_before_the_dose() -> None:
    rule = CompiledRule(
        id="temp-baseline",
        spec=BaselineSpec(Parameter.TEMPERATURE, high=True, delta=1.0, clear_band=0.2),
        priority=MEDIUM,
    )
    engine = Engine(one_participant(rule), origin_ms=ORIGIN)
    assert engine.ingest(samples((0, TEMP, 36.8), (10, TEMP, 36.6), (20, TEMP, 36.9))) == []
    engine.ingest(samples((25, TEMP, 36.7)))  # too soon after the last entered: not buffered
    engine.mark_dose(0, ORIGIN + 30_000)
    updates = engine.ingest(samples((40, TEMP, 37.6), (50, TEMP, 37.9), (60, TEMP, 37.5)))
    assert statuses(updates) == [(50, MET), (60, CLEAR)]
    assert updates[0].threshold == 36.8 + 1.0


def test_staleness_counts_from_registration_then_from_evidence() -> None:
    rule = CompiledRule(
        id="hr-stale",
        spec=StalenessSpec(Parameter.HEART_RATE, stale_after_s=60),
        priority=MEDIUM,
        category=AlarmCategory.TECHNICAL,
    )
    engine = Engine(one_participant(rule), origin_ms=ORIGIN)
    assert engine.tick(ORIGIN + 59_999) == []
    stale = engine.tick(ORIGIN + 60_000)
    assert statuses(stale) == [(60, MET)]
    assert stale[0].value == 60.0 and stale[0].threshold == 60.0
    engine.ingest(samples((70, HR, 72)))
    assert statuses(engine.tick(ORIGIN + 71_000)) == [(71, CLEAR)]


def test_news2_bands_follow_the_aggregate_and_single_red_scores() -> None:
    rule = CompiledRule(id="news2", spec=News2Spec(alert_low=False), priority=LOW)
    engine = Engine(one_participant(rule), origin_ms=ORIGIN)
    engine.ingest(samples((0, HR, 120), (0, TEMP, 38.5)))  # pulse 2 + temperature 1 = 3: clear
    assert engine.tick(ORIGIN) == []
    engine.set_consciousness(0, ORIGIN + 1000, Consciousness.CONFUSION)  # a single 3: medium
    medium = engine.tick(ORIGIN + 1000)
    assert [(u.status, u.priority, u.value, u.threshold) for u in medium] == [
        (MET, MEDIUM, 6.0, 5.0)
    ]
    engine.ingest(samples((2, SPO2, 91)))  # + 3 = 9: high
    high = engine.tick(ORIGIN + 2000)
    assert [(u.priority, u.value, u.threshold) for u in high] == [(HIGH, 9.0, 7.0)]
    cleared = engine.tick(ORIGIN + 2000 + 901_000)  # values too old, consciousness still 3
    assert [(u.status, u.priority, u.value) for u in cleared] == [(MET, MEDIUM, 3.0)]


# -- engine == reference ---------------------------------------------------------------------------

INTERESTING_VALUES: dict[int, list[float]] = {
    HR: [35.0, 40.0, 41.0, 60.0, 75.0, 90.5, 99.5, 100.0, 100.5, 110.0, 120.0, 131.0, 160.0],
    SBP: [89.0, 100.0, 110.5, 120.0, 159.0, 160.0, 180.0, 200.0, 219.5, 230.0],
    DBP: [60.0, 80.0, 99.0, 100.0, 110.0, 120.0],
    TEMP: [35.0, 36.05, 36.6, 37.0, 37.6, 38.0, 38.05, 38.5, 38.8, 39.0, 39.2, 40.0],
    SPO2: [88.0, 90.0, 91.0, 92.0, 93.5, 95.0, 96.0, 99.0, 100.0],
}
ODD_VALUES = [math.nan, math.inf, -math.inf, 10.0, 500.0, -1.0]
STEPS_MS = [0, 0, 1, 999, 1000, 1000, 2000, 5000, 10_000, 15_000, 30_000, 30_001, 61_000, 400_000]


@st.composite
def participant_rules(draw: st.DrawFn, index: int) -> list[CompiledRule]:
    """The slots every participant shares, with this participant's numbers (overrides)."""
    nudge = draw(st.sampled_from([0.0, 0.5, -1.0, 5.0])) if index else 0.0
    priority = draw(st.sampled_from([LOW, MEDIUM, HIGH]))
    rules = [
        limit(
            "hr-high",
            Parameter.HEART_RATE,
            100 + nudge,
            inclusive=draw(st.booleans()),
            clear_band=draw(st.sampled_from([0.0, 5.0])),
            delay_s=draw(st.sampled_from([0, 5, 60])),
            confirm=draw(st.sampled_from([1, 2])),
            priority=priority,
        ),
        limit("hr-high-2", Parameter.HEART_RATE, 131, inclusive=True, priority=HIGH),
        limit("hr-low", Parameter.HEART_RATE, 40 + nudge, high=False, inclusive=True),
        limit(
            "sbp-high",
            Parameter.SYSTOLIC_BP,
            160 + nudge,
            confirm=draw(st.sampled_from([1, 2, 3])),
            clear_band=draw(st.sampled_from([0.0, 10.0])),
        ),
        limit("dbp-high", Parameter.DIASTOLIC_BP, 100, inclusive=draw(st.booleans())),
        limit(
            "temp-high",
            Parameter.TEMPERATURE,
            38.5 + nudge / 10,
            inclusive=True,
            clear_band=draw(st.sampled_from([0.0, 0.3])),
        ),
        limit(
            "spo2-low",
            Parameter.SPO2,
            92,
            high=False,
            inclusive=draw(st.booleans()),
            delay_s=draw(st.sampled_from([0, 15])),
            clear_band=draw(st.sampled_from([0.0, 1.0])),
        ),
        CompiledRule(
            id="temp-rise",
            spec=TrendSpec(
                Parameter.TEMPERATURE,
                rising=True,
                rate_per_min=draw(st.sampled_from([0.0, 0.01, 0.05])),
                window_s=draw(st.sampled_from([60, 120, 301])),
                resolution_s=draw(st.sampled_from([1, 10, 30])),
                min_samples=draw(st.sampled_from([2, 3])),
                while_at_least=draw(st.sampled_from([None, 37.0])),
            ),
            priority=HIGH,
            delay_s=draw(st.sampled_from([0, 30])),
        ),
        CompiledRule(
            id="hr-fall",
            spec=TrendSpec(
                Parameter.HEART_RATE,
                rising=False,
                rate_per_min=draw(st.sampled_from([0.5, 5.0])),
                window_s=60,
                resolution_s=draw(st.sampled_from([1, 5])),
                while_at_most=draw(st.sampled_from([None, 100.0])),
            ),
            priority=MEDIUM,
            confirm=draw(st.sampled_from([1, 2])),
        ),
        CompiledRule(
            id="temp-baseline",
            spec=BaselineSpec(
                Parameter.TEMPERATURE,
                high=True,
                delta=draw(st.sampled_from([0.5, 1.0])),
                clear_band=draw(st.sampled_from([0.0, 0.2])),
            ),
            priority=MEDIUM,
        ),
        CompiledRule(
            id="hr-baseline-low",
            spec=BaselineSpec(
                Parameter.HEART_RATE, high=False, delta=draw(st.sampled_from([5.0, 20.0]))
            ),
            priority=LOW,
            delay_s=draw(st.sampled_from([0, 10])),
        ),
        CompiledRule(
            id="hr-stale",
            spec=StalenessSpec(Parameter.HEART_RATE, draw(st.sampled_from([30, 60]))),
            priority=MEDIUM,
            category=AlarmCategory.TECHNICAL,
            delay_s=5,  # ignored by staleness
        ),
        CompiledRule(
            id="temp-stale",
            spec=StalenessSpec(Parameter.TEMPERATURE, 300),
            priority=LOW,
            category=AlarmCategory.TECHNICAL,
        ),
        CompiledRule(
            id="hyperthermia",
            spec=CombinedSpec(
                parts=(
                    CombinedPart(Parameter.TEMPERATURE, True, 38.5, draw(st.booleans())),
                    CombinedPart(Parameter.HEART_RATE, True, 120, True),
                ),
                max_age_s=draw(st.sampled_from([30, 120])),
            ),
            priority=HIGH,
            delay_s=draw(st.sampled_from([0, 20])),
        ),
        CompiledRule(
            id="news2",
            spec=News2Spec(
                max_age_s=draw(st.sampled_from([60, 900])), alert_low=draw(st.booleans())
            ),
            priority=LOW,
        ),
    ]
    missing = draw(st.sampled_from([None, "hr-high", "temp-rise", "temp-baseline", "news2"]))
    return [rule for rule in rules if rule.id != missing or index == 0]


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    count = draw(st.integers(1, 3))
    participants = {f"P-{i:03d}": draw(participant_rules(i)) for i in range(count)}
    baseline = BaselineSettings(
        window_s=draw(st.sampled_from([60, 1800])),
        resolution_s=draw(st.sampled_from([1, 10])),
        min_samples=draw(st.sampled_from([1, 3])),
        max_samples=draw(st.sampled_from([4, 256])),
    )
    return RuleSet.build(participants, baseline=baseline)


@st.composite
def sample_value(draw: st.DrawFn, parameter: int) -> float:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(ODD_VALUES))
    if kind == 1:
        return draw(st.floats(0, 300, allow_nan=False))
    return draw(st.sampled_from(INTERESTING_VALUES[parameter]))


@st.composite
def event_lists(draw: st.DrawFn, participants: int) -> list[DetectorEvent]:
    """Batches of random sizes, dose markers, consciousness entries and ticks, in time order."""
    now = ORIGIN + draw(st.sampled_from([0, 1, 999]))
    events: list[DetectorEvent] = []
    for _ in range(draw(st.integers(0, 40))):
        now += draw(st.sampled_from(STEPS_MS))
        kind = draw(st.sampled_from(["samples"] * 6 + ["dose", "consciousness", "tick", "tick"]))
        participant = draw(st.integers(0, participants - 1))
        if kind == "samples":
            rows = []
            for _ in range(draw(st.integers(1, 12))):
                now += draw(st.sampled_from([0, 0, 0, 1, 1000, 10_000]))
                parameter = draw(st.integers(0, len(DETECTION_PARAMETERS) - 1))
                rows.append(
                    (
                        now,
                        draw(st.integers(0, participants - 1)),
                        parameter,
                        draw(sample_value(parameter)),
                        draw(st.integers(0, 9)) == 0,
                    )
                )
            events.append(SamplesEvent(SampleBatch.from_rows(rows)))
        elif kind == "dose":
            events.append(DoseEvent(participant, now))
        elif kind == "consciousness":
            level = draw(st.sampled_from(list(Consciousness)))
            events.append(ConsciousnessEvent(participant, now, level))
        else:
            events.append(TickEvent(now))
    return events


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.data())
def test_engine_matches_reference(data: st.DataObject) -> None:
    rules = data.draw(rule_sets())
    events = data.draw(event_lists(len(rules.participants)))
    engine = Engine(rules, origin_ms=ORIGIN)
    reference = ReferenceDetector(rules, origin_ms=ORIGIN)
    assert run_detector(engine, events) == run_detector(reference, events)
    assert engine.late_samples == reference.late_samples


def test_engine_matches_reference_on_a_long_random_session() -> None:
    """Many samples per stream, so trend windows fill and roll and baselines are fixed."""
    rng = np.random.default_rng(7)
    rules = _long_session_rules()
    events: list[DetectorEvent] = []
    level = np.array([80.0, 130.0, 80.0, 37.0, 97.0])
    step = np.array([3.0, 6.0, 4.0, 0.1, 1.0])
    t = ORIGIN
    for second in range(1, 1500):
        t += 1000
        rows = []
        for p in range(4):
            for k in range(5):
                if rng.random() < 0.7:
                    value = level[k] + step[k] * rng.standard_normal() + (p - 1.5) * step[k]
                    if rng.random() < 0.01:
                        value += 8 * step[k]
                    rows.append((t, p, k, float(np.round(value, 1)), bool(rng.random() < 0.02)))
        events.append(SamplesEvent(SampleBatch.from_rows(rows)))
        if second == 600:
            events.extend(DoseEvent(p, t) for p in range(4))
        if second % 5 == 0:
            events.append(TickEvent(t))
        level[3] += 0.002
    engine = Engine(rules, origin_ms=ORIGIN)
    reference = ReferenceDetector(rules, origin_ms=ORIGIN)
    engine_updates = run_detector(engine, events)
    assert engine_updates == run_detector(reference, events)
    assert len(engine_updates) > 20


def _long_session_rules() -> RuleSet:
    base = [
        limit("hr-high", Parameter.HEART_RATE, 95, delay_s=20, clear_band=3),
        limit("sbp-high", Parameter.SYSTOLIC_BP, 140, confirm=2),
        limit("spo2-low", Parameter.SPO2, 95, high=False, inclusive=True),
        CompiledRule(
            id="temp-rise",
            spec=TrendSpec(Parameter.TEMPERATURE, True, 0.05, window_s=300, resolution_s=10),
            priority=HIGH,
        ),
        CompiledRule(
            id="temp-baseline",
            spec=BaselineSpec(Parameter.TEMPERATURE, True, 0.5, 0.1),
            priority=MEDIUM,
        ),
        CompiledRule(id="hr-stale", spec=StalenessSpec(Parameter.HEART_RATE, 4), priority=MEDIUM),
        CompiledRule(id="news2", spec=News2Spec(alert_low=True), priority=LOW),
    ]
    return RuleSet.build({f"P-{i:03d}": base for i in range(4)})

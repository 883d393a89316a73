"""Engine == reference on rule shapes the main property test (tests/test_engine.py) never draws:
combined rules with lower limits or on different parameters per participant, two staleness
rules on one stream, two NEWS2 rules, tight baseline buffers, origins off the tick grid. A longer
run of this generator (3,000 examples) found a bug in lower-limit combined parts during the
engine's speed work; CI runs 150."""

from __future__ import annotations

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from monitor.alerts.engine import Engine
from monitor.alerts.reference import ReferenceDetector
from monitor.alerts.replay_input import run_detector
from monitor.alerts.rules import (
    BaselineSpec,
    CombinedPart,
    CombinedSpec,
    CompiledRule,
    LimitSpec,
    News2Spec,
    RuleSet,
    RuleSetError,
    StalenessSpec,
    TrendSpec,
)
from monitor.models import AlarmCategory, AlarmPriority, BaselineSettings, Parameter
from tests.test_engine import ORIGIN, event_lists

LOW, MEDIUM, HIGH = AlarmPriority.LOW, AlarmPriority.MEDIUM, AlarmPriority.HIGH
TECHNICAL = AlarmCategory.TECHNICAL


def limit(draw: st.DrawFn, parameter: Parameter, high: bool, threshold: float) -> LimitSpec:
    inclusive = draw(st.booleans())
    return LimitSpec(parameter, high, threshold, inclusive, draw(st.sampled_from([0.0, 1.0, 5.0])))


@st.composite
def rules_for(draw: st.DrawFn, index: int) -> list[CompiledRule]:
    """One participant's rules; ``nudge`` moves later participants' numbers a little."""
    nudge = draw(st.sampled_from([0.0, 0.5, -1.0, 5.0, 1e-9])) if index else 0.0
    rules = [
        CompiledRule("spo2-low", limit(draw, Parameter.SPO2, False, 92 + nudge), HIGH),
        CompiledRule(
            "temp-low", LimitSpec(Parameter.TEMPERATURE, False, 36.0 + nudge / 10, True, 0.3), LOW
        ),
        CompiledRule(
            "hr-stale",
            StalenessSpec(Parameter.HEART_RATE, draw(st.sampled_from([1, 30, 60]))),
            MEDIUM,
            category=TECHNICAL,
        ),
    ]
    if draw(st.booleans()):
        rules.append(
            CompiledRule(
                "hr-high",
                limit(draw, Parameter.HEART_RATE, True, 100 + nudge),
                MEDIUM,
                delay_s=draw(st.sampled_from([0, 5])),
                confirm=draw(st.sampled_from([1, 2])),
            )
        )
    if draw(st.booleans()):
        delta = draw(st.sampled_from([0.1, 0.5, 1.0, 0.30000000000000004]))
        clear = draw(st.sampled_from([0.0, 0.2]))
        spec = BaselineSpec(Parameter.TEMPERATURE, draw(st.booleans()), delta, clear)
        rules.append(CompiledRule("temp-baseline", spec, MEDIUM))
    if draw(st.booleans()):
        spec = BaselineSpec(Parameter.SYSTOLIC_BP, False, draw(st.sampled_from([5.0, 20.0, 0.1])))
        rules.append(
            CompiledRule("sbp-baseline", spec, LOW, delay_s=draw(st.sampled_from([0, 10])))
        )
    if draw(st.booleans()):
        trend = TrendSpec(
            Parameter.TEMPERATURE,
            True,
            draw(st.sampled_from([0.0, 0.01])),
            window_s=draw(st.sampled_from([60, 120])),
            resolution_s=draw(st.sampled_from([1, 10])),
            min_samples=draw(st.sampled_from([2, 3])),
        )
        rules.append(CompiledRule("temp-rise", trend, HIGH))
    if draw(st.booleans()):  # a second staleness rule on the same stream
        stale = StalenessSpec(Parameter.HEART_RATE, draw(st.sampled_from([5, 300])))
        rules.append(CompiledRule("hr-stale-2", stale, LOW, category=TECHNICAL))
    if draw(st.booleans()):
        stale = StalenessSpec(Parameter.SPO2, 10)
        rules.append(CompiledRule("spo2-stale", stale, LOW, category=TECHNICAL))
    if draw(st.booleans()):  # lower-limit parts, on parameters that differ between participants
        first = draw(st.sampled_from([Parameter.SPO2, Parameter.HEART_RATE])) if index else None
        parts = [
            CombinedPart(first or Parameter.SPO2, False, 94.0 + nudge, draw(st.booleans())),
            CombinedPart(Parameter.TEMPERATURE, draw(st.booleans()), 37.5, True),
        ]
        if draw(st.booleans()):
            parts.append(CombinedPart(Parameter.DIASTOLIC_BP, True, 90.0, False))
        combined = CombinedSpec(tuple(parts), max_age_s=draw(st.sampled_from([1, 30, 120])))
        rules.append(
            CompiledRule("combined", combined, HIGH, delay_s=draw(st.sampled_from([0, 5])))
        )
    for i in range(draw(st.sampled_from([0, 1, 2]))):
        news2 = News2Spec(
            max_age_s=draw(st.sampled_from([1, 60, 900])), alert_low=draw(st.booleans())
        )
        rules.append(CompiledRule(f"news2-{i}", news2, draw(st.sampled_from([LOW, MEDIUM]))))
    return rules


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    participants = {f"P-{i:03d}": draw(rules_for(i)) for i in range(draw(st.integers(1, 4)))}
    baseline = BaselineSettings(
        window_s=draw(st.sampled_from([60, 1800])),
        resolution_s=draw(st.sampled_from([1, 10])),
        min_samples=draw(st.sampled_from([1, 3])),
        max_samples=draw(st.sampled_from([4, 256])),
    )
    try:
        return RuleSet.build(participants, baseline=baseline)
    except RuleSetError:
        reject()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_engine_matches_reference_on_unusual_rule_shapes(data: st.DataObject) -> None:
    rules = data.draw(rule_sets())
    origin = ORIGIN + data.draw(st.sampled_from([0, 5000, -5000]))
    events = data.draw(event_lists(len(rules.participants)))
    engine = Engine(rules, origin_ms=origin)
    reference = ReferenceDetector(rules, origin_ms=origin)
    assert run_detector(engine, events) == run_detector(reference, events)
    assert engine.late_samples == reference.late_samples

"""The per-reading reference detector does what docs/detection.md says, rule by rule.

Times are explicit seconds after the session origin; no clock is involved. Each test builds the
smallest rule table that shows one behaviour, so a failure names the sentence of the document
that broke.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from monitor.alerts.inputs import Detector, SampleBatch
from monitor.alerts.reference import ReferenceDetector, news2_band, news2_score
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
    Spec,
    StalenessSpec,
    TrendSpec,
)
from monitor.models import AlarmCategory, AlarmPriority, BaselineSettings, Consciousness, Parameter

ORIGIN_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z
HR, SBP, DBP, TEMP, SPO2 = range(5)  # stream indices: positions in DETECTION_PARAMETERS

CLEAR = ConditionStatus.CLEAR
PENDING = ConditionStatus.PENDING
MET = ConditionStatus.MET

Row = tuple[float, int, float] | tuple[float, int, float, bool]


# -- builders -------------------------------------------------------------------------------------


def ms(t_s: float) -> int:
    return ORIGIN_MS + round(t_s * 1000)


def rule(
    spec: Spec,
    rule_id: str = "rule",
    *,
    priority: AlarmPriority = AlarmPriority.MEDIUM,
    delay_s: int = 0,
    confirm: int = 1,
) -> CompiledRule:
    technical = isinstance(spec, StalenessSpec)
    return CompiledRule(
        id=rule_id,
        spec=spec,
        priority=priority,
        category=AlarmCategory.TECHNICAL if technical else AlarmCategory.PHYSIOLOGICAL,
        delay_s=delay_s,
        confirm=confirm,
    )


def hr_limit(
    threshold: float = 120.0,
    *,
    high: bool = True,
    inclusive: bool = False,
    clear_band: float = 0.0,
    rule_id: str = "hr-limit",
    delay_s: int = 0,
    confirm: int = 1,
) -> CompiledRule:
    spec = LimitSpec(Parameter.HEART_RATE, high, threshold, inclusive, clear_band)
    return rule(spec, rule_id, delay_s=delay_s, confirm=confirm)


def hr_trend(
    rate_per_min: float = 1.0,
    *,
    rising: bool = True,
    window_s: int = 120,
    resolution_s: int = 30,
    min_samples: int = 3,
    while_at_least: float | None = None,
    while_at_most: float | None = None,
) -> CompiledRule:
    spec = TrendSpec(
        Parameter.HEART_RATE,
        rising=rising,
        rate_per_min=rate_per_min,
        window_s=window_s,
        resolution_s=resolution_s,
        min_samples=min_samples,
        while_at_least=while_at_least,
        while_at_most=while_at_most,
    )
    return rule(spec, "hr-trend")


def detector(*rules: CompiledRule, baseline: BaselineSettings | None = None) -> ReferenceDetector:
    """One participant, ``P-001``, with the given rules."""
    rule_set = RuleSet.build({"P-001": rules}, baseline=baseline)
    return ReferenceDetector(rule_set, origin_ms=ORIGIN_MS)


def samples(*rows: Row, participant: int = 0) -> SamplesEvent:
    """Rows of ``(t_s, stream, value[, flagged])`` for one participant."""
    return SamplesEvent(
        SampleBatch.from_rows(
            [
                (ms(row[0]), participant, row[1], row[2], row[3] if len(row) == 4 else False)
                for row in rows
            ]
        )
    )


def series(stream: int, *points: tuple[float, float]) -> SamplesEvent:
    return samples(*((t_s, stream, value) for t_s, value in points))


def tick(t_s: float) -> TickEvent:
    return TickEvent(ms(t_s))


def dose(t_s: float, participant: int = 0) -> DoseEvent:
    return DoseEvent(participant, ms(t_s))


def transitions(updates: Sequence[ConditionUpdate]) -> list[tuple[float, ConditionStatus]]:
    """``(seconds after origin, status)`` of each update: enough for one-rule tests."""
    return [((update.t_ms - ORIGIN_MS) / 1000, update.status) for update in updates]


def run(detector_: ReferenceDetector, *events: DetectorEvent) -> list[ConditionUpdate]:
    return run_detector(detector_, events)


# -- section 2: evidence filter ------------------------------------------------------------------


class TestEvidenceFilter:
    def test_flagged_sample_is_not_evidence(self) -> None:
        d = detector(hr_limit(120.0))
        assert run(d, samples((0, HR, 150.0, True))) == []
        # the flagged sample did not become the spike reference: 150 is no jump from anything
        assert transitions(run(d, series(HR, (1, 150.0)))) == [(1, MET)]

    @pytest.mark.parametrize("value", [250.5, 19.5, math.nan, math.inf, -math.inf])
    def test_implausible_value_is_not_evidence(self, value: float) -> None:
        d = detector(hr_limit(120.0), hr_limit(100.0, high=False, rule_id="hr-low"))
        assert run(d, series(HR, (0, value))) == []

    @pytest.mark.parametrize("value", [250.0, 20.0])
    def test_plausible_range_includes_its_ends(self, value: float) -> None:
        d = detector(hr_limit(120.0), hr_limit(100.0, high=False, rule_id="hr-low"))
        assert transitions(run(d, series(HR, (0, value)))) == [(0, MET)]

    def test_single_sample_spike_is_rejected(self) -> None:
        d = detector(hr_limit(120.0))
        assert run(d, series(HR, (0, 90.0), (1, 121.0))) == []  # jump of 31 > 30

    def test_jump_of_exactly_the_spike_delta_is_evidence(self) -> None:
        d = detector(hr_limit(120.0))
        assert transitions(run(d, series(HR, (0, 91.0), (1, 121.0)))) == [(1, MET)]

    def test_step_change_counts_from_its_second_sample(self) -> None:
        d = detector(hr_limit(120.0))
        updates = run(d, series(HR, (0, 80.0), (1, 130.0), (2, 131.0)))
        assert transitions(updates) == [(2, MET)]

    def test_return_after_a_spike_is_compared_with_the_spike(self) -> None:
        d = detector(hr_limit(100.0))
        updates = run(d, series(HR, (0, 110.0), (1, 150.0), (2, 90.0), (3, 92.0)))
        # 150 is a spike; 90 jumps 60 from it, so it is no evidence either; 92 is
        assert transitions(updates) == [(0, MET), (3, CLEAR)]

    @pytest.mark.parametrize(("gap_s", "evidence"), [(30, False), (31, True)])
    def test_spike_check_lapses_after_the_gap(self, gap_s: int, evidence: bool) -> None:
        d = detector(hr_limit(120.0))
        updates = run(d, series(HR, (0, 80.0), (gap_s, 130.0)))
        assert transitions(updates) == ([(gap_s, MET)] if evidence else [])

    def test_gap_counts_from_the_previous_plausible_unflagged_sample(self) -> None:
        d = detector(hr_limit(120.0))
        events = samples((0, HR, 80.0), (20, HR, 130.0, True), (25, HR, 300.0), (31, HR, 130.0))
        # neither the flagged nor the implausible sample refreshed the reference at t=0
        assert transitions(run(d, events)) == [(31, MET)]

    def test_flagged_and_implausible_samples_leave_the_spike_reference(self) -> None:
        d = detector(hr_limit(100.0))
        events = samples((0, HR, 90.0), (1, HR, 140.0, True), (2, HR, 10.0), (3, HR, 105.0))
        assert transitions(run(d, events)) == [(3, MET)]

    def test_blood_pressure_has_no_spike_check(self) -> None:
        spec = LimitSpec(Parameter.SYSTOLIC_BP, high=True, threshold=180.0, inclusive=True)
        d = detector(rule(spec))
        assert transitions(run(d, series(SBP, (0, 120.0), (1, 200.0)))) == [(1, MET)]

    def test_non_evidence_changes_no_rule_state(self) -> None:
        d = detector(hr_limit(120.0, confirm=2))
        events = samples((0, HR, 125.0), (5, HR, 60.0, True), (6, HR, 10.0), (10, HR, 125.0))
        # neither the flagged nor the implausible sample cancelled the pending confirmation
        assert transitions(run(d, events)) == [(0, PENDING), (10, MET)]


# -- section 3: limit rules, delay, confirmation, hysteresis -------------------------------------


class TestLimit:
    @pytest.mark.parametrize(
        ("high", "inclusive", "value", "breach"),
        [
            (True, False, 120.0, False),
            (True, False, 120.5, True),
            (True, True, 120.0, True),
            (True, True, 119.5, False),
            (False, False, 50.0, False),
            (False, False, 49.5, True),
            (False, True, 50.0, True),
            (False, True, 50.5, False),
        ],
    )
    def test_breach_at_the_threshold(
        self, high: bool, inclusive: bool, value: float, breach: bool
    ) -> None:
        threshold = 120.0 if high else 50.0
        d = detector(hr_limit(threshold, high=high, inclusive=inclusive))
        assert transitions(run(d, series(HR, (0, value)))) == ([(0, MET)] if breach else [])

    def test_update_carries_value_threshold_and_priority(self) -> None:
        spec = LimitSpec(Parameter.HEART_RATE, high=True, threshold=131.0, inclusive=True)
        d = detector(rule(spec, "hr-high", priority=AlarmPriority.HIGH))
        assert run(d, series(HR, (0, 135.0))) == [
            ConditionUpdate(ms(0), 0, 0, MET, AlarmPriority.HIGH, 135.0, 131.0)
        ]

    def test_high_limit_clears_below_the_hysteresis_band(self) -> None:
        d = detector(hr_limit(120.0, clear_band=5.0))
        updates = run(d, series(HR, (0, 125.0), (1, 119.0), (2, 116.0), (3, 115.0)))
        assert transitions(updates) == [(0, MET), (3, CLEAR)]
        assert updates[-1].value == 115.0

    def test_low_limit_clears_above_the_hysteresis_band(self) -> None:
        spec = LimitSpec(Parameter.SPO2, high=False, threshold=93.0, inclusive=True, clear_band=1.0)
        d = detector(rule(spec))
        updates = run(d, series(SPO2, (0, 93.0), (1, 93.5), (2, 94.0)))
        assert transitions(updates) == [(0, MET), (2, CLEAR)]

    def test_breaching_sample_never_clears(self) -> None:
        d = detector(hr_limit(120.0, inclusive=True, clear_band=0.0))
        updates = run(d, series(HR, (0, 125.0), (1, 120.0), (2, 119.5)))
        # 120 breaches (>=) and meets the clear predicate (<= 120 - 0): it keeps the condition met
        assert transitions(updates) == [(0, MET), (2, CLEAR)]

    def test_delay_counts_from_the_first_breaching_sample(self) -> None:
        d = detector(hr_limit(120.0, delay_s=60))
        updates = run(d, series(HR, (0, 125.0), (30, 126.0), (59.999, 125.0), (60, 125.0)))
        assert transitions(updates) == [(0, PENDING), (60, MET)]

    def test_delay_is_only_checked_on_evidence_samples(self) -> None:
        d = detector(hr_limit(120.0, delay_s=60))
        updates = run(d, series(HR, (0, 125.0)), tick(90), series(HR, (120, 125.0)))
        assert transitions(updates) == [(0, PENDING), (120, MET)]

    def test_confirm_needs_two_consecutive_breaching_samples(self) -> None:
        d = detector(hr_limit(120.0, confirm=2))
        updates = run(d, series(HR, (0, 125.0), (10, 125.0)))
        assert transitions(updates) == [(0, PENDING), (10, MET)]

    def test_confirm_and_delay_must_both_hold(self) -> None:
        d = detector(hr_limit(120.0, confirm=2, delay_s=60))
        updates = run(d, series(HR, (0, 125.0), (10, 125.0), (60, 125.0)))
        assert transitions(updates) == [(0, PENDING), (60, MET)]

    def test_pending_is_cancelled_by_a_non_breaching_sample(self) -> None:
        d = detector(hr_limit(120.0, delay_s=60))
        updates = run(
            d, series(HR, (0, 125.0), (30, 119.0), (40, 125.0), (90, 125.0), (100, 125.0))
        )
        # the delay restarts at 40, so 90 is too early and 100 promotes
        assert transitions(updates) == [(0, PENDING), (30, CLEAR), (40, PENDING), (100, MET)]

    def test_pending_is_cancelled_inside_the_hysteresis_band(self) -> None:
        d = detector(hr_limit(120.0, clear_band=5.0, confirm=2))
        updates = run(d, series(HR, (0, 125.0), (10, 118.0)))
        assert transitions(updates) == [(0, PENDING), (10, CLEAR)]

    def test_nothing_is_emitted_while_the_state_stays(self) -> None:
        d = detector(hr_limit(120.0))
        updates = run(d, series(HR, *((float(t), 125.0) for t in range(10))))
        assert transitions(updates) == [(0, MET)]


# -- section 3: trend rules ----------------------------------------------------------------------


class TestTrend:
    def test_rising_trend(self) -> None:
        d = detector(hr_trend(1.0))
        updates = run(d, series(HR, (0, 80.0), (30, 81.0), (60, 82.0)))
        assert transitions(updates) == [(60, MET)]
        (update,) = updates
        assert update.value == pytest.approx(2.0)
        assert update.threshold == 1.0

    def test_falling_trend_compares_with_the_negative_rate(self) -> None:
        d = detector(hr_trend(1.0, rising=False))
        updates = run(d, series(HR, (0, 100.0), (30, 99.0), (60, 98.0)))
        assert transitions(updates) == [(60, MET)]
        assert updates[0].value == pytest.approx(-2.0)
        assert updates[0].threshold == -1.0

    def test_slope_uses_exact_integer_sums_and_the_documented_float_order(self) -> None:
        d = detector(hr_trend(0.1, min_samples=4))
        updates = run(d, series(HR, (0, 80.0), (30, 81.125), (60, 81.9), (90, 83.375)))
        t_s = [0, 30, 60, 90]
        qv = [8000, 8112, 8190, 8338]  # centi-units rounded half to even: 8112.5 -> 8112
        n = len(t_s)
        num = n * sum(t * v for t, v in zip(t_s, qv, strict=True)) - sum(t_s) * sum(qv)
        den = n * sum(t * t for t in t_s) - sum(t_s) ** 2
        assert transitions(updates) == [(90, MET)]
        assert updates[0].value == (float(num) / float(den)) * 60.0 / 100.0

    def test_gate_while_at_least(self) -> None:
        d = detector(hr_trend(1.0, while_at_least=90.0))
        below = run(d, series(HR, (0, 86.0), (30, 87.0), (60, 89.5)))
        assert below == []
        assert transitions(run(d, series(HR, (90, 90.0)))) == [(90, MET)]

    def test_gate_while_at_most(self) -> None:
        d = detector(hr_trend(1.0, rising=False, while_at_most=50.0))
        assert run(d, series(HR, (0, 54.0), (30, 53.0), (60, 51.0))) == []
        assert transitions(run(d, series(HR, (90, 50.0)))) == [(90, MET)]

    def test_met_trend_clears_when_the_gate_no_longer_holds(self) -> None:
        d = detector(hr_trend(1.0, while_at_least=90.0))
        updates = run(d, series(HR, (0, 90.0), (30, 91.0), (60, 92.0), (90, 89.0)))
        assert transitions(updates) == [(60, MET), (90, CLEAR)]

    @pytest.mark.parametrize(("min_samples", "expected"), [(3, []), (2, [(60, MET)])])
    def test_min_samples(
        self, min_samples: int, expected: list[tuple[float, ConditionStatus]]
    ) -> None:
        d = detector(hr_trend(1.0, min_samples=min_samples))
        assert transitions(run(d, series(HR, (0, 80.0), (60, 82.0)))) == expected

    def test_span_must_reach_half_the_window(self) -> None:
        d = detector(hr_trend(1.0, window_s=180))
        early = run(d, series(HR, (0, 80.0), (30, 81.0), (60, 82.0)))
        assert early == []  # span 60 s < 90 s
        assert transitions(run(d, series(HR, (90, 83.0)))) == [(90, MET)]

    def test_span_uses_whole_seconds_since_the_origin(self) -> None:
        d = detector(hr_trend(1.0, window_s=121, resolution_s=30))
        # t_s of 0.9 s is 0 and of 60.9 s is 60: span 60 s, 2 * 60 < 121
        assert run(d, series(HR, (0.9, 80.0), (30.9, 81.0), (60.9, 82.0))) == []

    def test_samples_closer_than_the_resolution_neither_enter_nor_evaluate(self) -> None:
        d = detector(hr_trend(1.0))
        updates = run(
            d,
            series(HR, (0, 80.0), (10, 80.5), (20, 80.8), (30, 81.0), (60, 82.0), (70, 60.0)),
            series(HR, (90, 60.0)),
        )
        # 10 and 20 did not enter (slope at 60 is 2.0 from 0/30/60); 70 would clear but did
        # not enter either (70 - 60 < 30 s); 90 enters and clears
        assert transitions(updates) == [(60, MET), (90, CLEAR)]
        assert updates[0].value == pytest.approx(2.0)

    @pytest.mark.parametrize("rate", [5.0, 8.0])
    def test_samples_leave_the_window_once_older_than_window_s(self, rate: float) -> None:
        d = detector(hr_trend(rate, window_s=120))
        points = [(0, 80.0), (30, 90.0), (60, 100.0), (90, 100.0), (120, 100.0), (150, 100.0)]
        updates = run(d, series(HR, *points))
        # at 120 the sample at 0 is exactly window_s old and stays (slope 10.0; without it,
        # 6.0 < 8); at 150 it has left (slope 4.0; had it stayed, 7.43 >= 5)
        assert transitions(updates) == [(60, MET), (150, CLEAR)]
        assert updates[1].value == pytest.approx(4.0)

    def test_window_emptied_by_a_gap_clears_without_a_slope(self) -> None:
        d = detector(hr_trend(1.0, window_s=120))
        updates = run(d, series(HR, (0, 80.0), (30, 81.0), (60, 82.0), (300, 83.0)))
        assert transitions(updates) == [(60, MET), (300, CLEAR)]
        assert updates[1].value is None
        assert updates[1].threshold == 1.0


# -- section 3: baseline rules -------------------------------------------------------------------


def temp_baseline(
    delta: float = 1.0, *, high: bool = True, clear_band: float = 0.0
) -> CompiledRule:
    return rule(BaselineSpec(Parameter.TEMPERATURE, high, delta, clear_band), "temp-baseline")


class TestBaseline:
    def test_baseline_is_the_lower_median(self) -> None:
        d = detector(temp_baseline(1.0))
        warm_up = series(TEMP, (0, 36.0), (10, 36.5), (20, 36.25), (30, 36.75))
        # sorted 36.0, 36.25, 36.5, 36.75: element (4 - 1) // 2 = 36.25
        updates = run(d, warm_up, dose(30), series(TEMP, (40, 37.0), (50, 37.25)))
        assert transitions(updates) == [(50, MET)]
        assert (updates[0].value, updates[0].threshold) == (37.25, 37.25)

    def test_no_baseline_before_the_dose(self) -> None:
        d = detector(temp_baseline(1.0))
        assert run(d, series(TEMP, (0, 36.0), (10, 36.0), (20, 36.0), (30, 37.0), (40, 38.0))) == []

    def test_fewer_than_min_samples_gives_no_baseline(self) -> None:
        d = detector(temp_baseline(1.0))
        updates = run(d, series(TEMP, (0, 36.0), (10, 36.0)), dose(10), series(TEMP, (20, 37.0)))
        assert updates == []

    def test_one_sample_per_resolution_enters_the_buffer(self) -> None:
        d = detector(temp_baseline(1.0))
        warm_up = series(TEMP, (0, 36.0), (5, 36.0), (10, 36.0))  # the one at 5 s does not enter
        assert run(d, warm_up, dose(10), series(TEMP, (20, 37.0))) == []

    def test_only_samples_inside_the_window_count(self) -> None:
        d = detector(temp_baseline(1.0), baseline=BaselineSettings(window_s=60))
        warm_up = series(TEMP, (0, 35.0), (10, 35.5), (40, 36.0), (50, 36.0), (70, 36.0))
        # the window at 70 s is [10 s, 70 s]: 35.5, 36.0, 36.0, 36.0 -> lower median 36.0
        updates = run(d, warm_up, dose(70), series(TEMP, (80, 37.0)))
        assert [update.threshold for update in updates] == [37.0]

    def test_samples_are_excluded_while_a_condition_on_the_parameter_is_active(self) -> None:
        limit = rule(LimitSpec(Parameter.TEMPERATURE, True, 37.0, True), "temp-limit")
        d = detector(limit, temp_baseline(1.0))
        warm_up = series(
            TEMP, (0, 36.0), (10, 37.0), (20, 37.5), (30, 37.5), (40, 36.5), (50, 36.25)
        )
        # 37.0 starts the limit condition and is excluded with 37.5 and 37.5; 36.5 clears it and
        # enters: baseline = lower median of 36.0, 36.5, 36.25 = 36.25 (36.5 with them)
        updates = run(d, warm_up, dose(50), series(TEMP, (60, 37.25)))
        baseline_updates = [update for update in updates if update.rule == 1]
        assert transitions(baseline_updates) == [(60, MET)]
        assert baseline_updates[0].threshold == 37.25

    def test_staleness_on_the_parameter_also_excludes_samples(self) -> None:
        hr_baseline = rule(BaselineSpec(Parameter.HEART_RATE, True, 20.0), "hr-baseline")
        d = detector(hr_staleness(60), hr_baseline)
        events: list[DetectorEvent] = [
            tick(60),  # stale since registration
            series(HR, (61, 70.0), (71, 70.0), (81, 70.0)),  # arrive while stale: excluded
            tick(81),  # clears staleness, after the sample at 81 s
            series(HR, (91, 80.0), (101, 80.0), (111, 80.0)),
            dose(111),
            series(HR, (121, 100.0)),
        ]
        updates = run(d, *events)
        assert [(u.rule, u.status, u.threshold) for u in updates] == [
            (0, MET, 60.0),
            (0, CLEAR, 60.0),
            (1, MET, 100.0),  # baseline 80; with the stale-time samples it would be 70
        ]

    def test_a_later_marker_does_not_replace_the_baseline(self) -> None:
        d = detector(temp_baseline(1.0))
        events: list[DetectorEvent] = [
            series(TEMP, (0, 36.0), (10, 36.25), (20, 36.5)),
            dose(20),
            series(TEMP, (30, 37.0), (40, 37.0), (50, 37.0)),
            dose(50),  # would give 36.5 if it replaced the baseline
            series(TEMP, (60, 37.25)),
        ]
        updates = run(d, *events)
        assert transitions(updates) == [(60, MET)]
        assert updates[0].threshold == 37.25

    def test_a_later_marker_fixes_a_stream_that_had_no_baseline(self) -> None:
        d = detector(temp_baseline(1.0))
        events: list[DetectorEvent] = [
            series(TEMP, (0, 36.0)),
            dose(0),
            series(TEMP, (10, 36.0), (20, 36.0)),
            dose(20),
            series(TEMP, (30, 37.0)),
        ]
        assert transitions(run(d, *events)) == [(30, MET)]

    def test_low_baseline_rule_and_its_hysteresis(self) -> None:
        spec = BaselineSpec(Parameter.SPO2, high=False, delta=3.0, clear_band=1.0)
        d = detector(rule(spec))
        warm_up = series(SPO2, (0, 98.0), (10, 98.0), (20, 98.0))
        after = series(SPO2, (30, 95.0), (40, 95.5), (50, 96.0))
        updates = run(d, warm_up, dose(20), after)
        # clear needs 98 - value <= 3 - 1: 95.5 stays in the band, 96 clears
        assert transitions(updates) == [(30, MET), (50, CLEAR)]
        assert updates[0].threshold == 95.0


# -- section 4: staleness ------------------------------------------------------------------------


def hr_staleness(stale_after_s: int = 60) -> CompiledRule:
    return rule(StalenessSpec(Parameter.HEART_RATE, stale_after_s), "hr-stale")


class TestStaleness:
    def test_counts_from_registration(self) -> None:
        d = detector(hr_staleness(60))
        updates = run(d, tick(59.999), tick(60))
        assert updates == [ConditionUpdate(ms(60), 0, 0, MET, AlarmPriority.MEDIUM, 60.0, 60.0)]

    def test_clears_on_evidence_at_the_next_tick(self) -> None:
        d = detector(hr_staleness(60))
        assert transitions(run(d, tick(60))) == [(60, MET)]
        assert run(d, series(HR, (70, 80.0))) == []
        updates = run(d, tick(70))
        assert transitions(updates) == [(70, CLEAR)]
        assert updates[0].value == 0.0

    def test_counts_from_the_last_evidence_sample(self) -> None:
        d = detector(hr_staleness(60))
        updates = run(d, series(HR, (10, 80.0)), tick(69), tick(70))
        assert transitions(updates) == [(70, MET)]

    def test_non_evidence_does_not_refresh(self) -> None:
        d = detector(hr_staleness(60))
        events = samples((10, HR, 80.0, True), (20, HR, 400.0))
        assert transitions(run(d, events, tick(60))) == [(60, MET)]


# -- section 4: combined rules -------------------------------------------------------------------


def hyperthermia_tachycardia(*, delay_s: int = 0, max_age_s: int = 120) -> CompiledRule:
    spec = CombinedSpec(
        parts=(
            CombinedPart(Parameter.TEMPERATURE, high=True, threshold=38.5, inclusive=True),
            CombinedPart(Parameter.HEART_RATE, high=True, threshold=120.0, inclusive=True),
        ),
        max_age_s=max_age_s,
    )
    return rule(spec, "hyperthermia-tachycardia", priority=AlarmPriority.HIGH, delay_s=delay_s)


class TestCombined:
    def test_met_when_every_part_holds(self) -> None:
        d = detector(hyperthermia_tachycardia())
        events = samples((0, TEMP, 38.5), (0, HR, 120.0))
        assert run(d, events, tick(0)) == [
            ConditionUpdate(ms(0), 0, 0, MET, AlarmPriority.HIGH, None, None)
        ]

    def test_not_met_when_one_part_fails_or_is_missing(self) -> None:
        d = detector(hyperthermia_tachycardia())
        assert run(d, samples((0, TEMP, 39.0)), tick(0)) == []
        assert run(d, samples((1, HR, 119.0)), tick(1)) == []

    def test_values_count_up_to_max_age(self) -> None:
        d = detector(hyperthermia_tachycardia(max_age_s=120))
        events = samples((0, TEMP, 38.6), (0, HR, 125.0))
        updates = run(d, events, tick(0), tick(120), tick(120.001))
        assert transitions(updates) == [(0, MET), (120.001, CLEAR)]

    def test_delay_is_counted_in_tick_time(self) -> None:
        d = detector(hyperthermia_tachycardia(delay_s=60))
        events = samples((0, TEMP, 38.6), (0, HR, 125.0))
        updates = run(d, events, tick(0), tick(30), tick(59), tick(60))
        assert transitions(updates) == [(0, PENDING), (60, MET)]

    def test_pending_is_cancelled_by_a_tick_without_breach(self) -> None:
        d = detector(hyperthermia_tachycardia(delay_s=60))
        events: list[DetectorEvent] = [
            samples((0, TEMP, 38.6), (0, HR, 125.0)),
            tick(0),
            series(HR, (10, 110.0)),
            tick(10),
            series(HR, (20, 125.0)),
            tick(20),
            tick(79),
            tick(80),
        ]
        assert transitions(run(d, *events)) == [(0, PENDING), (10, CLEAR), (20, PENDING), (80, MET)]


# -- section 4: NEWS2 ----------------------------------------------------------------------------


def news2(*, alert_low: bool = False, max_age_s: int = 900) -> CompiledRule:
    spec = News2Spec(max_age_s=max_age_s, alert_low=alert_low)
    return rule(spec, "news2", priority=AlarmPriority.HIGH)


class TestNews2Chart:
    @pytest.mark.parametrize(
        ("parameter", "value", "score"),
        [
            (Parameter.HEART_RATE, 40.0, 3),
            (Parameter.HEART_RATE, 41.0, 1),
            (Parameter.HEART_RATE, 50.0, 1),
            (Parameter.HEART_RATE, 51.0, 0),
            (Parameter.HEART_RATE, 90.0, 0),
            (Parameter.HEART_RATE, 91.0, 1),
            (Parameter.HEART_RATE, 110.0, 1),
            (Parameter.HEART_RATE, 111.0, 2),
            (Parameter.HEART_RATE, 130.0, 2),
            (Parameter.HEART_RATE, 131.0, 3),
            (Parameter.SYSTOLIC_BP, 90.0, 3),
            (Parameter.SYSTOLIC_BP, 91.0, 2),
            (Parameter.SYSTOLIC_BP, 100.0, 2),
            (Parameter.SYSTOLIC_BP, 101.0, 1),
            (Parameter.SYSTOLIC_BP, 110.0, 1),
            (Parameter.SYSTOLIC_BP, 111.0, 0),
            (Parameter.SYSTOLIC_BP, 219.0, 0),
            (Parameter.SYSTOLIC_BP, 220.0, 3),
            (Parameter.TEMPERATURE, 35.0, 3),
            (Parameter.TEMPERATURE, 35.1, 1),
            (Parameter.TEMPERATURE, 36.0, 1),
            (Parameter.TEMPERATURE, 36.1, 0),
            (Parameter.TEMPERATURE, 38.0, 0),
            (Parameter.TEMPERATURE, 38.1, 1),
            (Parameter.TEMPERATURE, 39.0, 1),
            (Parameter.TEMPERATURE, 39.1, 2),
            (Parameter.SPO2, 91.0, 3),
            (Parameter.SPO2, 92.0, 2),
            (Parameter.SPO2, 93.0, 2),
            (Parameter.SPO2, 94.0, 1),
            (Parameter.SPO2, 95.0, 1),
            (Parameter.SPO2, 96.0, 0),
        ],
    )
    def test_chart_1_bands(self, parameter: Parameter, value: float, score: int) -> None:
        assert news2_score(parameter, value) == score

    @pytest.mark.parametrize(
        ("parameter", "value", "score"),
        [
            (Parameter.HEART_RATE, 40.5, 1),
            (Parameter.HEART_RATE, 90.5, 1),
            (Parameter.HEART_RATE, 130.5, 3),
            (Parameter.SYSTOLIC_BP, 219.5, 3),
            (Parameter.TEMPERATURE, 38.05, 1),
            (Parameter.SPO2, 95.5, 0),
        ],
    )
    def test_values_between_printed_ranges_score_as_the_range_above(
        self, parameter: Parameter, value: float, score: int
    ) -> None:
        assert news2_score(parameter, value) == score

    @pytest.mark.parametrize(
        ("scores", "alert_low", "band"),
        [
            ([], True, None),
            ([0, 0, 0, 0], True, None),
            ([1, 1, 0, 2], False, None),
            ([1, 1, 0, 2], True, AlarmPriority.LOW),
            ([3], False, AlarmPriority.MEDIUM),
            ([2, 2, 1], False, AlarmPriority.MEDIUM),
            ([2, 2, 2], False, AlarmPriority.MEDIUM),
            ([3, 2, 2], False, AlarmPriority.HIGH),
        ],
    )
    def test_bands(self, scores: list[int], alert_low: bool, band: AlarmPriority | None) -> None:
        assert news2_band(scores, alert_low=alert_low) == band


class TestNews2:
    def test_single_three_is_medium(self) -> None:
        d = detector(news2())
        assert run(d, series(HR, (0, 131.0)), tick(0)) == [
            ConditionUpdate(ms(0), 0, 0, MET, AlarmPriority.MEDIUM, 3.0, 5.0)
        ]

    def test_aggregate_of_seven_is_high(self) -> None:
        d = detector(news2())
        events = samples((0, HR, 131.0), (0, TEMP, 39.5), (0, SPO2, 93.0))
        assert run(d, events, tick(0)) == [
            ConditionUpdate(ms(0), 0, 0, MET, AlarmPriority.HIGH, 7.0, 7.0)
        ]

    def test_aggregate_of_five_is_medium(self) -> None:
        d = detector(news2())
        events = samples((0, HR, 120.0), (0, TEMP, 39.5), (0, SPO2, 95.0))
        (update,) = run(d, events, tick(0))
        assert (update.priority, update.value, update.threshold) == (AlarmPriority.MEDIUM, 5.0, 5.0)

    @pytest.mark.parametrize(("alert_low", "expected"), [(False, []), (True, [(0, MET)])])
    def test_low_band_only_with_alert_low(
        self, alert_low: bool, expected: list[tuple[float, ConditionStatus]]
    ) -> None:
        d = detector(news2(alert_low=alert_low))
        updates = run(d, samples((0, HR, 100.0), (0, TEMP, 38.5)), tick(0))
        assert transitions(updates) == expected
        assert all(
            (u.priority, u.value, u.threshold) == (AlarmPriority.LOW, 2.0, 1.0) for u in updates
        )

    def test_band_changes_while_met_and_clears(self) -> None:
        d = detector(news2())
        events: list[DetectorEvent] = [
            series(HR, (0, 131.0)),
            tick(0),  # medium: single 3
            series(HR, (1, 130.0)),
            samples((1, SPO2, 93.0), (1, TEMP, 39.5)),
            tick(1),  # 2 + 2 + 2 = 6: still medium, nothing emitted
            series(HR, (2, 131.0)),
            tick(2),  # 3 + 2 + 2 = 7: high
            samples((40, HR, 80.0), (40, TEMP, 37.0), (40, SPO2, 98.0)),  # past the spike gap
            tick(40),  # 0: clear
        ]
        updates = run(d, *events)
        assert [(u.t_ms, u.status, u.priority, u.value, u.threshold) for u in updates] == [
            (ms(0), MET, AlarmPriority.MEDIUM, 3.0, 5.0),
            (ms(2), MET, AlarmPriority.HIGH, 7.0, 7.0),
            (ms(40), CLEAR, AlarmPriority.HIGH, 0.0, None),
        ]

    def test_consciousness_scores_three_until_alert(self) -> None:
        d = detector(news2())
        events: list[DetectorEvent] = [
            ConsciousnessEvent(0, ms(0), Consciousness.VOICE),
            tick(0),
            tick(7200),  # a consciousness entry does not age
            ConsciousnessEvent(0, ms(7300), Consciousness.ALERT),
            tick(7300),
        ]
        updates = run(d, *events)
        assert transitions(updates) == [(0, MET), (7300, CLEAR)]
        assert (updates[0].priority, updates[0].value) == (AlarmPriority.MEDIUM, 3.0)

    def test_consciousness_adds_to_the_aggregate(self) -> None:
        d = detector(news2())
        events: list[DetectorEvent] = [
            samples((0, HR, 120.0), (0, TEMP, 39.5)),
            ConsciousnessEvent(0, ms(0), Consciousness.CONFUSION),
        ]
        (update,) = run(d, *events, tick(0))
        assert (update.priority, update.value) == (AlarmPriority.HIGH, 7.0)

    def test_values_count_up_to_max_age(self) -> None:
        d = detector(news2(max_age_s=900))
        updates = run(d, series(HR, (0, 131.0)), tick(900), tick(900.001))
        assert transitions(updates) == [(900, MET), (900.001, CLEAR)]


# -- section 1: late samples; section 6: output order; rule table holes --------------------------


class TestLateSamples:
    def test_sample_not_after_the_streams_last_sample_is_counted_and_ignored(self) -> None:
        d = detector(hr_limit(120.0, confirm=2))
        updates = run(d, samples((0, HR, 125.0), (0, HR, 125.0), (0, TEMP, 37.0)))
        assert transitions(updates) == [(0, PENDING)]
        assert d.late_samples == 1

    def test_any_sample_sets_the_last_sample_time(self) -> None:
        d = detector(hr_limit(120.0))
        updates = run(d, samples((0, HR, 125.0, True), (0, HR, 125.0), (1, HR, 125.0)))
        assert transitions(updates) == [(1, MET)]
        assert d.late_samples == 1

    def test_late_samples_are_counted_across_calls(self) -> None:
        d = detector(hr_limit(120.0))
        run(d, series(HR, (5, 80.0)), series(HR, (5, 130.0)), series(HR, (5, 130.0)))
        assert d.late_samples == 2


class TestOutput:
    def test_updates_are_ordered_by_time_participant_and_rule(self) -> None:
        rules = [hr_limit(120.0, rule_id="hr-120"), hr_limit(100.0, rule_id="hr-100")]
        d = ReferenceDetector(RuleSet.build({"P-001": rules, "P-002": rules}), origin_ms=ORIGIN_MS)
        batch = SampleBatch.from_rows(
            [
                (ms(0), 1, HR, 125.0, False),
                (ms(1), 1, TEMP, 37.0, False),
                (ms(1), 0, HR, 125.0, False),
                (ms(2), 1, HR, 110.0, False),
            ]
        )
        updates = d.ingest(batch)
        assert [((u.t_ms - ORIGIN_MS) // 1000, u.participant, u.rule) for u in updates] == [
            (0, 1, 0),
            (0, 1, 1),
            (1, 0, 0),
            (1, 0, 1),
            (2, 1, 0),
        ]

    def test_same_time_updates_are_ordered_by_participant_then_rule(self) -> None:
        rules = [hr_limit(120.0, rule_id="hr-120"), hr_limit(100.0, rule_id="hr-100")]
        d = ReferenceDetector(RuleSet.build({"P-001": rules, "P-002": rules}), origin_ms=ORIGIN_MS)
        batch = SampleBatch.from_rows([(ms(0), 1, HR, 125.0, False), (ms(0), 0, HR, 125.0, False)])
        updates = d.ingest(batch)
        assert [(u.participant, u.rule) for u in updates] == [(0, 0), (0, 1), (1, 0), (1, 1)]

    def test_participant_without_a_rule_never_gets_updates_for_it(self) -> None:
        rule_set = RuleSet.build(
            {
                "P-001": [hr_limit(120.0), hr_staleness(60)],
                "P-002": [hr_staleness(60)],
            }
        )
        assert rule_set.rules[1][0] is None
        d = ReferenceDetector(rule_set, origin_ms=ORIGIN_MS)
        events: list[DetectorEvent] = [
            samples((0, HR, 125.0)),
            samples((0, HR, 125.0), participant=1),
            tick(0),
            tick(60),
        ]
        updates = run(d, *events)
        assert [(u.participant, u.rule, u.status) for u in updates] == [
            (0, 0, MET),
            (0, 1, MET),
            (1, 1, MET),
        ]

    def test_batching_does_not_change_the_output(self) -> None:
        def make() -> ReferenceDetector:
            return detector(hr_limit(120.0, delay_s=20), hr_trend(1.0), hr_staleness(60))

        points = [(float(t), 100.0 + t / 3) for t in range(0, 300, 7)]
        one_batch = run(make(), series(HR, *points), tick(300))
        one_by_one = run(make(), *(series(HR, point) for point in points), tick(300))
        assert one_batch == one_by_one
        assert one_batch  # the scenario does produce updates


class TestRunDetector:
    def test_tick_runs_after_other_events_of_its_time(self) -> None:
        d = detector(hr_staleness(60))
        updates = run(d, tick(60), series(HR, (60, 80.0)))
        assert updates == []  # the sample at 60 s counted before the tick at 60 s

    def test_tick_inside_a_batch_splits_it(self) -> None:
        d = detector(news2())
        events: list[DetectorEvent] = [
            series(HR, (0, 80.0)),
            tick(61),
            series(HR, (61, 131.0), (120, 110.0)),
            tick(120),
        ]
        # the tick at 61 s sees the sample at 61 s (single 3) but not the one at 120 s
        assert transitions(run(d, *events)) == [(61, MET), (120, CLEAR)]

    def test_empty_batches_are_harmless(self) -> None:
        d = detector(hr_limit(120.0))
        assert run(d, SamplesEvent(SampleBatch.from_rows([])), series(HR, (0, 125.0))) == [
            ConditionUpdate(ms(0), 0, 0, MET, AlarmPriority.MEDIUM, 125.0, 120.0)
        ]

    def test_reference_is_a_detector(self) -> None:
        implementation: Detector = detector(hr_limit(120.0))
        assert implementation.late_samples == 0

    def test_events_going_back_in_time_are_refused(self) -> None:
        d = detector(hr_staleness(60))
        with pytest.raises(ValueError, match="follows"):
            run(d, tick(10), series(HR, (5, 80.0)))

    def test_detector_refuses_input_earlier_than_given(self) -> None:
        d = detector(hr_staleness(60))
        d.tick(ms(10))
        with pytest.raises(ValueError, match="earlier"):
            d.mark_dose(0, ms(5))

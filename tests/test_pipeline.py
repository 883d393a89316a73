"""DetectionPipeline: readings and time in, alarm events out, in the order detection.md sets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.alerts.compile import STORAGE_BACKLOG
from monitor.alerts.inputs import Detector, SampleBatch
from monitor.alerts.lifecycle import FutureTimeError
from monitor.alerts.pipeline import DetectionPipeline, restore_settle_s, to_ms
from monitor.alerts.reference import ReferenceDetector
from monitor.alerts.replay_input import (
    ConsciousnessEvent,
    DetectorEvent,
    DoseEvent,
    SamplesEvent,
)
from monitor.alerts.rules import (
    BaselineSpec,
    CompiledRule,
    ConditionUpdate,
    LimitSpec,
    RuleSet,
    StalenessSpec,
)
from monitor.models import (
    AlarmCategory,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    Consciousness,
    Parameter,
    QualityFlag,
    Reading,
    ReadingKind,
)
from tests.test_engine import ORIGIN as ENGINE_ORIGIN
from tests.test_engine import event_lists, rule_sets

ORIGIN = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
SESSION = "S-1"

HR_HIGH = CompiledRule(
    id="hr-high",
    spec=LimitSpec(Parameter.HEART_RATE, high=True, threshold=120.0, inclusive=False),
    priority=AlarmPriority.HIGH,
    delay_s=10,
)
HR_STALE = CompiledRule(
    id="hr-stale",
    spec=StalenessSpec(Parameter.HEART_RATE, stale_after_s=5),
    priority=AlarmPriority.MEDIUM,
    category=AlarmCategory.TECHNICAL,
)
TEMP_BASELINE = CompiledRule(
    id="temp-baseline",
    spec=BaselineSpec(Parameter.TEMPERATURE, high=True, delta=1.0),
    priority=AlarmPriority.MEDIUM,
)


def rules(*compiled: CompiledRule) -> RuleSet:
    return RuleSet.build({"P-001": list(compiled), "P-002": list(compiled)})


def reference(rule_set: RuleSet, origin_ms: int) -> Detector:
    """The oracle refuses input that goes back in time: a check on the pipeline's ordering."""
    return ReferenceDetector(rule_set, origin_ms=origin_ms)


def pipeline(
    *compiled: CompiledRule, detector: Callable[[RuleSet, int], Detector] | None = None
) -> DetectionPipeline:
    return DetectionPipeline(rules(*compiled), session=SESSION, origin=ORIGIN, detector=detector)


def at(seconds: float) -> dt.datetime:
    return ORIGIN + dt.timedelta(seconds=seconds)


def hr(seconds: float, bpm: float, participant: str = "P-001", **fields: object) -> Reading:
    return Reading.model_validate(
        {
            "session": SESSION,
            "participant": participant,
            "device": "hr-1",
            "kind": ReadingKind.HEART_RATE,
            "values": {Parameter.HEART_RATE: bpm},
            "received_at": at(seconds),
            **fields,
        }
    )


def single(seconds: float, kind: ReadingKind, parameter: Parameter, value: float) -> Reading:
    """P-001's reading of one value, from the device of its kind."""
    return Reading(
        session=SESSION,
        participant="P-001",
        device=f"{kind.value.split('_')[0]}-1",
        kind=kind,
        values={parameter: value},
        received_at=at(seconds),
    )


def temperature(seconds: float, degrees: float) -> Reading:
    return single(seconds, ReadingKind.TEMPERATURE, Parameter.TEMPERATURE, degrees)


def states(events: Sequence[AlarmEvent]) -> list[tuple[str, AlarmState, float]]:
    return [(e.rule, e.state, (e.occurred_at - ORIGIN).total_seconds()) for e in events]


def test_ticks_run_on_the_grid_and_after_the_readings_of_their_time() -> None:
    fed = pipeline(HR_STALE)
    assert fed.feed([hr(5.0, 70.0)]) == []
    assert fed.stats.ticks == 4  # ticks 1..4 s ran before the reading; 5 s waits for advance
    events = fed.advance(at(5.0))  # the reading at 5 s is counted before the tick at 5 s
    assert [(e.rule, e.participant) for e in events] == [("hr-stale", "P-002")]
    assert fed.stats.ticks == 5

    idle = pipeline(HR_STALE)
    events = idle.advance(at(5.0))  # time passes without readings: stale from the origin
    assert idle.stats.ticks == 5
    assert [(e.rule, e.participant, e.state) for e in events] == [
        ("hr-stale", "P-001", AlarmState.ACTIVE),
        ("hr-stale", "P-002", AlarmState.ACTIVE),
    ]
    assert {e.occurred_at for e in events} == {at(5.0)}


def test_a_limit_alarm_goes_pending_active_and_latches() -> None:
    fed = pipeline(HR_HIGH)
    readings = [hr(s, 130.0 if 10 <= s < 30 else 100.0) for s in range(1, 40)]
    events = fed.feed(readings) + fed.advance(at(40))
    assert states(events) == [
        ("hr-high", AlarmState.PENDING, 10.0),
        ("hr-high", AlarmState.ACTIVE, 20.0),
        ("hr-high", AlarmState.ACTIVE, 30.0),  # high and unacknowledged: latched
    ]
    assert events[-1].condition_cleared
    assert [e.sequence for e in events] == [1, 2, 3]
    assert fed.active() == [events[-1]]
    assert fed.stats.readings == fed.stats.samples == 39
    assert fed.stats.alarm_events == 3
    assert fed.stats.participants == {"P-001"}


def test_a_dose_marker_fixes_the_baseline_that_later_readings_rise_from() -> None:
    def run(dose: bool) -> list[AlarmEvent]:
        fed = pipeline(TEMP_BASELINE, detector=reference)
        events = fed.feed([temperature(s, 36.5) for s in range(0, 300, 10)])
        if dose:
            events += fed.mark_dose("P-001", at(300))
        events += fed.feed([temperature(s, 37.6) for s in range(310, 400, 10)])
        return events + fed.advance(at(400))

    assert run(dose=False) == []
    events = run(dose=True)
    # The first 37.6 is a spike (+1.1 > 1.0 within 30 s); the second is evidence.
    assert states(events) == [("temp-baseline", AlarmState.ACTIVE, 320.0)]
    assert events[0].threshold == pytest.approx(37.5)


def test_engine_and_reference_give_the_same_events_in_any_chunking() -> None:
    readings = [hr(s * 0.5, 80.0 + (s % 120)) for s in range(400)]
    readings += [hr(s * 0.5, 90.0, participant="P-002") for s in range(0, 400, 7)]
    readings.sort(key=lambda r: r.received_at)

    def run(detector: Callable[[RuleSet, int], Detector] | None, chunk: int) -> list[AlarmEvent]:
        fed = pipeline(HR_HIGH, HR_STALE, TEMP_BASELINE, detector=detector)
        events = []
        for start in range(0, len(readings), chunk):
            events += fed.feed(readings[start : start + chunk])
        events += fed.mark_dose("P-001", at(200))
        return events + fed.advance(at(260))

    engine = run(None, len(readings))
    assert engine, "the course must raise alarms for the comparison to mean something"
    assert run(reference, len(readings)) == engine
    assert run(None, 7) == engine


def test_readings_that_go_back_in_time_are_counted_not_evaluated() -> None:
    fed = pipeline(HR_HIGH, detector=reference)
    fed.feed([hr(5.0, 70.0), hr(3.0, 130.0), hr(5.0, 71.0)])
    assert fed.stats.out_of_order == 1
    assert fed.detector.late_samples == 1  # the second 5.0 s sample: same time, same stream
    fed.advance(at(10.0))
    fed.feed([hr(9.5, 70.0)])  # behind the tick at 10 s
    assert fed.stats.out_of_order == 2
    assert fed.mark_dose("P-001", at(1.0)) == []  # a late marker is taken at 10 s, not refused


def test_only_final_measurements_become_samples() -> None:
    fed = pipeline(HR_HIGH)
    context = [
        Reading(
            session=SESSION,
            participant="P-001",
            device="temp-1",
            kind=ReadingKind.INTERMEDIATE_TEMPERATURE,
            values={Parameter.TEMPERATURE: 37.0},
            received_at=at(1),
        ),
        Reading(
            session=SESSION,
            participant="P-001",
            device="bp-1",
            kind=ReadingKind.CUFF_PRESSURE,
            values={Parameter.CUFF_PRESSURE: 150.0},
            received_at=at(1),
        ),
    ]
    fed.feed(context)
    assert fed.stats.samples == 0
    fed.feed(
        [
            Reading(
                session=SESSION,
                participant="P-001",
                device="bp-1",
                kind=ReadingKind.BLOOD_PRESSURE,
                values={
                    Parameter.SYSTOLIC_BP: 120.0,
                    Parameter.DIASTOLIC_BP: 80.0,
                    Parameter.MEAN_ARTERIAL_BP: 93.0,
                    Parameter.PULSE_RATE: 70.0,
                },
                received_at=at(2),
            ),
            hr(3, 150.0, quality=frozenset({QualityFlag.SENSOR_CONTACT_LOST})),
        ]
    )
    assert fed.stats.samples == 3  # systolic, diastolic, and the flagged heart rate
    assert fed.advance(at(20)) == []  # a flagged sample is no evidence


def test_strangers_are_counted_and_unknown_participants_refused() -> None:
    fed = pipeline(HR_HIGH)
    stranger = hr(1, 150.0, participant="P-009")
    other = hr(2, 150.0).model_copy(update={"session": "S-2"})
    assert fed.feed([stranger, other]) == []
    assert fed.stats.unknown_participant == 2
    with pytest.raises(KeyError, match="P-009"):
        fed.mark_dose("P-009", at(3))


def test_time_helpers() -> None:
    assert to_ms(at(1.5)) - to_ms(ORIGIN) == 1500
    with pytest.raises(ValueError, match="1 ms"):
        DetectionPipeline(rules(HR_HIGH), session=SESSION, origin=ORIGIN, tick_s=0)
    coarse = DetectionPipeline(rules(HR_STALE), session=SESSION, origin=ORIGIN, tick_s=2.5)
    coarse.advance(at(10))
    assert coarse.stats.ticks == 4


@pytest.mark.parametrize("make", [None, reference], ids=["engine", "reference"])
def test_a_reported_condition_alarms_every_participant_until_it_clears(
    make: Callable[[RuleSet, int], Detector] | None,
) -> None:
    fed = pipeline(HR_HIGH, STORAGE_BACKLOG, detector=make)
    raised = fed.report("storage-backlog", at(30), met=True, value=1200, threshold=1000)
    assert [(e.participant, e.state, e.category, e.priority) for e in raised] == [
        (code, AlarmState.ACTIVE, AlarmCategory.TECHNICAL, AlarmPriority.LOW)
        for code in ("P-001", "P-002")
    ]
    assert raised[0].message == "Records waiting for the database: 1,200 points (mark 1,000)"
    assert fed.stats.ticks == 29  # time up to the report ran first
    assert fed.advance(at(600)) == []  # low priority: no escalation, and detection leaves it be
    cleared = fed.report("storage-backlog", at(601), met=False, value=10, threshold=1000)
    assert [(e.participant, e.state) for e in cleared] == [
        ("P-001", AlarmState.RESOLVED),
        ("P-002", AlarmState.RESOLVED),
    ]
    assert fed.active() == []
    with pytest.raises(KeyError, match="no reported rule 'hr-high'"):
        fed.report("hr-high", at(602), met=True)


def test_a_restored_session_keeps_its_alarms_and_then_follows_fresh_detection() -> None:
    before = pipeline(HR_HIGH)
    persisted = before.feed([hr(s, 130.0) for s in range(1, 31)]) + before.advance(at(30))
    alarm = before.active()[0]
    persisted += before.acknowledge(str(alarm.alarm_id), "nurse-07", at(30))
    assert before.active()[0].state is AlarmState.ACKNOWLEDGED

    def restarted(origin_s: float) -> DetectionPipeline:
        fresh = DetectionPipeline(rules(HR_HIGH), session=SESSION, origin=at(origin_s))
        fresh.restore(reversed(persisted), settle_s=20)
        assert fresh.active() == before.active()  # the acknowledgement came back too
        return fresh

    still = restarted(40)
    events = still.feed([hr(s, 130.0) for s in range(41, 90)]) + still.advance(at(90))
    assert events == []  # the same condition, already acknowledged: nothing to announce again

    recovered = restarted(40)
    events = recovered.feed([hr(s, 70.0) for s in range(41, 90)]) + recovered.advance(at(90))
    assert states(events) == [("hr-high", AlarmState.RESOLVED, 61.0)]  # at the reconcile
    assert events[0].sequence == persisted[-1].sequence + 1
    assert recovered.active() == []


def test_the_restore_settle_time_covers_the_slowest_stream_and_the_longest_delay() -> None:
    assert restore_settle_s(rules(HR_HIGH, HR_STALE)) == 5 + 10
    assert restore_settle_s(rules(TEMP_BASELINE)) == 0


# -- time that jumps -------------------------------------------------------------------------------

GAPS_MS = [0, 0, 1, 999, 1000, 30_000, 61_000, 400_000]


def _drive(
    rule_set: RuleSet,
    events: Sequence[DetectorEvent],
    gaps: Sequence[int],
    detector: Callable[[RuleSet, int], Detector] | None,
) -> list[AlarmEvent]:
    """The events through a pipeline, with time jumping ahead by ``gaps`` between them."""
    origin = dt.datetime.fromtimestamp(ENGINE_ORIGIN / 1000, tz=dt.UTC)
    fed = DetectionPipeline(rule_set, session=SESSION, origin=origin, detector=detector)
    codes = rule_set.participants
    shift = 0
    out: list[AlarmEvent] = []
    for event, gap in zip(events, gaps, strict=True):
        shift += gap
        if isinstance(event, SamplesEvent):
            batch = event.batch
            moved = SampleBatch(
                batch.t_ms + shift, batch.participant, batch.parameter, batch.value, batch.flagged
            )
            out += fed.feed_samples(moved)
            continue
        moment = origin + dt.timedelta(milliseconds=event.t_ms + shift - ENGINE_ORIGIN)
        if isinstance(event, DoseEvent):
            out += fed.mark_dose(codes[event.participant], moment)
        elif isinstance(event, ConsciousnessEvent):
            out += fed.set_consciousness(codes[event.participant], moment, event.level)
        else:
            out += fed.advance(moment)
            if gap % 2:  # now and then staff pause a participant, which must expire on time
                out += fed.pause(codes[0], "nurse-07", 60, moment)
    return out + fed.advance_ms(ENGINE_ORIGIN + shift + 900_000)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_skipping_quiet_ticks_gives_the_events_of_ticking_every_period(
    data: st.DataObject,
) -> None:
    """The reference ticks at every grid time; the engine lets the pipeline skip quiet ones."""
    rule_set = data.draw(rule_sets())
    events = data.draw(event_lists(len(rule_set.participants)))
    gaps = data.draw(st.lists(st.sampled_from(GAPS_MS), min_size=len(events), max_size=len(events)))
    engine = _drive(rule_set, events, gaps, None)
    assert engine == _drive(rule_set, events, gaps, reference)


@pytest.mark.timeout(20)  # ticking every second, a year took minutes
def test_a_year_of_silence_costs_the_ticks_that_change_something() -> None:
    """Low priority, so no escalation steps: those are events, one per step, like any other."""
    stale = CompiledRule(
        id="hr-stale",
        spec=StalenessSpec(Parameter.HEART_RATE, stale_after_s=60),
        priority=AlarmPriority.LOW,
        category=AlarmCategory.TECHNICAL,
    )
    fed = pipeline(stale)
    fed.feed([hr(1, 70.0)])
    calls = 0
    tick = fed.detector.tick

    def counted(t_ms: int) -> list[ConditionUpdate]:
        nonlocal calls
        calls += 1
        return tick(t_ms)

    fed.detector.tick = counted  # type: ignore[method-assign]
    events = fed.advance(at(366 * 86_400))
    assert fed.stats.ticks == 366 * 86_400
    assert calls <= 3  # the first tick, the one that finds P-001 stale, the last
    assert [(e.participant, e.state, e.occurred_at) for e in events] == [
        ("P-002", AlarmState.ACTIVE, at(60)),  # no reading: stale from the origin
        ("P-001", AlarmState.ACTIVE, at(61)),
    ]


# -- future timestamps -----------------------------------------------------------------------------

SPO2_LOW = CompiledRule(
    id="spo2-low",
    spec=LimitSpec(Parameter.SPO2, high=False, threshold=88.0, inclusive=True),
    priority=AlarmPriority.HIGH,
)


def spo2(seconds: float, percent: float) -> Reading:
    return single(seconds, ReadingKind.SPO2, Parameter.SPO2, percent)


class Wall:
    """The service's clock as the pipeline sees it: a horizon of now plus 5 s of skew."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def horizon(self) -> int:
        return to_ms(at(self.now_s + 5))


def test_a_reading_stamped_an_hour_ahead_is_refused_and_later_readings_still_alarm() -> None:
    wall = Wall()
    fed = DetectionPipeline(
        rules(SPO2_LOW, HR_STALE), session=SESSION, origin=ORIGIN, horizon=wall.horizon
    )
    wall.now_s = 2
    events = fed.feed([hr(1, 70.0), hr(2, 70.0, participant="P-002"), spo2(3600, 97.0)])
    events += fed.advance(at(2))
    assert events == []  # no staleness flood: session time did not follow the reading
    assert fed.stats.future == 1
    assert fed.stats.future_stream == "P-001 spo2 from device spo2-1"
    wall.now_s = 4
    raised = fed.feed([spo2(3, 85.0), hr(3, 70.0), hr(3, 70.0, participant="P-002")])
    assert states(raised) == [("spo2-low", AlarmState.ACTIVE, 3.0)]
    assert fed.stats.out_of_order == 0


@pytest.mark.timeout(10)  # following it, the year 9999 took gigabytes and never came back
def test_the_year_9999_is_refused_at_once_by_every_input() -> None:
    fed = pipeline(HR_HIGH, HR_STALE)  # no clock: the horizon is the 24 h a session may last
    far = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)
    late = hr(0, 70.0).model_copy(update={"received_at": far})
    assert fed.feed([late]) == []
    samples = SampleBatch.from_rows(
        [(to_ms(at(1)), 0, 0, 70.0, False), (to_ms(far), 0, 0, 71.0, False)]
    )
    assert fed.feed_samples(samples) == []
    with pytest.raises(FutureTimeError, match="dose marker stamped 9999-12-31"):
        fed.mark_dose("P-001", far)
    with pytest.raises(FutureTimeError, match="consciousness entry"):
        fed.set_consciousness("P-001", far, Consciousness.PAIN)
    assert fed.stats.future == 4
    assert fed.stats.samples == 1
    assert fed.time_ms == to_ms(at(1))
    assert fed.feed([hr(86_400, 70.0)]) != []  # the last second of the session still counts
    assert fed.feed([hr(86_400.001, 70.0)]) == []
    assert fed.stats.future == 5


def test_a_dose_marker_two_hours_ahead_is_refused_without_moving_time() -> None:
    wall = Wall()
    fed = DetectionPipeline(
        rules(HR_HIGH, HR_STALE), session=SESSION, origin=ORIGIN, horizon=wall.horizon
    )
    wall.now_s = 3
    fed.feed([hr(1, 70.0), hr(1, 70.0, participant="P-002")])
    with pytest.raises(FutureTimeError, match="past the latest time session S-1 accepts now"):
        fed.mark_dose("P-001", at(7200))
    assert fed.time_ms == to_ms(at(1))
    assert fed.advance(at(3)) == []
    assert fed.mark_dose("P-001", at(5)) == []  # within the skew: taken at its time
    assert fed.time_ms == to_ms(at(5))
    assert fed.stats.future == 1

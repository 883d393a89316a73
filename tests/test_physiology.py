"""Session physiology and scenarios: deterministic, calibrated in shape, answer key correct."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pytest

from monitor.clock import ManualClock
from monitor.models import DeviceKind, QualityFlag
from simulators.physiology import (
    BASELINE_RANGES,
    ArtefactKind,
    BatteryDrain,
    ContactLoss,
    Course,
    CourseShape,
    CuffFailures,
    Disconnect,
    Dose,
    DrugProtocol,
    MotionSpikes,
    Physiology,
    Vital,
    artefact_timeline,
)
from simulators.scenario import (
    CRITICAL_LIMITS,
    MIN_DURATION_S,
    PARAMETER_VITAL,
    EventKind,
    ScenarioError,
    SessionModel,
    SessionTime,
    Severity,
    device_name,
    list_scenarios,
    load_scenario,
    parse_device_name,
    session_models,
    verify_ground_truth,
)

HOUR = 3600.0
DOSE_AT = 1800.0
SESSION = np.arange(0.0, 8 * HOUR, 30.0)
REQUIRED_SCENARIOS = {
    "mdma-typical",
    "mdma-hyperthermia",
    "mdma-hypertensive",
    "mdma-booster",
    "psilocybin-typical",
    "desaturation",
    "sensor-dropout",
    "artifacts",
    "multi-room",
}
QUIET_SCENARIOS = ("mdma-typical", "mdma-booster", "psilocybin-typical", "artifacts")


def mdma(seed: int, *doses: tuple[float, float]) -> Physiology:
    return Physiology(
        seed=seed,
        protocol=DrugProtocol.MDMA,
        doses=[Dose(at_s=at, mg=mg) for at, mg in doses],
    )


def systolic_effect(seed: int, *doses: tuple[float, float]) -> np.ndarray:
    """Drug minus placebo for the same person: the noise cancels, the response remains."""
    drug = mdma(seed, *doses).true_vitals_array(SESSION).systolic_mmhg
    placebo = mdma(seed).true_vitals_array(SESSION).systolic_mmhg
    return drug - placebo


# ------------------------------------------------------------------ physiology


def test_same_seed_same_person_and_session() -> None:
    first = mdma(7, (DOSE_AT, 125)).true_vitals_array(SESSION)
    second = mdma(7, (DOSE_AT, 125)).true_vitals_array(SESSION)
    other = mdma(8, (DOSE_AT, 125)).true_vitals_array(SESSION)
    for vital in Vital:
        np.testing.assert_array_equal(first.get(vital), second.get(vital))
    assert not np.array_equal(first.systolic_mmhg, other.systolic_mmhg)


def test_scalar_and_vectorised_agree_and_have_the_right_shapes() -> None:
    model = mdma(3, (DOSE_AT, 120), (DOSE_AT + 2 * HOUR, 60))
    series = model.true_vitals_array(SESSION)
    assert len(series) == SESSION.shape[0]
    for vital in Vital:
        assert series.get(vital).shape == SESSION.shape
    for index in (0, 100, 500, 900):
        single = model.true_vitals(float(SESSION[index]))
        assert single == pytest.approx(series.at(index))
        assert single.get(Vital.SYSTOLIC_BP) == pytest.approx(series.systolic_mmhg[index])
    assert model.true_vitals_array(5000.0).systolic_mmhg.shape == (1,)


def test_baselines_fall_in_the_population_ranges() -> None:
    pre_dose = np.arange(0.0, DOSE_AT, 60.0)
    for seed in range(200):
        model = mdma(seed, (DOSE_AT, 125))
        for vital, (low, high) in BASELINE_RANGES.items():
            assert low <= model.baseline.mesor[vital] <= high
        series = model.true_vitals_array(pre_dose)
        assert series.systolic_mmhg.min() > 100 and series.systolic_mmhg.max() < 140
        assert series.heart_rate_bpm.min() > 50 and series.heart_rate_bpm.max() < 92
        assert series.core_temperature_c.min() > 36.0 and series.core_temperature_c.max() < 37.5
        assert series.spo2_percent.min() > 94 and series.spo2_percent.max() <= 100
        assert np.all(series.diastolic_mmhg < series.systolic_mmhg - 10)


def test_both_sexes_are_drawn_and_a_given_sex_keeps_the_person() -> None:
    sexes = {mdma(seed).sex for seed in range(40)}
    assert len(sexes) == 2
    drawn = mdma(5)
    other = "male" if drawn.sex == "female" else "female"
    forced = Physiology(seed=5, protocol=DrugProtocol.MDMA, sex=other)  # type: ignore[arg-type]
    assert forced.sex == other
    assert forced.baseline.mesor == drawn.baseline.mesor


def test_nothing_happens_before_onset_and_effects_largely_subside_by_six_hours() -> None:
    for seed in range(30):
        effect = systolic_effect(seed, (DOSE_AT, 125))
        before_onset = SESSION < DOSE_AT + 30 * 60
        assert np.abs(effect[before_onset]).max() < 1e-9
        peak = effect.max()
        late = SESSION >= DOSE_AT + 6 * HOUR
        assert effect[late].max() < 0.25 * peak, f"seed {seed}"


def test_a_single_peak_one_to_two_hours_after_the_dose() -> None:
    for seed in range(30):
        effect = systolic_effect(seed, (DOSE_AT, 125))
        peak_at = SESSION[effect.argmax()] - DOSE_AT
        assert 1 * HOUR <= peak_at <= 2.5 * HOUR, f"seed {seed}: peak at {peak_at / HOUR:.2f} h"
        steps = np.diff(effect)
        rising, falling = steps[: effect.argmax()], steps[effect.argmax() :]
        assert np.all(rising >= -1e-9) and np.all(falling <= 1e-9), "no secondary peak"


def test_booster_prolongs_the_plateau_without_a_higher_peak() -> None:
    for seed in range(20):
        single = systolic_effect(seed, (DOSE_AT, 120))
        boosted = systolic_effect(seed, (DOSE_AT, 120), (DOSE_AT + 2 * HOUR, 60))
        assert boosted.max() <= single.max() + 1e-9
        half = 0.5 * single.max()
        step_h = (SESSION[1] - SESSION[0]) / HOUR
        longer_h = (np.sum(boosted >= half) - np.sum(single >= half)) * step_h
        assert 0.6 <= longer_h <= 1.4, f"seed {seed}: plateau longer by {longer_h:.2f} h"
        assert np.all(np.diff(boosted)[boosted.argmax() :] <= 1e-9), "no second peak"


def test_temperature_peaks_after_blood_pressure_and_skin_may_cool() -> None:
    for seed in range(20):
        drug = mdma(seed, (DOSE_AT, 125)).true_vitals_array(SESSION)
        placebo = mdma(seed).true_vitals_array(SESSION)
        bp_peak = SESSION[(drug.systolic_mmhg - placebo.systolic_mmhg).argmax()]
        core_effect = drug.core_temperature_c - placebo.core_temperature_c
        skin_effect = drug.skin_temperature_c - placebo.skin_temperature_c
        assert SESSION[core_effect.argmax()] > bp_peak
        assert core_effect.max() > 0 and skin_effect.min() < 0


def test_responses_are_partly_independent() -> None:
    systolic, heart_rate = [], []
    for seed in range(300):
        response = mdma(seed, (DOSE_AT, 125)).response
        systolic.append(response.systolic_rise_mmhg)
        heart_rate.append(response.heart_rate_rise_bpm)
    correlation = np.corrcoef(np.log(systolic), np.log(heart_rate))[0, 1]
    assert 0.05 < correlation < 0.8, f"correlation {correlation:.2f}"


def test_psilocybin_is_milder_than_mdma() -> None:
    mdma_rises, psilocybin_rises = [], []
    for seed in range(200):
        mdma_rises.append(mdma(seed, (DOSE_AT, 125)).response)
        psilocybin_rises.append(
            Physiology(
                seed=seed, protocol=DrugProtocol.PSILOCYBIN, doses=[Dose(at_s=DOSE_AT, mg=25)]
            ).response
        )
    for attribute in ("systolic_rise_mmhg", "heart_rate_rise_bpm"):
        mdma_mean = np.mean([getattr(r, attribute) for r in mdma_rises])
        psilocybin_mean = np.mean([getattr(r, attribute) for r in psilocybin_rises])
        assert psilocybin_mean < 0.8 * mdma_mean, attribute


@pytest.mark.parametrize(
    ("protocol", "doses", "message"),
    [
        (DrugProtocol.MDMA, [(1800, 120), (1800 + 4 * HOUR, 60)], "calibrated window"),
        (DrugProtocol.MDMA, [(1800, 60), (1800 + 2 * HOUR, 120)], "larger than the first"),
        (DrugProtocol.MDMA, [(1800, 120), (8000, 30), (9000, 30)], "at most one"),
        (DrugProtocol.PSILOCYBIN, [(1800, 25), (1800 + 2 * HOUR, 10)], "single dose"),
    ],
)
def test_uncalibrated_dose_schedules_are_refused(
    protocol: DrugProtocol, doses: list[tuple[float, float]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Physiology(seed=1, protocol=protocol, doses=[Dose(at_s=t, mg=mg) for t, mg in doses])


def test_a_course_takes_over_and_hands_back() -> None:
    course = Course(
        parameter=Vital.CORE_TEMPERATURE,
        onset_s=3 * HOUR,
        ramp_s=HOUR,
        shape=CourseShape.LINEAR,
        target=40.0,
        hold_s=1800,
        recovery_s=1800,
    )
    plain = mdma(11, (DOSE_AT, 125))
    fevered = Physiology(
        seed=11, protocol=DrugProtocol.MDMA, doses=[Dose(at_s=DOSE_AT, mg=125)], courses=[course]
    )
    t = np.array([2 * HOUR, 4.25 * HOUR, 6 * HOUR])
    before, during, after = fevered.true_vitals_array(t).core_temperature_c
    expected = plain.true_vitals_array(t).core_temperature_c
    assert before == expected[0] and after == expected[2]
    assert during == pytest.approx(40.0, abs=0.2)


def test_a_relative_course_adds_to_the_physiology() -> None:
    course = Course(parameter=Vital.HEART_RATE, onset_s=HOUR, ramp_s=60, delta=30.0, hold_s=600)
    plain = mdma(12, (DOSE_AT, 125)).true_vitals(HOUR + 300)
    raised = Physiology(
        seed=12, protocol=DrugProtocol.MDMA, doses=[Dose(at_s=DOSE_AT, mg=125)], courses=[course]
    ).true_vitals(HOUR + 300)
    assert raised.heart_rate_bpm == pytest.approx(plain.heart_rate_bpm + 30.0)


def test_courses_are_validated() -> None:
    with pytest.raises(ValueError, match="exactly one of target"):
        Course(parameter=Vital.SPO2, onset_s=0, ramp_s=60, target=85.0, delta=-10.0)
    with pytest.raises(ValueError, match="ramp_s > 0"):
        Course(parameter=Vital.SPO2, onset_s=0, ramp_s=0, target=85.0)
    with pytest.raises(ValueError, match="plausible range"):
        Course(parameter=Vital.SPO2, onset_s=0, ramp_s=60, target=120.0)


# ------------------------------------------------------------------ artefacts


def timeline(seed: int) -> tuple[object, ...]:
    return artefact_timeline(
        [
            MotionSpikes(rate_per_hour=10),
            CuffFailures(probability=0.2),
            ContactLoss(device=DeviceKind.PULSE_OXIMETER, rate_per_hour=2, duration_s=120),
            Disconnect(device=DeviceKind.THERMOMETER, at_s=(7200.0,), duration_s=600),
            BatteryDrain(device=DeviceKind.HEART_RATE, start_percent=50, percent_per_hour=5),
        ],
        seed=seed,
        duration_s=6 * HOUR,
        cuff_interval_s=600,
    )


def test_artefact_timelines_are_deterministic_per_seed() -> None:
    assert timeline(1) == timeline(1)
    assert timeline(1) != timeline(2)


def test_artefact_events_follow_their_conventions() -> None:
    events = artefact_timeline(
        [
            MotionSpikes(rate_per_hour=20, magnitude_bpm=40, jitter_bpm=5),
            CuffFailures(probability=0.3, at_s=(3100.0,)),
            ContactLoss(device=DeviceKind.PULSE_OXIMETER, rate_per_hour=6, duration_s=300),
            BatteryDrain(device=DeviceKind.HEART_RATE, start_percent=50, percent_per_hour=5),
        ],
        seed=4,
        duration_s=6 * HOUR,
        cuff_interval_s=600,
    )
    assert [e.t_s for e in events] == sorted(e.t_s for e in events)
    spikes = [e for e in events if e.kind is ArtefactKind.MOTION_SPIKE]
    assert 60 < len(spikes) < 180
    assert all(35 <= (e.magnitude or 0) <= 45 and e.duration_s == 0 for e in spikes)
    assert any(QualityFlag.BODY_MOVEMENT in e.flags for e in spikes)
    cuffs = [e for e in events if e.kind is ArtefactKind.CUFF_FAILURE]
    assert all(e.t_s % 600 == 0 and QualityFlag.VALUE_UNUSABLE in e.flags for e in cuffs)
    assert all(e.flags & {QualityFlag.BODY_MOVEMENT, QualityFlag.IMPROPER_CUFF_FIT} for e in cuffs)
    assert 3600.0 in {e.t_s for e in cuffs}, "an explicit time snaps to the next measurement"
    losses = [e for e in events if e.kind is ArtefactKind.CONTACT_LOSS]
    assert all(a.end_s <= b.t_s for a, b in itertools.pairwise(losses))
    levels = [e.magnitude or 0.0 for e in events if e.kind is ArtefactKind.BATTERY_LEVEL]
    assert levels[0] == 50 and levels[1:] == sorted(levels[1:], reverse=True)
    assert levels[-1] == pytest.approx(50 - 5 * 6 + 1)


def test_session_model_reports_device_state() -> None:
    model = SessionModel(load_scenario("sensor-dropout"), "P-001")
    assert model.device_state(DeviceKind.HEART_RATE, 10_000).in_contact
    lost = model.device_state(DeviceKind.HEART_RATE, 10_900)
    assert not lost.in_contact and lost.connected and lost.notifying
    gone = model.device_state(DeviceKind.HEART_RATE, 16_300)
    assert not gone.connected and not gone.notifying
    assert model.device_state(DeviceKind.HEART_RATE, 16_200 + 480).connected
    assert model.device_state(DeviceKind.THERMOMETER, 16_300).connected
    starts = model.artefacts_between(10_000, 17_000, DeviceKind.HEART_RATE)
    assert [e.kind for e in starts] == [ArtefactKind.CONTACT_LOSS, ArtefactKind.DISCONNECT]

    drained = SessionModel(load_scenario("artifacts"), "P-001")
    assert drained.device_state(DeviceKind.HEART_RATE, 0).battery_percent == 60
    assert drained.device_state(DeviceKind.HEART_RATE, 3 * HOUR).battery_percent == 48


# ------------------------------------------------------------------ scenarios


def test_every_shipped_scenario_loads() -> None:
    names = list_scenarios()
    assert set(names) >= REQUIRED_SCENARIOS
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.duration_s >= MIN_DURATION_S
        for participant in scenario.participants:
            assert all(dose.at_s >= 1800 for dose in participant.doses), "pre-dose baseline"
        assert session_models(scenario).keys() == {p.code for p in scenario.participants}


def test_demo_participants_are_in_room_one() -> None:
    scenario = load_scenario("mdma-typical")
    assert [(p.code, p.room) for p in scenario.participants] == [
        ("P-001", "room-1"),
        ("P-002", "room-1"),
    ]


def test_multi_room_has_three_rooms_of_two() -> None:
    scenario = load_scenario("multi-room")
    rooms = [p.room for p in scenario.participants]
    assert len(scenario.rooms) == 3
    assert all(rooms.count(room.id) == 2 for room in scenario.rooms)


@pytest.mark.parametrize("name", QUIET_SCENARIOS)
def test_typical_and_artefact_scenarios_have_no_critical_events(name: str) -> None:
    scenario = load_scenario(name)
    assert not [e for e in scenario.ground_truth if e.severity is Severity.CRITICAL]


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("mdma-hyperthermia", {EventKind.HYPERTHERMIA}),
        ("mdma-hypertensive", {EventKind.HYPERTENSIVE_CRISIS}),
        ("desaturation", {EventKind.DESATURATION}),
        ("multi-room", {EventKind.TACHYCARDIA, EventKind.HYPERTENSIVE_CRISIS}),
    ],
)
def test_event_scenarios_carry_their_critical_events(name: str, kinds: set[EventKind]) -> None:
    critical = {e.kind for e in load_scenario(name).ground_truth if e.severity is Severity.CRITICAL}
    assert critical == kinds


@pytest.mark.parametrize("name", sorted(REQUIRED_SCENARIOS))
def test_ground_truth_onsets_are_where_the_model_crosses(name: str) -> None:
    """Every stated onset is a real crossing (+/- 60 s), and no critical crossing is unlisted."""
    assert verify_ground_truth(load_scenario(name), step_s=2.0, tolerance_s=60.0) == []


def test_the_hyperthermia_course_climbs_through_38_5_to_40() -> None:
    model = SessionModel(load_scenario("mdma-hyperthermia"), "P-001")
    core = model.vitals_array(np.arange(0.0, 8 * HOUR, 10.0)).core_temperature_c
    assert core.max() >= 39.8
    onsets = {e.threshold: e.onset_s for e in model.ground_truth}
    assert onsets[38.5] < onsets[39.0]
    skin_at_peak = model.vitals(float(np.argmax(core) * 10.0)).skin_temperature_c
    assert skin_at_peak < model.vitals(0.0).skin_temperature_c - 0.5, "skin cools, core heats"


def test_hypertensive_crises_are_caught_by_the_next_cuff_reading() -> None:
    """The cuff measures on a schedule: the first measurement after onset already reads >= 180."""
    for name in ("mdma-hypertensive", "multi-room"):
        scenario = load_scenario(name)
        for event in scenario.ground_truth:
            if event.kind is not EventKind.HYPERTENSIVE_CRISIS:
                continue
            model = SessionModel(scenario, event.participant)
            schedule = model.cuff_schedule_s()
            next_cuff = float(schedule[schedule >= event.onset_s][0])
            assert next_cuff - event.onset_s <= 60
            assert model.vitals(next_cuff).systolic_mmhg >= 180


def test_critical_limits_map_to_modelled_vitals() -> None:
    assert set(CRITICAL_LIMITS) <= set(PARAMETER_VITAL)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def broken_copy(tmp_path: Path, old: str, new: str, name: str = "mdma-typical") -> Path:
    text = load_text("mdma-typical")
    assert old in text
    return write(tmp_path, name, text.replace(old, new, 1))


def load_text(name: str) -> str:
    return (Path(__file__).parents[1] / "simulators" / "scenarios" / f"{name}.toml").read_text()


def test_a_broken_scenario_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = broken_copy(tmp_path, "mg = 120 }", "mg = -5 }")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message
    assert "participants[0].doses[0].mg" in message


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    path = broken_copy(tmp_path, 'protocol = "mdma"', 'protocol = "mdma"\nweight_kg = 70')
    with pytest.raises(ScenarioError, match=r"participants\[0\]\.weight_kg"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("duration_s = 28800", "duration_s = 3600", "duration_s"),
        ("doses = [{ at_s = 1800,", "doses = [{ at_s = 600,", "no pre-dose baseline"),
        ('room = "room-1"', 'room = "room-9"', "room-9"),
        ('code = "P-002"', 'code = "P-001"', "duplicate participant code"),
        ('code = "P-001"', 'code = "Jane Doe"', r"participants\[0\]\.code"),
        (
            "doses = [{ at_s = 1800, mg = 120 }]",
            "doses = [{ at_s = 1800, mg = 120 }, { at_s = 20000, mg = 60 }]",
            "calibrated window",
        ),
    ],
)
def test_invalid_scenarios_explain_themselves(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    with pytest.raises(ScenarioError, match=field):
        load_scenario(broken_copy(tmp_path, old, new))


def test_unreadable_scenarios_name_the_file(tmp_path: Path) -> None:
    bad_toml = write(tmp_path, "bad", "name = 'bad'\nduration_s = = 3")
    with pytest.raises(ScenarioError, match=r"bad\.toml: not valid TOML"):
        load_scenario(bad_toml)
    renamed = write(tmp_path, "renamed", load_text("mdma-typical"))
    with pytest.raises(ScenarioError, match=r"renamed\.toml: name"):
        load_scenario(renamed)
    with pytest.raises(ScenarioError, match=r"shipped scenarios: .*mdma-typical"):
        load_scenario("no-such-scenario")


def test_device_names_follow_the_shared_convention() -> None:
    assert device_name(DeviceKind.HEART_RATE, "P-001") == "SIM-HR-P-001"
    assert device_name("blood_pressure", "P-001") == "SIM-BP-P-001"
    assert device_name(DeviceKind.THERMOMETER, "P-014") == "SIM-TEMP-P-014"
    assert device_name(DeviceKind.PULSE_OXIMETER, "P-2") == "SIM-SPO2-P-2"
    for kind in DeviceKind:
        assert parse_device_name(device_name(kind, "P-007")) == (kind, "P-007")
    assert parse_device_name("Polar H10 1234") is None
    model = SessionModel(load_scenario("mdma-typical"), "P-002")
    assert model.device_name(DeviceKind.HEART_RATE) == "SIM-HR-P-002"


def test_session_model_uses_the_scenario_physiology() -> None:
    scenario = load_scenario("desaturation")
    model = SessionModel(scenario, "P-001")
    spec = scenario.participant("P-001")
    bare = Physiology(seed=spec.seed, protocol=spec.protocol, doses=spec.doses)
    assert model.vitals(3000.0) == bare.true_vitals(3000.0)
    assert model.vitals(13_300.0).spo2_percent < 86
    assert model.vitals(13_300.0).spo2_percent < bare.true_vitals(13_300.0).spo2_percent - 8


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_session_time_runs_on_the_injected_clock() -> None:
    clock = ManualClock(dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC))
    await clock.advance(100)
    session = SessionTime.start(clock)
    await clock.advance(1800)
    model = SessionModel(load_scenario("mdma-typical"), "P-001")
    assert session.elapsed_s() == 1800
    assert model.vitals(session.elapsed_s()) == model.vitals(1800.0)

"""The simulated population reproduces the published incidences and time courses.

Targets (docs/clinical-basis.md#simulator; ``#name`` below is a section of that page):

* MDMA, Vizeli & Liechti 2017 (#mdma-bp-hr), 75 and 125 mg pooled: peak SBP > 160 mmHg in 33 %,
  HR > 100 bpm in 29 %, body temperature > 38 degC in 19 % of subjects; all greater at 125 than
  at 75 mg. The per-dose split of Vizeli's 166 subjects is only in the paper's full-text tables;
  most Basel studies used 125 mg, so the cohort is 1 in 4 at 75 mg and 3 in 4 at 125 mg (an
  assumption).
* Peak BP and HR 1-2 h after the dose (Kolbrich, #mdma-bp-hr); core temperature peaks later.
* Psilocybin 25 mg: T > 38 degC in 17 % (Becker 2024), HR > 100 in 7 % (Becker 2024), mean peak SBP
  145.93 +/- 19.01 mmHg (Bennett 2023, n = 14; all #psilocybin).

"Peak over the session" is taken, as in the laboratory studies, from spot measurements on a
schedule (pre-dose, then 0.33, 0.67, 1, 1.5, 2, 2.5, 3, 4, 5 and 6 h after the dose; the exact
Basel schedule is not in the published abstracts, this one is an assumption). Continuous
monitoring sees more exceedances than spot checks; those numbers are printed in the messages for
the detection work.

Tolerances: with n = 400 the binomial standard error of an incidence near 30 % is about 2.3
percentage points (about 3.3 at n = 200). +/- 8 points is about 3 SE: wide enough that the
calibration is not tuned to one seed range, narrow enough to catch a broken model. The cohort is
drawn from fixed seeds, so the test is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from simulators.physiology import Dose, DrugProtocol, Physiology

HOUR = 3600.0
DOSE_AT = 1800.0
DENSE = np.arange(0.0, 8 * HOUR + 1, 60.0)
LAB_SCHEDULE_H = np.array([-0.5, 0.0, 0.33, 0.67, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0])
LAB_INDEX = np.searchsorted(DENSE, DOSE_AT + np.round(LAB_SCHEDULE_H * 60.0) * 60.0)
MDMA_N = 400
PSILOCYBIN_N = 300
INCIDENCE_TOLERANCE_PP = 8.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One simulated participant's session, summarised."""

    mg: float
    lab_peak_systolic: float
    lab_peak_heart_rate: float
    lab_peak_core: float
    continuous_peak_systolic: float
    continuous_peak_heart_rate: float
    continuous_peak_core: float
    systolic_rise: float  # peak of drug minus own placebo course
    heart_rate_rise: float
    core_rise: float
    systolic_peak_h: float  # time of that peak after the dose
    heart_rate_peak_h: float
    core_peak_h: float


def simulate(seed: int, protocol: DrugProtocol, mg: float) -> Outcome:
    drug = Physiology(seed=seed, protocol=protocol, doses=[Dose(at_s=DOSE_AT, mg=mg)])
    placebo = Physiology(seed=seed, protocol=protocol)
    on = drug.true_vitals_array(DENSE)
    off = placebo.true_vitals_array(DENSE)
    systolic = on.systolic_mmhg - off.systolic_mmhg
    heart_rate = on.heart_rate_bpm - off.heart_rate_bpm
    core = on.core_temperature_c - off.core_temperature_c

    def after_dose_h(effect: np.ndarray) -> float:
        return float((DENSE[effect.argmax()] - DOSE_AT) / HOUR)

    return Outcome(
        mg=mg,
        lab_peak_systolic=float(on.systolic_mmhg[LAB_INDEX].max()),
        lab_peak_heart_rate=float(on.heart_rate_bpm[LAB_INDEX].max()),
        lab_peak_core=float(on.core_temperature_c[LAB_INDEX].max()),
        continuous_peak_systolic=float(on.systolic_mmhg.max()),
        continuous_peak_heart_rate=float(on.heart_rate_bpm.max()),
        continuous_peak_core=float(on.core_temperature_c.max()),
        systolic_rise=float(systolic.max()),
        heart_rate_rise=float(heart_rate.max()),
        core_rise=float(core.max()),
        systolic_peak_h=after_dose_h(systolic),
        heart_rate_peak_h=after_dose_h(heart_rate),
        core_peak_h=after_dose_h(core),
    )


@pytest.fixture(scope="module")
def mdma_cohort() -> list[Outcome]:
    return [
        simulate(100_000 + i, DrugProtocol.MDMA, 75.0 if i % 4 == 0 else 125.0)
        for i in range(MDMA_N)
    ]


@pytest.fixture(scope="module")
def psilocybin_cohort() -> list[Outcome]:
    return [simulate(200_000 + i, DrugProtocol.PSILOCYBIN, 25.0) for i in range(PSILOCYBIN_N)]


def percent(cohort: list[Outcome], attribute: str, limit: float) -> float:
    values = np.array([getattr(outcome, attribute) for outcome in cohort])
    return float(100.0 * np.mean(values > limit))


def median(cohort: list[Outcome], attribute: str) -> float:
    return float(np.median([getattr(outcome, attribute) for outcome in cohort]))


def mean(cohort: list[Outcome], attribute: str) -> float:
    return float(np.mean([getattr(outcome, attribute) for outcome in cohort]))


@pytest.mark.parametrize(
    ("attribute", "limit", "target"),
    [
        ("lab_peak_systolic", 160.0, 33.0),
        ("lab_peak_heart_rate", 100.0, 29.0),
        ("lab_peak_core", 38.0, 19.0),
    ],
)
def test_mdma_incidences_match_vizeli(
    mdma_cohort: list[Outcome], attribute: str, limit: float, target: float
) -> None:
    measured = percent(mdma_cohort, attribute, limit)
    high = percent([o for o in mdma_cohort if o.mg == 125.0], attribute, limit)
    low = percent([o for o in mdma_cohort if o.mg == 75.0], attribute, limit)
    continuous = percent(mdma_cohort, attribute.replace("lab_", "continuous_"), limit)
    report = (
        f"MDMA (n={MDMA_N}, 75:125 mg = 1:3) peak {attribute} > {limit}: measured "
        f"{measured:.1f} % (75 mg {low:.1f} %, 125 mg {high:.1f} %), target {target} % "
        f"+/- {INCIDENCE_TOLERANCE_PP} pp (Vizeli 2017); continuous monitoring: {continuous:.1f} %"
    )
    assert abs(measured - target) <= INCIDENCE_TOLERANCE_PP, report
    assert high > low, report


def test_mdma_peaks_one_to_two_hours_after_the_dose(mdma_cohort: list[Outcome]) -> None:
    systolic = median(mdma_cohort, "systolic_peak_h")
    heart_rate = median(mdma_cohort, "heart_rate_peak_h")
    core = median(mdma_cohort, "core_peak_h")
    report = (
        f"median time to peak after the dose: systolic {systolic:.2f} h, heart rate "
        f"{heart_rate:.2f} h (target 1-2 h, Kolbrich), core temperature {core:.2f} h (later)"
    )
    assert 1.0 <= systolic <= 2.0, report
    assert 1.0 <= heart_rate <= 2.0, report
    assert core > systolic, report


def test_mdma_rise_magnitudes(mdma_cohort: list[Outcome]) -> None:
    """Mas 1999 (+40 mmHg, +30 bpm over placebo, 8 men) sits above what Vizeli's incidences allow.

    The model follows the incidences, so the mean rises at 125 mg land a little below Mas; the
    bands are wide on purpose and the numbers are reported.
    """
    at_125 = [o for o in mdma_cohort if o.mg == 125.0]
    systolic = mean(at_125, "systolic_rise")
    heart_rate = mean(at_125, "heart_rate_rise")
    core = median(mdma_cohort, "core_rise")
    report = (
        f"MDMA 125 mg mean peak rise over placebo: systolic {systolic:.1f} mmHg (Mas: +40), heart "
        f"rate {heart_rate:.1f} bpm (Mas: +30); median core rise {core:.2f} degC (Liechti: 0.2-0.8)"
    )
    assert 28.0 <= systolic <= 45.0, report
    assert 18.0 <= heart_rate <= 35.0, report
    assert 0.2 <= core <= 0.8, report


def test_psilocybin_matches_becker_and_bennett(psilocybin_cohort: list[Outcome]) -> None:
    hot = percent(psilocybin_cohort, "lab_peak_core", 38.0)
    fast = percent(psilocybin_cohort, "lab_peak_heart_rate", 100.0)
    systolic = [o.lab_peak_systolic for o in psilocybin_cohort]
    systolic_mean, systolic_sd = float(np.mean(systolic)), float(np.std(systolic))
    report = (
        f"psilocybin 25 mg (n={PSILOCYBIN_N}): T > 38 degC {hot:.1f} % (target 17 +/- 8), HR > 100 "
        f"{fast:.1f} % (target 7 +/- 5), peak SBP {systolic_mean:.1f} +/- {systolic_sd:.1f} mmHg "
        f"(target 145.9 +/- 19.0, mean within 8: Bennett's n = 14 gives a 95 % CI of about +/- 10)"
    )
    assert abs(hot - 17.0) <= INCIDENCE_TOLERANCE_PP, report
    # At 7 % the binomial SE for n = 300 is 1.5 points; +/- 5 is over 3 SE.
    assert abs(fast - 7.0) <= 5.0, report
    assert abs(systolic_mean - 145.93) <= 8.0, report
    assert 8.0 <= systolic_sd <= 25.0, report

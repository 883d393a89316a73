"""Simulated session physiology: true vital signs of one participant over one drug session.

The model is deliberately phenomenological, so that a clinician can check every number against
``docs/clinical-basis.md`` (``#name`` below is a section of it):

* a **baseline** per participant drawn from the population ranges of #simulator, plus slow
  physiological fluctuation (a sum of seeded sinusoids) and a circadian drift;
* a **drug response** per participant: a time envelope (onset, rise to a single peak, short
  plateau, decline) times a peak magnitude. Blood pressure, heart rate and core temperature have
  their own envelopes and partly independent sensitivities (Hysek, #mdma-temp);
* scenario **courses** (hyperthermia, hypertensive crisis, desaturation, ...) layered on top;
* **artefacts** (motion spikes, failed cuff readings, contact loss, BLE dropouts, disconnects,
  battery drain) as a seeded timeline the simulated wearables apply. Artefacts never change the
  true vital signs.

Everything is a pure function of the seed and the session time in seconds: nothing here reads the
wall clock, sleeps or keeps state between calls, so a wearable at x60 and a scorer evaluating the
whole session at once see the same values. ``tests/test_cohort_calibration.py`` checks the
population against the published incidences.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Final, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.models import DeviceKind, QualityFlag

__all__ = [
    "BASELINE_RANGES",
    "CALIBRATIONS",
    "FEMALE_SENSITIVITY",
    "MAX_MULTIPLIER",
    "MDMA_CALIBRATION",
    "PSILOCYBIN_CALIBRATION",
    "VITAL_UNITS",
    "ArtefactEvent",
    "ArtefactKind",
    "ArtefactSpec",
    "Baseline",
    "BatteryDrain",
    "BleDropout",
    "ContactLoss",
    "Course",
    "CourseShape",
    "CuffFailures",
    "Disconnect",
    "Dose",
    "DrugProtocol",
    "DrugResponse",
    "MotionSpikes",
    "Physiology",
    "ProtocolCalibration",
    "Reactivity",
    "Sex",
    "TimeCourse",
    "Vital",
    "Vitals",
    "VitalsSeries",
    "artefact_timeline",
    "check_dose_schedule",
]

FloatArray = npt.NDArray[np.float64]

HOUR_S: Final = 3600.0
MINUTE_S: Final = 60.0


class Vital(enum.StrEnum):
    """A true physiological quantity; what a wearable would measure if it were perfect.

    Core temperature is what a thermometer reports as body temperature (the clinical thresholds in
    #mdma-defaults are core-equivalent); skin temperature is separate because it can fall while the
    core rises (vasoconstriction, #mdma-temp).
    """

    HEART_RATE = "heart_rate"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    CORE_TEMPERATURE = "core_temperature"
    SKIN_TEMPERATURE = "skin_temperature"
    SPO2 = "spo2"


VITAL_UNITS: Final[Mapping[Vital, str]] = MappingProxyType(
    {
        Vital.HEART_RATE: "bpm",
        Vital.SYSTOLIC_BP: "mmHg",
        Vital.DIASTOLIC_BP: "mmHg",
        Vital.CORE_TEMPERATURE: "degC",
        Vital.SKIN_TEMPERATURE: "degC",
        Vital.SPO2: "%",
    }
)

# Hard physiological bounds: values are clipped here so that a steep course can never produce a
# number no device could report.
_PLAUSIBLE: Final[Mapping[Vital, tuple[float, float]]] = MappingProxyType(
    {
        Vital.HEART_RATE: (30.0, 220.0),
        Vital.SYSTOLIC_BP: (70.0, 260.0),
        Vital.DIASTOLIC_BP: (40.0, 160.0),
        Vital.CORE_TEMPERATURE: (34.0, 42.5),
        Vital.SKIN_TEMPERATURE: (25.0, 40.0),
        Vital.SPO2: (50.0, 100.0),
    }
)
_MIN_PULSE_PRESSURE_MMHG: Final = 15.0


class Sex(enum.StrEnum):
    """Recorded because adverse effects of MDMA are more common in women (Vizeli, #mdma-bp-hr)."""

    FEMALE = "female"
    MALE = "male"


class DrugProtocol(enum.StrEnum):
    """The substance given in the session."""

    MDMA = "mdma"
    PSILOCYBIN = "psilocybin"


@dataclass(frozen=True, slots=True)
class Vitals:
    """True vital signs at one instant, in canonical units."""

    t_s: float
    heart_rate_bpm: float
    systolic_mmhg: float
    diastolic_mmhg: float
    core_temperature_c: float
    skin_temperature_c: float
    spo2_percent: float

    @property
    def mean_arterial_mmhg(self) -> float:
        """The usual one-third pulse-pressure estimate, as cuffs report it."""
        return self.diastolic_mmhg + (self.systolic_mmhg - self.diastolic_mmhg) / 3.0

    def get(self, vital: Vital) -> float:
        """Value of one vital sign."""
        return float(getattr(self, _FIELD[vital]))


@dataclass(frozen=True, slots=True, eq=False)
class VitalsSeries:
    """True vital signs over an array of session times; every array has the shape of ``t_s``."""

    t_s: FloatArray
    heart_rate_bpm: FloatArray
    systolic_mmhg: FloatArray
    diastolic_mmhg: FloatArray
    core_temperature_c: FloatArray
    skin_temperature_c: FloatArray
    spo2_percent: FloatArray

    def __len__(self) -> int:
        return int(self.t_s.shape[0])

    def get(self, vital: Vital) -> FloatArray:
        """The array of one vital sign."""
        values: FloatArray = getattr(self, _FIELD[vital])
        return values

    def at(self, index: int) -> Vitals:
        """One sample as scalars."""
        return Vitals(
            t_s=float(self.t_s[index]),
            **{_FIELD[vital]: float(self.get(vital)[index]) for vital in Vital},
        )

    @classmethod
    def from_mapping(cls, t_s: FloatArray, values: Mapping[Vital, FloatArray]) -> VitalsSeries:
        """Assemble from one array per vital."""
        return cls(t_s=t_s, **{_FIELD[vital]: values[vital] for vital in Vital})


_FIELD: Final[Mapping[Vital, str]] = MappingProxyType(
    {
        Vital.HEART_RATE: "heart_rate_bpm",
        Vital.SYSTOLIC_BP: "systolic_mmhg",
        Vital.DIASTOLIC_BP: "diastolic_mmhg",
        Vital.CORE_TEMPERATURE: "core_temperature_c",
        Vital.SKIN_TEMPERATURE: "skin_temperature_c",
        Vital.SPO2: "spo2_percent",
    }
)


# --------------------------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------------------------

BASELINE_RANGES: Final[Mapping[Vital, tuple[float, float]]] = MappingProxyType(
    {
        Vital.SYSTOLIC_BP: (115.0, 125.0),
        Vital.DIASTOLIC_BP: (70.0, 80.0),
        Vital.HEART_RATE: (60.0, 80.0),
        Vital.CORE_TEMPERATURE: (36.6, 37.0),
        # Wrist skin temperature at room temperature: no published source, an assumption. It sits
        # a few degrees below core and depends on ambient conditions (#clinical-limits).
        Vital.SKIN_TEMPERATURE: (32.5, 34.5),
        Vital.SPO2: (96.0, 99.0),
    }
)
"""Healthy adult, seated or supine, from #simulator (itself an inference there); drawn uniformly.

These are the 24-hour means (mesors); the circadian drift below moves them by a few units over a
session.
"""


@dataclass(frozen=True, slots=True)
class _Fluctuation:
    """Slow physiological variability of one vital: a sum of sinusoids with seeded frequencies.

    A sum of sinusoids, unlike a random walk, can be evaluated at any instant without state, so a
    wearable sampling at 1 Hz and a scorer sampling every minute agree.
    """

    period_range_s: tuple[float, float]
    sd: float
    components: int


# Standard deviations and time scales: assumptions chosen to look like resting bedside traces
# (no published source, #simulator). Heart rate has a fast respiratory-sinus-arrhythmia component.
_FLUCTUATIONS: Final[Mapping[Vital, tuple[_Fluctuation, ...]]] = MappingProxyType(
    {
        Vital.HEART_RATE: (_Fluctuation((60.0, 1200.0), 2.5, 8), _Fluctuation((4.0, 20.0), 1.2, 4)),
        Vital.SYSTOLIC_BP: (_Fluctuation((120.0, 2400.0), 4.0, 8),),
        Vital.DIASTOLIC_BP: (_Fluctuation((120.0, 2400.0), 2.5, 8),),
        Vital.CORE_TEMPERATURE: (_Fluctuation((600.0, 5400.0), 0.04, 6),),
        Vital.SKIN_TEMPERATURE: (_Fluctuation((120.0, 3600.0), 0.3, 6),),
        Vital.SPO2: (_Fluctuation((30.0, 900.0), 0.5, 6),),
    }
)

# Circadian drift: (amplitude, acrophase as local hour). Core temperature peaks in the late
# afternoon and distal skin temperature at night; amplitudes are textbook-sized assumptions.
_CIRCADIAN: Final[Mapping[Vital, tuple[float, float]]] = MappingProxyType(
    {
        Vital.HEART_RATE: (3.0, 15.0),
        Vital.SYSTOLIC_BP: (4.0, 15.0),
        Vital.DIASTOLIC_BP: (3.0, 15.0),
        Vital.CORE_TEMPERATURE: (0.25, 17.0),
        Vital.SKIN_TEMPERATURE: (0.4, 3.0),
        Vital.SPO2: (0.0, 12.0),
    }
)
_VITAL_ORDER: Final = tuple(Vital)  # row order of the internal (vital x time) matrices
_ROW: Final[Mapping[Vital, int]] = MappingProxyType({v: i for i, v in enumerate(_VITAL_ORDER)})


# Correlation of each mechanism with the shared factor (assumption: moderate, per #mdma-temp).
_COMMON_FACTOR_CORRELATION: Final = 0.5


@dataclass(frozen=True, slots=True)
class Reactivity:
    """How strongly this participant reacts, as standard-normal scores per mechanism.

    The scores share a common factor but are not identical: alpha-1 blockade lowers blood pressure
    and temperature yet raises heart rate (Hysek 2013, #mdma-temp), so the pressor, heart-rate and
    thermal responses must not move in fixed ratios. A protocol's calibration turns a score into a
    multiplier (``ProtocolCalibration.multiplier``).
    """

    pressor_z: float
    chronotropic_z: float
    thermogenic_z: float
    vasoconstrictor_z: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Reactivity:
        """Correlated scores: each is ``rho * common + sqrt(1 - rho^2) * own``."""
        rho = _COMMON_FACTOR_CORRELATION
        common = rng.standard_normal()
        own = rng.standard_normal(4)
        pressor, chrono, thermo, vaso = rho * common + math.sqrt(1.0 - rho * rho) * own
        return cls(float(pressor), float(chrono), float(thermo), float(vaso))


@dataclass(frozen=True, slots=True, eq=False)
class Baseline:
    """One participant without drug: resting values, reactivity, variability and circadian drift."""

    sex: Sex
    mesor: Mapping[Vital, float]
    reactivity: Reactivity
    # Concatenated sinusoid components of every vital, evaluated in one numpy call.
    frequency_hz: FloatArray = field(repr=False)
    phase_rad: FloatArray = field(repr=False)
    mixing: FloatArray = field(repr=False)  # (vital, component) -> amplitude, zero elsewhere
    circadian_amplitude: FloatArray = field(repr=False)
    circadian_acrophase_h: FloatArray = field(repr=False)

    @classmethod
    def draw(cls, rng: np.random.Generator, sex: Sex | None = None) -> Baseline:
        """Draw a participant; the same random numbers are consumed whether or not sex is given."""
        female = rng.random() < 0.5
        chosen_sex = sex if sex is not None else (Sex.FEMALE if female else Sex.MALE)
        mesor = {
            vital: float(rng.uniform(low, high)) for vital, (low, high) in BASELINE_RANGES.items()
        }
        reactivity = Reactivity.draw(rng)
        vitals: list[int] = []
        frequencies: list[FloatArray] = []
        phases: list[FloatArray] = []
        amplitudes: list[FloatArray] = []
        for index, vital in enumerate(_VITAL_ORDER):
            for band in _FLUCTUATIONS[vital]:
                low, high = band.period_range_s
                periods = np.exp(rng.uniform(math.log(low), math.log(high), band.components))
                frequencies.append(1.0 / periods)
                phases.append(rng.uniform(0.0, 2.0 * math.pi, band.components))
                amplitudes.append(
                    np.full(band.components, band.sd * math.sqrt(2.0 / band.components))
                )
                vitals.extend([index] * band.components)
        base_amplitude = np.array([_CIRCADIAN[v][0] for v in _VITAL_ORDER])
        base_acrophase = np.array([_CIRCADIAN[v][1] for v in _VITAL_ORDER])
        n_vitals = len(_VITAL_ORDER)
        component_amplitude = np.concatenate(amplitudes)
        mixing = np.zeros((n_vitals, component_amplitude.shape[0]))
        mixing[vitals, np.arange(component_amplitude.shape[0])] = component_amplitude
        return cls(
            sex=chosen_sex,
            mesor=MappingProxyType(mesor),
            reactivity=reactivity,
            frequency_hz=np.concatenate(frequencies),
            phase_rad=np.concatenate(phases),
            mixing=mixing,
            circadian_amplitude=base_amplitude * rng.uniform(0.75, 1.25, n_vitals),
            circadian_acrophase_h=base_acrophase + rng.uniform(-1.5, 1.5, n_vitals),
        )

    def fluctuation(self, t_s: FloatArray) -> FloatArray:
        """Zero-mean variability, shape ``(len(Vital), len(t_s))``."""
        angles = np.multiply.outer(t_s, 2.0 * math.pi * self.frequency_hz) + self.phase_rad
        result: FloatArray = self.mixing @ np.sin(angles).T
        return result

    def circadian(self, t_s: FloatArray, start_hour: float) -> FloatArray:
        """Circadian offset from the mesor, shape ``(len(Vital), len(t_s))``."""
        local_hour = start_hour + t_s / HOUR_S
        phase = 2.0 * math.pi * (local_hour[None, :] - self.circadian_acrophase_h[:, None]) / 24.0
        result: FloatArray = self.circadian_amplitude[:, None] * np.cos(phase)
        return result


# --------------------------------------------------------------------------------------------
# Drug response
# --------------------------------------------------------------------------------------------


class Dose(BaseModel):
    """One administration, at session time ``at_s``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at_s: float = Field(ge=0.0, description="session time of administration, seconds")
    mg: float = Field(gt=0.0, le=300.0, description="dose in milligrams")


# Largest per-participant response multiplier (see ProtocolCalibration.multiplier).
MAX_MULTIPLIER: Final = 2.5


@dataclass(frozen=True, slots=True)
class ProtocolCalibration:
    """The numbers that shape one substance's response; each cites its clinical-basis section.

    Peak magnitudes are the cohort *mean* of each participant's peak rise over their own placebo
    course, at ``reference_mg``. Ranges are drawn uniformly per participant. Times are minutes.

    The magnitudes and spreads were tuned until a simulated cohort reproduced the published
    incidences, measured the way the studies measured them: spot readings on a laboratory schedule
    (``tests/test_cohort_calibration.py``). Continuous monitoring samples far more often and so
    sees more exceedances of the same limits (about half of MDMA participants above 160 mmHg).
    """

    reference_mg: float
    half_effect_mg: float  # Emax dose-response: effect ~ mg / (mg + half_effect_mg)
    systolic_rise_mmhg: float
    heart_rate_rise_bpm: float
    core_rise_c: float
    skin_drop_c: float
    diastolic_ratio: tuple[float, float]  # diastolic rise as a fraction of the systolic rise
    pressor_spread: float  # log-normal sigma of the per-participant multiplier
    chronotropic_spread: float
    thermogenic_spread: float
    vasoconstrictor_spread: float
    onset_min: tuple[float, float]
    rise_min: tuple[float, float]  # onset to peak
    hold_min: tuple[float, float]  # plateau at the peak
    half_decay_min: tuple[float, float]  # end of plateau to half the peak effect
    thermal_lag_min: tuple[float, float]  # core temperature starts this much after the onset
    thermal_rise_min: tuple[float, float]
    thermal_half_decay_min: tuple[float, float]
    supplemental_window_h: tuple[float, float] | None  # allowed booster times after the first dose
    supplemental_extension_min: tuple[float, float]  # plateau lengthening by a half-dose booster

    def dose_factor(self, mg: float) -> float:
        """Effect of ``mg`` relative to the reference dose (Emax model)."""
        if mg <= 0:
            return 0.0
        effect = mg / (mg + self.half_effect_mg)
        reference = self.reference_mg / (self.reference_mg + self.half_effect_mg)
        return effect / reference

    @staticmethod
    def multiplier(z: float, spread: float) -> float:
        """Log-normal multiplier with mean 1, so the peak rises above are cohort means.

        Capped at ``MAX_MULTIPLIER``: the log-normal tail would otherwise produce, once in a
        thousand participants, a rise no controlled study reports (no hyperpyrexia > 40 degC in
        the lab, #mdma-temp; maxima HR 132-148, SBP 171-200, #mdma-bp-hr).
        """
        return min(math.exp(spread * z - spread * spread / 2.0), MAX_MULTIPLIER)


MDMA_CALIBRATION: Final = ProtocolCalibration(
    # 125 mg is the Basel reference dose. Half-effect at 60 mg makes 75 mg give ~82 % of the 125 mg
    # response: Mas 1999 saw a rise of about 40 mmHg at both doses, while Vizeli
    # 2017 found every incidence significantly greater at 125 mg (both #mdma-bp-hr).
    reference_mg=125.0,
    half_effect_mg=60.0,
    # Mas 1999 (8 men): +40 mmHg systolic and +30 bpm over placebo. Reproducing Vizeli's pooled
    # incidences (33 % SBP > 160, 29 % HR > 100; #mdma-bp-hr) from baselines of 115-125 mmHg and
    # 60-80 bpm needs somewhat smaller cohort means; the incidences win because the detection
    # engine is scored on threshold crossings. tests/test_cohort_calibration.py reports both.
    systolic_rise_mmhg=31.0,
    heart_rate_rise_bpm=21.5,
    # Liechti 2014 (#mdma-temp): +0.2 to +0.8 degC typically, yet > 38 degC in 19 % (#mdma-bp-hr):
    # a right-skewed spread (large thermogenic_spread) gives both.
    core_rise_c=0.75,
    # Finger skin fell 5.0 degC in one study (#mdma-temp); a wrist sees less. Assumption: 1.5 degC.
    skin_drop_c=1.5,
    # Kolbrich 2008 maxima 171/102 mmHg (#mdma-bp-hr): diastolic rises about half the systolic rise.
    diastolic_ratio=(0.4, 0.55),
    pressor_spread=0.35,
    chronotropic_spread=0.45,
    thermogenic_spread=0.75,
    vasoconstrictor_spread=0.4,
    # Onset 30-60 min; single peak 1-2 h post dose, no secondary peak (Kolbrich; #mdma-bp-hr).
    onset_min=(30.0, 60.0),
    rise_min=(35.0, 65.0),
    hold_min=(10.0, 30.0),
    # Cardiovascular effects "largely subside within 6 hours" (#mdma-bp-hr); subjective duration
    # 4.2 +/- 1.3 h (#mdma-bp-hr).
    half_decay_min=(70.0, 110.0),
    # Core temperature peaks later than blood pressure (#simulator, inference) and falls slowly.
    thermal_lag_min=(10.0, 30.0),
    thermal_rise_min=(80.0, 130.0),
    thermal_half_decay_min=(100.0, 160.0),
    # Half-dose booster 1.5-2.5 h after the first dose (#mdma-booster): no higher peak, plateau ~1 h
    # longer (4.6 -> 5.6 h duration).
    supplemental_window_h=(1.5, 2.5),
    supplemental_extension_min=(50.0, 70.0),
)
"""MDMA: docs/clinical-basis.md#mdma-bp-hr, #mdma-temp, #mdma-booster and the #simulator table."""

PSILOCYBIN_CALIBRATION: Final = ProtocolCalibration(
    # 25 mg reference (COMP360-type, #psilocybin). The dose-response within 15-30 mg is only roughly
    # modelled: Becker 2024's temperature incidences (7/9/17/32 %) rise more steeply than this.
    reference_mg=25.0,
    half_effect_mg=15.0,
    # Mean peak SBP 145.93 +/- 19.01 mmHg (Bennett 2023), up to about +20 (Bogenschutz), both
    # #psilocybin: a moderate mean with a wide spread.
    systolic_rise_mmhg=20.0,
    # Tachycardia > 100 bpm in 7 % of administrations; "no higher than 100" (#psilocybin).
    heart_rate_rise_bpm=12.0,
    # Temperature > 38 degC in 17 % at 25 mg (#psilocybin): a rise comparable to MDMA's.
    core_rise_c=0.62,
    skin_drop_c=0.5,
    # Mean peaks 146/94 mmHg (Bennett) and +20 / +15 (Bogenschutz; #psilocybin): diastolic rises by
    # well over half the systolic rise, more than with MDMA.
    diastolic_ratio=(0.5, 0.75),
    pressor_spread=0.8,
    chronotropic_spread=0.5,
    thermogenic_spread=0.75,
    vasoconstrictor_spread=0.4,
    # Onset 20-40 min; MAP raised at 60 min (Hasler); psilocin Tmax ~2 h (#psilocybin).
    onset_min=(20.0, 40.0),
    rise_min=(40.0, 70.0),
    hold_min=(10.0, 30.0),
    # Duration 5.5 +/- 1.6 h at 25 mg; psilocin half-life 1.4-1.8 h (#psilocybin).
    half_decay_min=(60.0, 100.0),
    thermal_lag_min=(10.0, 30.0),
    thermal_rise_min=(60.0, 100.0),
    thermal_half_decay_min=(80.0, 120.0),
    supplemental_window_h=None,
    supplemental_extension_min=(0.0, 0.0),
)
"""Psilocybin: docs/clinical-basis.md#psilocybin and the #simulator table."""

CALIBRATIONS: Final[Mapping[DrugProtocol, ProtocolCalibration]] = MappingProxyType(
    {DrugProtocol.MDMA: MDMA_CALIBRATION, DrugProtocol.PSILOCYBIN: PSILOCYBIN_CALIBRATION}
)

# Women are more sensitive: adverse effects significantly more common (Vizeli 2017, #mdma-bp-hr).
# The size is not reported; a modest 10 % is an assumption.
FEMALE_SENSITIVITY: Final = 1.10


def check_dose_schedule(protocol: DrugProtocol, doses: Sequence[Dose]) -> None:
    """Reject dose schedules the calibration does not cover (one dose, or MDMA plus one booster).

    Raises ``ValueError`` with a message fit for a scenario author.
    """
    if len(doses) <= 1:
        return
    calibration = CALIBRATIONS[protocol]
    window = calibration.supplemental_window_h
    if window is None:
        msg = f"{protocol} takes a single dose; no supplemental dose is calibrated"
        raise ValueError(msg)
    if len(doses) > 2:
        msg = "at most one supplemental (booster) dose is calibrated (docs/clinical-basis.md)"
        raise ValueError(msg)
    first, booster = sorted(doses, key=lambda dose: dose.at_s)
    after_h = (booster.at_s - first.at_s) / HOUR_S
    if not window[0] <= after_h <= window[1]:
        msg = (
            f"booster given {after_h:.2f} h after the first dose; the calibrated window is "
            f"{window[0]}-{window[1]} h (docs/clinical-basis.md)"
        )
        raise ValueError(msg)
    if booster.mg > first.mg:
        msg = f"booster ({booster.mg} mg) larger than the first dose ({first.mg} mg)"
        raise ValueError(msg)


# How sharply the decline bends: with 3 the effect is at 50 % one half-decay time after the
# plateau, at 11 % after two and at 4 % after three.
_DECAY_STEEPNESS: Final = 3.0


@dataclass(frozen=True, slots=True)
class TimeCourse:
    """Shape of one response over time since the first dose: 0 before onset, 1 at the peak.

    A smooth rise from ``onset_s`` to ``peak_s``, a plateau for ``hold_s``, then a decline that
    reaches half the peak ``half_decay_s`` after the plateau ends. Monotone on each side, so there
    is exactly one peak (Kolbrich, #mdma-bp-hr).
    """

    onset_s: float
    peak_s: float
    hold_s: float
    half_decay_s: float

    def envelope(self, since_dose_s: FloatArray) -> FloatArray:
        """Fraction of the peak effect at each time since the first dose."""
        x = np.clip((since_dose_s - self.onset_s) / (self.peak_s - self.onset_s), 0.0, 1.0)
        rise = x * x * (3.0 - 2.0 * x)
        after = np.maximum(since_dose_s - self.peak_s - self.hold_s, 0.0)
        decline = 1.0 / (1.0 + (after / self.half_decay_s) ** _DECAY_STEEPNESS)
        result: FloatArray = rise * decline
        return result

    def extended(self, extra_hold_s: float) -> TimeCourse:
        """The same course with a longer plateau (what a booster does, #mdma-booster)."""
        return TimeCourse(self.onset_s, self.peak_s, self.hold_s + extra_hold_s, self.half_decay_s)


@dataclass(frozen=True, slots=True)
class DrugResponse:
    """One participant's response to the session's doses: peak rises and their time courses."""

    dose_at_s: float | None  # None: placebo session
    pressor: TimeCourse
    chronotropic: TimeCourse
    thermogenic: TimeCourse
    systolic_rise_mmhg: float
    diastolic_rise_mmhg: float
    heart_rate_rise_bpm: float
    core_rise_c: float
    skin_drop_c: float

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        protocol: DrugProtocol,
        doses: Sequence[Dose],
        baseline: Baseline,
    ) -> DrugResponse:
        """Draw timings and scale magnitudes; the random numbers used do not depend on the doses.

        That keeps a participant the same person across arms: the same seed with no dose is their
        placebo session.
        """
        check_dose_schedule(protocol, doses)
        cal = CALIBRATIONS[protocol]

        def uniform_min(bounds: tuple[float, float]) -> float:
            return float(rng.uniform(*bounds)) * MINUTE_S

        onset = uniform_min(cal.onset_min)
        pressor = TimeCourse(
            onset,
            onset + uniform_min(cal.rise_min),
            uniform_min(cal.hold_min),
            uniform_min(cal.half_decay_min),
        )
        chronotropic = TimeCourse(
            onset,
            onset + uniform_min(cal.rise_min),
            uniform_min(cal.hold_min),
            uniform_min(cal.half_decay_min),
        )
        thermal_onset = onset + uniform_min(cal.thermal_lag_min)
        thermogenic = TimeCourse(
            thermal_onset,
            thermal_onset + uniform_min(cal.thermal_rise_min),
            uniform_min(cal.hold_min),
            uniform_min(cal.thermal_half_decay_min),
        )
        diastolic_ratio = float(rng.uniform(*cal.diastolic_ratio))
        extension = uniform_min(cal.supplemental_extension_min)

        ordered = sorted(doses, key=lambda dose: dose.at_s)
        if not ordered:
            return cls(None, pressor, chronotropic, thermogenic, 0.0, 0.0, 0.0, 0.0, 0.0)
        first = ordered[0]
        if len(ordered) > 1:
            # A half-dose booster lengthens the plateau by about an hour without raising the peak
            # (#mdma-booster); a smaller booster proportionally less.
            share = min(1.0, ordered[1].mg / (0.5 * first.mg))
            pressor = pressor.extended(share * extension)
            chronotropic = chronotropic.extended(share * extension)
            thermogenic = thermogenic.extended(share * extension)
        scale = cal.dose_factor(first.mg) * (
            FEMALE_SENSITIVITY if baseline.sex is Sex.FEMALE else 1.0
        )
        react = baseline.reactivity

        def peak(mean: float, z: float, spread: float) -> float:
            return mean * scale * cal.multiplier(z, spread)

        systolic = peak(cal.systolic_rise_mmhg, react.pressor_z, cal.pressor_spread)
        return cls(
            dose_at_s=first.at_s,
            pressor=pressor,
            chronotropic=chronotropic,
            thermogenic=thermogenic,
            systolic_rise_mmhg=systolic,
            diastolic_rise_mmhg=systolic * diastolic_ratio,
            heart_rate_rise_bpm=peak(
                cal.heart_rate_rise_bpm, react.chronotropic_z, cal.chronotropic_spread
            ),
            core_rise_c=peak(cal.core_rise_c, react.thermogenic_z, cal.thermogenic_spread),
            skin_drop_c=peak(cal.skin_drop_c, react.vasoconstrictor_z, cal.vasoconstrictor_spread),
        )

    def deltas(self, t_s: FloatArray) -> FloatArray:
        """Change from the participant's placebo course, shape ``(len(Vital), len(t_s))``."""
        out = np.zeros((len(_VITAL_ORDER), t_s.shape[0]))
        if self.dose_at_s is None:
            return out
        since = t_s - self.dose_at_s
        pressor = self.pressor.envelope(since)
        out[_ROW[Vital.SYSTOLIC_BP]] = self.systolic_rise_mmhg * pressor
        out[_ROW[Vital.DIASTOLIC_BP]] = self.diastolic_rise_mmhg * pressor
        out[_ROW[Vital.HEART_RATE]] = self.heart_rate_rise_bpm * self.chronotropic.envelope(since)
        out[_ROW[Vital.CORE_TEMPERATURE]] = self.core_rise_c * self.thermogenic.envelope(since)
        # Peripheral vasoconstriction follows the pressor (alpha-1) response (#mdma-temp).
        out[_ROW[Vital.SKIN_TEMPERATURE]] = -self.skin_drop_c * pressor
        return out


# --------------------------------------------------------------------------------------------
# Courses
# --------------------------------------------------------------------------------------------


class CourseShape(enum.StrEnum):
    """How a course moves from the physiological value to its target."""

    LINEAR = "linear"
    SMOOTH = "smooth"  # smoothstep: gentle start and arrival
    STEP = "step"  # immediate; ramp_s must be 0


class Course(BaseModel):
    """A scenario-driven excursion of one vital: e.g. core temperature climbing to 40 degC.

    From ``onset_s`` the value moves over ``ramp_s`` from its physiological course to ``target``
    (absolute) or by ``delta`` (relative), stays there for ``hold_s`` with its normal variability
    (``None``: to the end of the session), then returns to the physiological course over
    ``recovery_s``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    parameter: Vital
    onset_s: float = Field(ge=0.0)
    ramp_s: float = Field(ge=0.0)
    shape: CourseShape = CourseShape.SMOOTH
    target: float | None = None
    delta: float | None = None
    hold_s: float | None = Field(default=None, ge=0.0)
    recovery_s: float = Field(default=1800.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.target is None) == (self.delta is None):
            msg = "give exactly one of target (absolute) or delta (relative)"
            raise ValueError(msg)
        if self.shape is CourseShape.STEP and self.ramp_s != 0:
            msg = "a step course has ramp_s = 0"
            raise ValueError(msg)
        if self.shape is not CourseShape.STEP and self.ramp_s == 0:
            msg = f"a {self.shape} course needs ramp_s > 0 (or use shape = 'step')"
            raise ValueError(msg)
        if self.target is not None:
            low, high = _PLAUSIBLE[self.parameter]
            if not low <= self.target <= high:
                msg = f"target {self.target} outside the plausible range {low}-{high}"
                raise ValueError(msg)
        return self

    def weight(self, t_s: FloatArray) -> FloatArray:
        """How far the course has taken over: 0 = physiology alone, 1 = at target."""
        if self.shape is CourseShape.STEP:
            rising = (t_s >= self.onset_s).astype(np.float64)
        else:
            rising = self._shaped(np.clip((t_s - self.onset_s) / self.ramp_s, 0.0, 1.0))
        if self.hold_s is None:
            return rising
        recovery_start = self.onset_s + self.ramp_s + self.hold_s
        if self.recovery_s == 0:
            falling = (t_s >= recovery_start).astype(np.float64)
        else:
            falling = self._shaped(np.clip((t_s - recovery_start) / self.recovery_s, 0.0, 1.0))
        result: FloatArray = rising * (1.0 - falling)
        return result

    def _shaped(self, x: FloatArray) -> FloatArray:
        if self.shape is CourseShape.LINEAR:
            return x
        result: FloatArray = x * x * (3.0 - 2.0 * x)
        return result


# --------------------------------------------------------------------------------------------
# The participant
# --------------------------------------------------------------------------------------------

# Independent random streams per participant seed, so adding a course or an artefact never
# changes the baseline, and a placebo session is the same person.
_BASELINE_STREAM: Final = 1
_RESPONSE_STREAM: Final = 2
_ARTEFACT_STREAM: Final = 3


class Physiology:
    """The true vital signs of one participant over one session.

    ``seed`` fixes the person (baseline, reactivity, variability, timings); ``doses`` and
    ``courses`` fix what happens to them. ``start_hour`` (local clock hour at session time 0)
    places the session on the circadian cycle; it comes from the scenario, never from the wall
    clock.
    """

    def __init__(
        self,
        *,
        seed: int,
        protocol: DrugProtocol,
        doses: Sequence[Dose] = (),
        sex: Sex | None = None,
        start_hour: float = 9.0,
        courses: Sequence[Course] = (),
    ) -> None:
        self.seed = seed
        self.protocol = protocol
        self.doses = tuple(sorted(doses, key=lambda dose: dose.at_s))
        self.start_hour = start_hour
        self.courses = tuple(sorted(courses, key=lambda course: course.onset_s))
        self.baseline = Baseline.draw(np.random.default_rng([seed, _BASELINE_STREAM]), sex)
        self.response = DrugResponse.draw(
            np.random.default_rng([seed, _RESPONSE_STREAM]), protocol, self.doses, self.baseline
        )
        self._mesor = np.array([self.baseline.mesor[v] for v in _VITAL_ORDER])
        self._low = np.array([_PLAUSIBLE[v][0] for v in _VITAL_ORDER])
        self._high = np.array([_PLAUSIBLE[v][1] for v in _VITAL_ORDER])

    @property
    def sex(self) -> Sex:
        """The participant's sex (drawn from the seed unless the scenario gives it)."""
        return self.baseline.sex

    def true_vitals(self, t_s: float) -> Vitals:
        """Vital signs at one session time."""
        column = self._matrix(np.array([float(t_s)]))[:, 0]
        return Vitals(
            t_s=float(t_s), **{_FIELD[vital]: float(column[_ROW[vital]]) for vital in Vital}
        )

    def true_vitals_array(self, t_s: npt.ArrayLike) -> VitalsSeries:
        """Vital signs over an array of session times (vectorised; any order, any spacing)."""
        times = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        matrix = self._matrix(times)
        return VitalsSeries.from_mapping(times, {vital: matrix[_ROW[vital]] for vital in Vital})

    def _matrix(self, t_s: FloatArray) -> FloatArray:
        """All vitals, shape ``(len(Vital), len(t_s))``: baseline + drift + noise + drug + courses.

        A course with a ``target`` replaces the physiological value but keeps its variability, so
        a held plateau still looks like a live signal; one with a ``delta`` adds to it.
        """
        variability = self.baseline.fluctuation(t_s)
        physiological = (
            self._mesor[:, None]
            + self.baseline.circadian(t_s, self.start_hour)
            + variability
            + self.response.deltas(t_s)
        )
        for course in self.courses:
            row = _ROW[course.parameter]
            weight = course.weight(t_s)
            current = physiological[row]
            if course.target is not None:
                goal = course.target + variability[row]
            else:
                assert course.delta is not None
                goal = current + course.delta
            physiological[row] = current + weight * (goal - current)
        values: FloatArray = np.clip(physiological, self._low[:, None], self._high[:, None])
        systolic, diastolic = _ROW[Vital.SYSTOLIC_BP], _ROW[Vital.DIASTOLIC_BP]
        values[diastolic] = np.minimum(
            values[diastolic], values[systolic] - _MIN_PULSE_PRESSURE_MMHG
        )
        return values


# --------------------------------------------------------------------------------------------
# Artefacts
# --------------------------------------------------------------------------------------------


class ArtefactKind(enum.StrEnum):
    """What goes wrong with a measurement or a link; none of it changes the true vitals."""

    MOTION_SPIKE = "motion_spike"  # one sample jumps (e.g. +40 bpm), then back to normal
    CUFF_FAILURE = "cuff_failure"  # one cuff measurement fails: flagged, value unusable
    CONTACT_LOSS = "contact_loss"  # sensor off the skin for an interval; link stays up
    BLE_DROPOUT = "ble_dropout"  # notifications lost for an interval; link stays up
    DISCONNECT = "disconnect"  # link dropped; the device is unreachable for the interval
    BATTERY_LEVEL = "battery_level"  # battery level drops to ``magnitude`` percent


@dataclass(frozen=True, slots=True)
class ArtefactEvent:
    """One entry of a device's artefact timeline, applied by the simulated wearable.

    Conventions the wearables implement:

    * ``motion_spike``: add ``magnitude`` (bpm) to the first sample taken at or after ``t_s``.
    * ``cuff_failure``: ``t_s`` is the start of a scheduled cuff measurement (measurement *k*
      starts at *k* x the cuff interval); it reports the ``flags`` and no usable value.
    * ``contact_loss``, ``ble_dropout``, ``disconnect``: active on ``[t_s, t_s + duration_s)``.
    * ``battery_level``: from ``t_s`` on, the battery reads ``magnitude`` percent.
    """

    t_s: float
    device: DeviceKind
    kind: ArtefactKind
    duration_s: float = 0.0
    magnitude: float | None = None
    flags: frozenset[QualityFlag] = frozenset()

    @property
    def end_s(self) -> float:
        """End of the interval (equal to ``t_s`` for instantaneous events)."""
        return self.t_s + self.duration_s

    def active_at(self, t_s: float) -> bool:
        """Whether an interval artefact covers ``t_s``."""
        return self.t_s <= t_s < self.end_s


class _ArtefactBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Occurrences(_ArtefactBase):
    """Explicit times (``at_s``) and/or random ones (``rate_per_hour``, within ``between_s``)."""

    at_s: tuple[float, ...] = ()
    rate_per_hour: float = Field(default=0.0, ge=0.0, le=3600.0)
    between_s: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _check_occurrences(self) -> Self:
        if not self.at_s and self.rate_per_hour == 0:
            msg = "give explicit times at_s or a rate_per_hour > 0"
            raise ValueError(msg)
        if any(t < 0 for t in self.at_s):
            msg = "at_s times must be >= 0"
            raise ValueError(msg)
        if self.between_s is not None and not 0 <= self.between_s[0] < self.between_s[1]:
            msg = "between_s must be [start, end] with 0 <= start < end"
            raise ValueError(msg)
        return self

    def times(self, rng: np.random.Generator, duration_s: float) -> list[float]:
        """Explicit times plus a seeded Poisson process inside the window."""
        start, end = self.between_s if self.between_s is not None else (0.0, duration_s)
        end = min(end, duration_s)
        times = [t for t in self.at_s if t < duration_s]
        if self.rate_per_hour > 0 and end > start:
            count = int(rng.poisson(self.rate_per_hour * (end - start) / HOUR_S))
            times.extend(float(t) for t in rng.uniform(start, end, count))
        return sorted(times)


class MotionSpikes(_Occurrences):
    """Single-sample heart-rate jumps from movement (#simulator; must not raise alarms)."""

    kind: Literal["motion_spike"] = "motion_spike"
    device: Literal[DeviceKind.HEART_RATE, DeviceKind.PULSE_OXIMETER] = DeviceKind.HEART_RATE
    magnitude_bpm: float = Field(default=40.0, ge=-100.0, le=150.0)
    jitter_bpm: float = Field(default=8.0, ge=0.0)
    body_movement_probability: float = Field(default=0.3, ge=0.0, le=1.0)


class CuffFailures(_ArtefactBase):
    """Failed cuff measurements: the participant moved or the cuff sits too loose."""

    kind: Literal["cuff_failure"] = "cuff_failure"
    probability: float = Field(default=0.0, ge=0.0, le=1.0, description="per measurement")
    at_s: tuple[float, ...] = ()  # these measurement times fail for sure (snapped to the schedule)
    causes: tuple[Literal["body_movement", "cuff_too_loose"], ...] = (
        "body_movement",
        "cuff_too_loose",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.probability == 0 and not self.at_s:
            msg = "give a probability > 0 or explicit at_s measurement times"
            raise ValueError(msg)
        if not self.causes:
            msg = "causes must name at least one cause"
            raise ValueError(msg)
        return self


class ContactLoss(_Occurrences):
    """The sensor loses skin contact for ``duration_s``; the link stays up."""

    kind: Literal["contact_loss"] = "contact_loss"
    device: DeviceKind
    duration_s: float = Field(gt=0.0)


class BleDropout(_Occurrences):
    """Notifications are lost for ``duration_s`` while the link stays up (interference, range)."""

    kind: Literal["ble_dropout"] = "ble_dropout"
    device: DeviceKind
    duration_s: float = Field(gt=0.0)


class Disconnect(_Occurrences):
    """The link drops and the device is unreachable for ``duration_s``, then advertises again."""

    kind: Literal["disconnect"] = "disconnect"
    device: DeviceKind
    duration_s: float = Field(gt=0.0)


class BatteryDrain(_ArtefactBase):
    """The battery empties steadily; one ``battery_level`` event per whole percent lost."""

    kind: Literal["battery_drain"] = "battery_drain"
    device: DeviceKind
    start_percent: float = Field(default=100.0, gt=0.0, le=100.0)
    percent_per_hour: float = Field(default=2.0, gt=0.0, le=100.0)


ArtefactSpec = Annotated[
    MotionSpikes | CuffFailures | ContactLoss | BleDropout | Disconnect | BatteryDrain,
    Field(discriminator="kind"),
]
"""One artefact source in a scenario, chosen by its ``kind``."""

_CAUSE_FLAGS: Final[Mapping[str, QualityFlag]] = MappingProxyType(
    {"body_movement": QualityFlag.BODY_MOVEMENT, "cuff_too_loose": QualityFlag.IMPROPER_CUFF_FIT}
)
_INTERVAL_FLAGS: Final[Mapping[ArtefactKind, frozenset[QualityFlag]]] = MappingProxyType(
    {
        ArtefactKind.CONTACT_LOSS: frozenset({QualityFlag.SENSOR_CONTACT_LOST}),
        ArtefactKind.BLE_DROPOUT: frozenset(),
        ArtefactKind.DISCONNECT: frozenset(),
    }
)


def artefact_timeline(
    specs: Iterable[
        MotionSpikes | CuffFailures | ContactLoss | BleDropout | Disconnect | BatteryDrain
    ],
    *,
    seed: int,
    duration_s: float,
    cuff_interval_s: float,
) -> tuple[ArtefactEvent, ...]:
    """Turn a participant's artefact specs into one time-ordered timeline; deterministic per seed.

    Each spec draws from its own random stream (by position), so editing one spec leaves the
    others' events unchanged. Random intervals of one kind on one device never overlap.
    """
    events: list[ArtefactEvent] = []
    for position, spec in enumerate(specs):
        rng = np.random.default_rng([seed, _ARTEFACT_STREAM, position])
        if isinstance(spec, MotionSpikes):
            for t in spec.times(rng, duration_s):
                jump = spec.magnitude_bpm + float(rng.uniform(-spec.jitter_bpm, spec.jitter_bpm))
                moved = rng.random() < spec.body_movement_probability
                flags = frozenset({QualityFlag.BODY_MOVEMENT}) if moved else frozenset()
                events.append(
                    ArtefactEvent(t, spec.device, ArtefactKind.MOTION_SPIKE, 0.0, jump, flags)
                )
        elif isinstance(spec, CuffFailures):
            events.extend(_cuff_failures(spec, rng, duration_s, cuff_interval_s))
        elif isinstance(spec, BatteryDrain):
            events.extend(_battery_levels(spec, duration_s))
        else:
            kind = ArtefactKind(spec.kind)
            busy_until = -math.inf
            for t in spec.times(rng, duration_s):
                if t < busy_until:
                    continue
                duration = min(spec.duration_s, duration_s - t)
                events.append(
                    ArtefactEvent(t, spec.device, kind, duration, None, _INTERVAL_FLAGS[kind])
                )
                busy_until = t + duration
    events.sort(key=lambda event: (event.t_s, event.device, event.kind))
    return tuple(events)


def _cuff_failures(
    spec: CuffFailures, rng: np.random.Generator, duration_s: float, cuff_interval_s: float
) -> list[ArtefactEvent]:
    measurement_times = np.arange(0.0, duration_s, cuff_interval_s)
    fails = rng.random(measurement_times.shape[0]) < spec.probability
    causes = rng.integers(0, len(spec.causes), measurement_times.shape[0])
    forced = {float(np.ceil(t / cuff_interval_s) * cuff_interval_s) for t in spec.at_s}
    events = []
    for index, t in enumerate(measurement_times):
        if fails[index] or float(t) in forced:
            cause = _CAUSE_FLAGS[spec.causes[int(causes[index])]]
            flags = frozenset({cause, QualityFlag.VALUE_UNUSABLE})
            events.append(
                ArtefactEvent(
                    float(t), DeviceKind.BLOOD_PRESSURE, ArtefactKind.CUFF_FAILURE, 0.0, None, flags
                )
            )
    return events


def _battery_levels(spec: BatteryDrain, duration_s: float) -> list[ArtefactEvent]:
    events = [ArtefactEvent(0.0, spec.device, ArtefactKind.BATTERY_LEVEL, 0.0, spec.start_percent)]
    level = math.floor(spec.start_percent)
    if level == spec.start_percent:
        level -= 1
    seconds_per_percent = HOUR_S / spec.percent_per_hour
    while level >= 0:
        t = (spec.start_percent - level) * seconds_per_percent
        if t >= duration_s:
            break
        events.append(ArtefactEvent(t, spec.device, ArtefactKind.BATTERY_LEVEL, 0.0, float(level)))
        level -= 1
    return events

"""Session scenarios: who is in which room, what they took, what goes wrong, and the ground truth.

A scenario is a TOML file in ``simulators/scenarios/``. It drives the simulated wearables (through
:class:`SessionModel`) and is the answer key the detection engine is scored against
(``ground_truth``), so both always see the same session.

Time everywhere is *session seconds*: 0 is the start of the session on the injectable clock
(:class:`SessionTime`), whether that clock runs in real time or accelerated x60 and more. Dosing is
at 30 min or later so that every session has a pre-dose baseline.

Ground-truth severities follow the tiers of docs/clinical-basis.md#mdma-defaults: ``critical`` is a
condition the medical monitor must hear about, ``warning`` a staff alert. ``critical`` events are
complete: every time a participant's vitals cross a limit in :data:`CRITICAL_LIMITS` there is a
critical event (``verify_ground_truth`` checks it). ``warning`` events are listed where a scenario
is built around them; natural warning-level excursions (MDMA pushes systolic pressure above
160 mmHg in a third of participants, docs/clinical-basis.md#mdma-bp-hr) are not enumerated.
"""

from __future__ import annotations

import bisect
import enum
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Final, Self

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from monitor.clock import Clock
from monitor.models import DeviceKind, Identifier, Parameter, ParticipantCode
from simulators.physiology import (
    ArtefactEvent,
    ArtefactKind,
    ArtefactSpec,
    Course,
    CuffFailures,
    Dose,
    DrugProtocol,
    Physiology,
    Sex,
    Vital,
    Vitals,
    VitalsSeries,
    artefact_timeline,
    check_dose_schedule,
)

__all__ = [
    "CRITICAL_LIMITS",
    "MIN_DURATION_S",
    "PARAMETER_VITAL",
    "PRE_DOSE_BASELINE_S",
    "SCENARIO_DIR",
    "DeviceSettings",
    "DeviceState",
    "Direction",
    "EventKind",
    "GroundTruthEvent",
    "ParticipantSpec",
    "Room",
    "Scenario",
    "ScenarioError",
    "SessionModel",
    "SessionTime",
    "Severity",
    "device_name",
    "list_scenarios",
    "load_scenario",
    "parse_device_name",
    "session_models",
    "threshold_onsets",
    "verify_ground_truth",
]

SCENARIO_DIR: Final = Path(__file__).with_name("scenarios")
MIN_DURATION_S: Final = 4 * 3600.0
PRE_DOSE_BASELINE_S: Final = 30 * 60.0
MAX_DURATION_S: Final = 24 * 3600.0

# --------------------------------------------------------------------------------------------
# Device naming: shared by the simulated wearables and the configurations that pair with them
# --------------------------------------------------------------------------------------------

_NAME_PREFIX: Final[Mapping[DeviceKind, str]] = MappingProxyType(
    {
        DeviceKind.HEART_RATE: "SIM-HR-",
        DeviceKind.BLOOD_PRESSURE: "SIM-BP-",
        DeviceKind.THERMOMETER: "SIM-TEMP-",
        DeviceKind.PULSE_OXIMETER: "SIM-SPO2-",
    }
)


def device_name(kind: DeviceKind | str, code: str) -> str:
    """Advertised name of a participant's simulated wearable, e.g. ``SIM-HR-P-001``."""
    return _NAME_PREFIX[DeviceKind(kind)] + code


def parse_device_name(name: str) -> tuple[DeviceKind, str] | None:
    """The inverse of :func:`device_name`; ``None`` for a name that is not a simulated wearable."""
    for kind, prefix in _NAME_PREFIX.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return kind, name[len(prefix) :]
    return None


# --------------------------------------------------------------------------------------------
# Ground truth vocabulary
# --------------------------------------------------------------------------------------------


class Severity(enum.StrEnum):
    """``critical``: escalate to the medical monitor (high tier); ``warning``: staff alert."""

    CRITICAL = "critical"
    WARNING = "warning"


class EventKind(enum.StrEnum):
    """The clinical (or technical) event a ground-truth entry describes."""

    HYPERTHERMIA = "hyperthermia"
    HYPERTENSIVE_CRISIS = "hypertensive_crisis"
    HYPERTENSION = "hypertension"
    TACHYCARDIA = "tachycardia"
    DESATURATION = "desaturation"
    SIGNAL_LOSS = "signal_loss"


class Direction(enum.StrEnum):
    """``above``: value >= threshold; ``below``: value <= threshold."""

    ABOVE = "above"
    BELOW = "below"


PARAMETER_VITAL: Final[Mapping[Parameter, Vital]] = MappingProxyType(
    {
        Parameter.HEART_RATE: Vital.HEART_RATE,
        Parameter.PULSE_RATE: Vital.HEART_RATE,
        Parameter.SYSTOLIC_BP: Vital.SYSTOLIC_BP,
        Parameter.DIASTOLIC_BP: Vital.DIASTOLIC_BP,
        Parameter.TEMPERATURE: Vital.CORE_TEMPERATURE,
        Parameter.SPO2: Vital.SPO2,
    }
)
"""Which true vital a ground-truth parameter refers to; temperature means core temperature."""

CRITICAL_LIMITS: Final[Mapping[Parameter, tuple[float, Direction]]] = MappingProxyType(
    {
        # Severe hypertension / hypertensive urgency, SBP >= 180 mmHg. docs/clinical-basis.md
        # (#clinical-limits, #mdma-defaults) puts "SBP >= 180 confirmed" in the medium tier and adds
        # persistence for high; the answer key counts the crossing itself, so that the engine is
        # scored on noticing it at all.
        Parameter.SYSTOLIC_BP: (180.0, Direction.ABOVE),
        Parameter.DIASTOLIC_BP: (120.0, Direction.ABOVE),  # ACC/AHA > 120 (#clinical-limits), high
        Parameter.HEART_RATE: (131.0, Direction.ABOVE),  # NEWS2 pulse score 3 (#news2), high
        Parameter.TEMPERATURE: (39.0, Direction.ABOVE),  # high tier; NEWS2 >= 39.1 scores 2
        Parameter.SPO2: (88.0, Direction.BELOW),  # "<=88 immediately"; Masimo default (#delays)
    }
)
"""Single-reading limits whose every crossing must appear as a critical ground-truth event."""

# Which worn device can observe a vital (a course on a vital nobody measures is a scenario bug).
_OBSERVED_BY: Final[Mapping[Vital, frozenset[DeviceKind]]] = MappingProxyType(
    {
        Vital.HEART_RATE: frozenset(
            {DeviceKind.HEART_RATE, DeviceKind.PULSE_OXIMETER, DeviceKind.BLOOD_PRESSURE}
        ),
        Vital.SYSTOLIC_BP: frozenset({DeviceKind.BLOOD_PRESSURE}),
        Vital.DIASTOLIC_BP: frozenset({DeviceKind.BLOOD_PRESSURE}),
        Vital.CORE_TEMPERATURE: frozenset({DeviceKind.THERMOMETER}),
        Vital.SKIN_TEMPERATURE: frozenset({DeviceKind.THERMOMETER}),
        Vital.SPO2: frozenset({DeviceKind.PULSE_OXIMETER}),
    }
)

# --------------------------------------------------------------------------------------------
# The scenario file
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Room(_Strict):
    """A treatment room; its participants' alarms go to its staff."""

    id: Identifier
    label: str = ""


class DeviceSettings(_Strict):
    """How often each simulated wearable measures.

    Cuff measurement *k* starts at session time *k* x ``bp_interval_min`` minutes (k = 0, 1, ...):
    cuff-failure artefacts are placed on that schedule.
    """

    bp_interval_min: float = Field(default=10.0, ge=1.0, le=120.0)
    heart_rate_period_s: float = Field(default=1.0, gt=0.0, le=60.0)
    spo2_period_s: float = Field(default=1.0, gt=0.0, le=60.0)
    temperature_period_s: float = Field(default=30.0, gt=0.0, le=3600.0)

    @property
    def bp_interval_s(self) -> float:
        """The cuff interval in seconds."""
        return self.bp_interval_min * 60.0


class ParticipantSpec(_Strict):
    """One participant: pseudonymous code only, never a name."""

    code: ParticipantCode
    room: Identifier
    protocol: DrugProtocol
    seed: int = Field(ge=0, description="fixes the simulated person: baseline, reactivity, noise")
    sex: Sex | None = None  # drawn from the seed when omitted
    doses: tuple[Dose, ...] = ()  # empty: placebo session
    devices: tuple[DeviceKind, ...] = Field(min_length=1)
    settings: DeviceSettings = DeviceSettings()
    courses: tuple[Course, ...] = ()
    artefacts: tuple[ArtefactSpec, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.devices)) != len(self.devices):
            msg = "devices lists a device kind twice"
            raise ValueError(msg)
        check_dose_schedule(self.protocol, self.doses)
        worn = set(self.devices)
        for course in self.courses:
            if not _OBSERVED_BY[course.parameter] & worn:
                msg = f"a course on {course.parameter} needs a device that measures it"
                raise ValueError(msg)
        for artefact in self.artefacts:
            device = (
                DeviceKind.BLOOD_PRESSURE if isinstance(artefact, CuffFailures) else artefact.device
            )
            if device not in worn:
                msg = f"{artefact.kind} artefact on {device}, which {self.code} does not wear"
                raise ValueError(msg)
        return self


class GroundTruthEvent(_Strict):
    """A clinical or technical event the detection engine should report.

    For a threshold event, ``onset_s`` is when the participant's true value first reaches
    ``threshold`` in ``direction``; for ``signal_loss`` it is when the device's data stops
    (contact lost, link dropped).
    """

    id: Identifier
    participant: ParticipantCode
    kind: EventKind
    severity: Severity
    onset_s: float = Field(ge=0.0)
    parameter: Parameter | None = None
    threshold: float | None = None
    direction: Direction | None = None
    device: DeviceKind | None = None
    note: str = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kind is EventKind.SIGNAL_LOSS:
            if self.device is None:
                msg = "a signal_loss event names the device that lost its signal"
                raise ValueError(msg)
            if self.threshold is not None or self.direction is not None:
                msg = "a signal_loss event has no threshold or direction"
                raise ValueError(msg)
            return self
        if self.parameter is None or self.threshold is None or self.direction is None:
            msg = f"a {self.kind} event needs parameter, threshold and direction"
            raise ValueError(msg)
        if self.parameter not in PARAMETER_VITAL:
            msg = f"parameter {self.parameter} is not a vital sign the simulator models"
            raise ValueError(msg)
        return self


_ScenarioName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


class Scenario(_Strict):
    """A whole simulated session at one site."""

    name: _ScenarioName
    description: str = Field(min_length=1)
    duration_s: float = Field(ge=MIN_DURATION_S, le=MAX_DURATION_S)
    site: Identifier
    start_hour: float = Field(default=9.0, ge=0.0, lt=24.0, description="local hour at t = 0")
    rooms: tuple[Room, ...] = Field(min_length=1)
    participants: tuple[ParticipantSpec, ...] = Field(min_length=1)
    ground_truth: tuple[GroundTruthEvent, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        room_ids = [room.id for room in self.rooms]
        _require_unique("room id", room_ids)
        _require_unique("participant code", [p.code for p in self.participants])
        _require_unique("ground-truth id", [event.id for event in self.ground_truth])
        for participant in self.participants:
            if participant.room not in room_ids:
                msg = f"{participant.code} is in room {participant.room!r}, which is not in rooms"
                raise ValueError(msg)
            if any(dose.at_s < PRE_DOSE_BASELINE_S for dose in participant.doses):
                msg = f"{participant.code}: dose before 30 min leaves no pre-dose baseline"
                raise ValueError(msg)
            late = [d.at_s for d in participant.doses if d.at_s >= self.duration_s] + [
                c.onset_s for c in participant.courses if c.onset_s >= self.duration_s
            ]
            if late:
                msg = f"{participant.code}: a dose or course starts after the session ends"
                raise ValueError(msg)
        by_code = {p.code: p for p in self.participants}
        for event in self.ground_truth:
            who = by_code.get(event.participant)
            if who is None:
                msg = f"ground truth {event.id} names unknown participant {event.participant}"
                raise ValueError(msg)
            if event.onset_s >= self.duration_s:
                msg = f"ground truth {event.id} starts after the session ends"
                raise ValueError(msg)
            if event.device is not None and event.device not in who.devices:
                msg = f"ground truth {event.id}: {event.participant} wears no {event.device}"
                raise ValueError(msg)
        return self

    def participant(self, code: str) -> ParticipantSpec:
        """The participant with this code."""
        for participant in self.participants:
            if participant.code == code:
                return participant
        msg = f"scenario {self.name} has no participant {code}"
        raise KeyError(msg)


def _require_unique(what: str, values: Sequence[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            msg = f"duplicate {what} {value!r}"
            raise ValueError(msg)
        seen.add(value)


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message names the file and the offending field."""


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``simulators/scenarios/``."""
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a shipped scenario by name (``mdma-typical``) or any scenario file by path."""
    path = _resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        msg = f"{path}: cannot read: {error.strerror or error}"
        raise ScenarioError(msg) from error
    except tomllib.TOMLDecodeError as error:
        msg = f"{path}: not valid TOML: {error}"
        raise ScenarioError(msg) from error
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        problems = "\n".join(f"  {_location(e['loc'])}: {e['msg']}" for e in error.errors())
        msg = f"{path}: invalid scenario:\n{problems}"
        raise ScenarioError(msg) from error
    if scenario.name != path.stem:
        msg = f"{path}: name: {scenario.name!r} does not match the file name {path.name!r}"
        raise ScenarioError(msg)
    return scenario


def _resolve(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, Path) or name_or_path.endswith(".toml") or "/" in name_or_path:
        return Path(name_or_path)
    path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(list_scenarios())
        msg = f"unknown scenario {name_or_path!r}; shipped scenarios: {known}"
        raise ScenarioError(msg)
    return path


def _location(loc: tuple[int | str, ...]) -> str:
    """``('participants', 0, 'doses', 1, 'mg')`` -> ``participants[0].doses[1].mg``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


# --------------------------------------------------------------------------------------------
# Session time on the injectable clock
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionTime:
    """Session seconds on an injectable clock: the one time base of wearables and scorer."""

    clock: Clock
    started_at: float  # clock.monotonic() at session time 0

    @classmethod
    def start(cls, clock: Clock) -> SessionTime:
        """A session starting now on ``clock``."""
        return cls(clock, clock.monotonic())

    def elapsed_s(self) -> float:
        """Seconds since the session started, in the clock's (possibly accelerated) time."""
        return self.clock.monotonic() - self.started_at


# --------------------------------------------------------------------------------------------
# The per-participant model the wearables and the scorer share
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What a wearable's artefacts say about it at one instant."""

    connected: bool  # link up and the device reachable (False during a disconnect)
    notifying: bool  # data reaches the receiver (False during a disconnect or a BLE dropout)
    in_contact: bool  # sensor on the skin (False during contact loss: values unusable)
    battery_percent: float


_INTERVAL_KINDS: Final = frozenset(
    {ArtefactKind.CONTACT_LOSS, ArtefactKind.BLE_DROPOUT, ArtefactKind.DISCONNECT}
)


class SessionModel:
    """One scenario participant: true vitals (physiology plus courses) and artefact timeline.

    A simulated wearable at session time ``t`` takes its values from ``vitals(t)``, applies the
    artefacts that started since its previous sample (``artefacts_between(previous, t, kind)``:
    motion spikes, cuff failures) and asks ``device_state(kind, t)`` whether it is in contact,
    linked and notifying, and how full its battery is. The scorer reads ``ground_truth``.
    """

    def __init__(self, scenario: Scenario, code: str) -> None:
        self.scenario = scenario
        self.spec = scenario.participant(code)
        self.physiology = Physiology(
            seed=self.spec.seed,
            protocol=self.spec.protocol,
            doses=self.spec.doses,
            sex=self.spec.sex,
            start_hour=scenario.start_hour,
            courses=self.spec.courses,
        )
        self.artefacts: tuple[ArtefactEvent, ...] = artefact_timeline(
            self.spec.artefacts,
            seed=self.spec.seed,
            duration_s=scenario.duration_s,
            cuff_interval_s=self.spec.settings.bp_interval_s,
        )
        self._starts = [event.t_s for event in self.artefacts]
        self.ground_truth: tuple[GroundTruthEvent, ...] = tuple(
            event for event in scenario.ground_truth if event.participant == code
        )

    @property
    def code(self) -> str:
        """The participant's pseudonymous code."""
        return self.spec.code

    @property
    def room(self) -> str:
        """The room the participant is in."""
        return self.spec.room

    @property
    def devices(self) -> tuple[DeviceKind, ...]:
        """The wearables the participant has on."""
        return self.spec.devices

    def device_name(self, kind: DeviceKind) -> str:
        """Advertised name of this participant's wearable of ``kind``."""
        return device_name(kind, self.code)

    def vitals(self, t_s: float) -> Vitals:
        """True vitals at session time ``t_s``."""
        return self.physiology.true_vitals(t_s)

    def vitals_array(self, t_s: npt.ArrayLike) -> VitalsSeries:
        """True vitals over an array of session times."""
        return self.physiology.true_vitals_array(t_s)

    def cuff_schedule_s(self) -> npt.NDArray[np.float64]:
        """Start times of the scheduled cuff measurements."""
        return np.arange(0.0, self.scenario.duration_s, self.spec.settings.bp_interval_s)

    def artefacts_between(
        self, start_s: float, end_s: float, device: DeviceKind | None = None
    ) -> tuple[ArtefactEvent, ...]:
        """Artefacts that *start* in ``[start_s, end_s)``, optionally for one device."""
        first = bisect.bisect_left(self._starts, start_s)
        last = bisect.bisect_left(self._starts, end_s)
        return tuple(
            event
            for event in self.artefacts[first:last]
            if device is None or event.device is device
        )

    def device_state(self, device: DeviceKind, t_s: float) -> DeviceState:
        """Link, contact and battery state of one wearable at ``t_s``."""
        connected = notifying = in_contact = True
        battery = 100.0
        for event in self.artefacts[: bisect.bisect_right(self._starts, t_s)]:
            if event.device is not device:
                continue
            if event.kind is ArtefactKind.BATTERY_LEVEL and event.magnitude is not None:
                battery = event.magnitude
            elif event.kind in _INTERVAL_KINDS and event.active_at(t_s):
                if event.kind is ArtefactKind.DISCONNECT:
                    connected = notifying = False
                elif event.kind is ArtefactKind.BLE_DROPOUT:
                    notifying = False
                else:
                    in_contact = False
        return DeviceState(connected, notifying, in_contact, battery)


def session_models(scenario: Scenario) -> dict[str, SessionModel]:
    """A :class:`SessionModel` per participant, keyed by code."""
    return {p.code: SessionModel(scenario, p.code) for p in scenario.participants}


# --------------------------------------------------------------------------------------------
# Checking the answer key against the model
# --------------------------------------------------------------------------------------------

# Re-crossings closer than this belong to one episode (an alarm would still be active).
_EPISODE_MERGE_S: Final = 600.0


def threshold_onsets(
    t_s: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    threshold: float,
    direction: Direction,
) -> list[float]:
    """Times at which ``values`` start to meet the threshold, interpolated between samples.

    A return across the threshold within 10 minutes of leaving it continues the same episode.
    """
    signed = values - threshold if direction is Direction.ABOVE else threshold - values
    meets = signed >= 0
    onsets: list[float] = []
    last_end = -np.inf
    for index in np.flatnonzero(meets != np.concatenate(([False], meets[:-1]))):
        if meets[index]:
            if index == 0:
                onset = float(t_s[0])
            else:
                before, after = signed[index - 1], signed[index]
                fraction = float(-before / (after - before))
                onset = float(t_s[index - 1] + fraction * (t_s[index] - t_s[index - 1]))
            if onset - last_end >= _EPISODE_MERGE_S:
                onsets.append(onset)
        else:
            last_end = float(t_s[index])
    return onsets


def verify_ground_truth(
    scenario: Scenario, *, step_s: float = 5.0, tolerance_s: float = 60.0
) -> list[str]:
    """Problems with a scenario's answer key; an empty list means it matches the model.

    Checks that every threshold event's onset is a real crossing (within ``tolerance_s``), that
    every signal-loss event starts with a contact loss, dropout or disconnect of its device, that
    critical events use the limits of :data:`CRITICAL_LIMITS`, and that no critical limit is
    crossed without a critical event.
    """
    problems: list[str] = []
    t = np.arange(0.0, scenario.duration_s, step_s)
    for model in session_models(scenario).values():
        series = model.vitals_array(t)
        for event in model.ground_truth:
            problems.extend(_check_event(event, model, t, series, tolerance_s))
        for parameter, (limit, direction) in CRITICAL_LIMITS.items():
            values = series.get(PARAMETER_VITAL[parameter])
            for onset in threshold_onsets(t, values, limit, direction):
                declared = any(
                    event.severity is Severity.CRITICAL
                    and event.parameter is parameter
                    and abs(event.onset_s - onset) <= tolerance_s
                    for event in model.ground_truth
                )
                if not declared:
                    problems.append(
                        f"{model.code}: {parameter} crosses the critical limit {limit} at "
                        f"{onset:.0f} s without a critical ground-truth event"
                    )
    return problems


def _check_event(
    event: GroundTruthEvent,
    model: SessionModel,
    t: npt.NDArray[np.float64],
    series: VitalsSeries,
    tolerance_s: float,
) -> list[str]:
    if event.kind is EventKind.SIGNAL_LOSS:
        starts = [
            artefact.t_s
            for artefact in model.artefacts
            if artefact.device is event.device and artefact.kind in _INTERVAL_KINDS
        ]
        if not any(abs(start - event.onset_s) <= tolerance_s for start in starts):
            problem = (
                f"{event.id}: no contact loss, dropout or disconnect of {event.device} starts at "
                f"{event.onset_s:.0f} s (starts: {[round(start) for start in starts]})"
            )
            return [problem]
        return []
    assert event.parameter is not None
    assert event.threshold is not None
    assert event.direction is not None
    problems = []
    if event.severity is Severity.CRITICAL:
        limit = CRITICAL_LIMITS.get(event.parameter)
        if limit is not None and limit != (event.threshold, event.direction):
            problems.append(f"{event.id}: a critical {event.parameter} event uses limit {limit}")
    values = series.get(PARAMETER_VITAL[event.parameter])
    onsets = threshold_onsets(t, values, event.threshold, event.direction)
    if not any(abs(onset - event.onset_s) <= tolerance_s for onset in onsets):
        problems.append(
            f"{event.id}: {event.participant} {event.parameter} does not reach "
            f"{event.threshold} ({event.direction}) at {event.onset_s:.0f} s; "
            f"actual onsets: {[round(onset) for onset in onsets]}"
        )
    return problems

"""The shared vocabulary: what crosses a boundary (BLE -> detection -> MQTT, InfluxDB, files).

Values are always in canonical units: bpm, mmHg, degrees Celsius, percent. Every model here is
frozen and forbids unknown fields, so a payload that does not match is an error, not a surprise.

Also the words that configuration, detection and the MQTT contract must share without importing
one another (DEVELOPERS.md, room table): the detection parameters with their artefact and baseline
defaults, consciousness levels, pause limits, the codes that refusals carry, and staff roles.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, ClassVar, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

__all__ = [
    "DEFAULT_PAUSE_S",
    "DETECTION_PARAMETERS",
    "EVIDENCE_KINDS",
    "MAX_PAUSE_S",
    "NOT_EVIDENCE",
    "PARAMETER_UNITS",
    "AlarmCategory",
    "AlarmEvent",
    "AlarmPriority",
    "AlarmState",
    "ArtefactSettings",
    "BaselineSettings",
    "Consciousness",
    "DeviceEvent",
    "DeviceEventType",
    "DeviceKind",
    "DeviceState",
    "DoseMarker",
    "Identifier",
    "Parameter",
    "ParticipantCode",
    "QualityFlag",
    "Reading",
    "ReadingKind",
    "RefusalCode",
    "RefusedError",
    "StaffMember",
    "StaffRole",
]


def _reject_personal_looking(code: str) -> str:
    """Pseudonymous codes only: whitespace or '@' suggests a name or an e-mail slipped in."""
    if any(ch.isspace() for ch in code) or "@" in code:
        msg = "must be a pseudonymous code (letters, digits, '-', '_', '.'), not a name"
        raise ValueError(msg)
    return code


ParticipantCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"),
    AfterValidator(_reject_personal_looking),
]
"""A participant's pseudonymous study code, e.g. ``P-014``; never a name."""

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
"""Codes for sites, rooms, sessions and devices: safe in MQTT topics and InfluxDB tags."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceKind(enum.StrEnum):
    """The wearable kinds the service understands, by the GATT service they expose."""

    HEART_RATE = "heart_rate"  # Heart Rate Service 0x180D
    BLOOD_PRESSURE = "blood_pressure"  # Blood Pressure Service 0x1810
    THERMOMETER = "thermometer"  # Health Thermometer Service 0x1809
    PULSE_OXIMETER = "pulse_oximeter"  # Pulse Oximeter Service 0x1822


class ReadingKind(enum.StrEnum):
    """What one reading is; decides which parameters it carries."""

    HEART_RATE = "heart_rate"
    BLOOD_PRESSURE = "blood_pressure"
    CUFF_PRESSURE = "cuff_pressure"  # intermediate, while the cuff inflates: never alarm evidence
    TEMPERATURE = "temperature"
    INTERMEDIATE_TEMPERATURE = "intermediate_temperature"
    SPO2 = "spo2"
    BATTERY = "battery"


class Parameter(enum.StrEnum):
    """A single measured quantity: the unit of a detection stream (participant x parameter)."""

    HEART_RATE = "heart_rate"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    MEAN_ARTERIAL_BP = "mean_arterial_bp"
    PULSE_RATE = "pulse_rate"
    TEMPERATURE = "temperature"
    SPO2 = "spo2"
    CUFF_PRESSURE = "cuff_pressure"
    BATTERY = "battery"


PARAMETER_UNITS: dict[Parameter, str] = {
    Parameter.HEART_RATE: "bpm",
    Parameter.SYSTOLIC_BP: "mmHg",
    Parameter.DIASTOLIC_BP: "mmHg",
    Parameter.MEAN_ARTERIAL_BP: "mmHg",
    Parameter.PULSE_RATE: "bpm",
    Parameter.TEMPERATURE: "degC",
    Parameter.SPO2: "%",
    Parameter.CUFF_PRESSURE: "mmHg",
    Parameter.BATTERY: "%",
}

_KIND_PARAMETERS: dict[ReadingKind, frozenset[Parameter]] = {
    ReadingKind.HEART_RATE: frozenset({Parameter.HEART_RATE}),
    ReadingKind.BLOOD_PRESSURE: frozenset(
        {
            Parameter.SYSTOLIC_BP,
            Parameter.DIASTOLIC_BP,
            Parameter.MEAN_ARTERIAL_BP,
            Parameter.PULSE_RATE,
        }
    ),
    ReadingKind.CUFF_PRESSURE: frozenset({Parameter.CUFF_PRESSURE, Parameter.PULSE_RATE}),
    ReadingKind.TEMPERATURE: frozenset({Parameter.TEMPERATURE}),
    ReadingKind.INTERMEDIATE_TEMPERATURE: frozenset({Parameter.TEMPERATURE}),
    ReadingKind.SPO2: frozenset({Parameter.SPO2, Parameter.PULSE_RATE}),
    ReadingKind.BATTERY: frozenset({Parameter.BATTERY}),
}


DETECTION_PARAMETERS: tuple[Parameter, ...] = (
    Parameter.HEART_RATE,
    Parameter.SYSTOLIC_BP,
    Parameter.DIASTOLIC_BP,
    Parameter.TEMPERATURE,
    Parameter.SPO2,
)
"""Parameters that form detection streams; the stream index of a parameter is its position."""


def _default_plausible() -> Mapping[Parameter, tuple[float, float]]:
    return MappingProxyType(
        {
            Parameter.HEART_RATE: (20.0, 250.0),
            Parameter.SYSTOLIC_BP: (40.0, 300.0),
            Parameter.DIASTOLIC_BP: (20.0, 200.0),
            Parameter.TEMPERATURE: (30.0, 45.0),
            Parameter.SPO2: (50.0, 100.0),
        }
    )


def _default_spike_delta() -> Mapping[Parameter, float | None]:
    return MappingProxyType(
        {
            Parameter.HEART_RATE: 30.0,
            Parameter.SYSTOLIC_BP: None,
            Parameter.DIASTOLIC_BP: None,
            Parameter.TEMPERATURE: 1.0,
            Parameter.SPO2: 6.0,
        }
    )


@dataclass(frozen=True, slots=True)
class ArtefactSettings:
    """Evidence filter (docs/detection.md section 2)."""

    plausible: Mapping[Parameter, tuple[float, float]] = field(default_factory=_default_plausible)
    spike_delta: Mapping[Parameter, float | None] = field(default_factory=_default_spike_delta)
    spike_max_gap_s: int = 30


@dataclass(frozen=True, slots=True)
class BaselineSettings:
    """Pre-dose baseline (docs/detection.md section 3)."""

    window_s: int = 1800
    resolution_s: int = 10
    min_samples: int = 3
    max_samples: int = 256


class Consciousness(enum.StrEnum):
    """ACVPU as staff enter it; anything but ALERT scores 3 in NEWS2."""

    ALERT = "alert"
    CONFUSION = "confusion"
    VOICE = "voice"
    PAIN = "pain"
    UNRESPONSIVE = "unresponsive"


DEFAULT_PAUSE_S = 120
MAX_PAUSE_S = 900
"""A pause is never indefinite: unlimited standby has killed (docs/clinical-basis.md#technical).
Shared because detection enforces the bounds and the MQTT contract states them to its clients."""


class RefusalCode(enum.StrEnum):
    """Why detection refused a staff command or an input.

    Detection raises :class:`RefusedError` subclasses that carry one of these; the MQTT contract
    maps the code to its reply's error code, so it never has to import detection's errors.
    """

    REJECTED = "rejected"
    UNKNOWN_ALARM = "unknown_alarm"
    ALARM_RESOLVED = "alarm_resolved"
    ALARM_PENDING = "alarm_pending"
    STAFF_REQUIRED = "staff_required"
    UNKNOWN_PARTICIPANT = "unknown_participant"
    PAUSE_REJECTED = "pause_rejected"


class RefusedError(ValueError):
    """A command or input that cannot be carried out; the message names the problem for staff."""

    code: ClassVar[RefusalCode] = RefusalCode.REJECTED


class QualityFlag(enum.StrEnum):
    """Why a reading may not be trustworthy; flagged readings are stored, not alarm evidence."""

    SENSOR_CONTACT_LOST = "sensor_contact_lost"
    BODY_MOVEMENT = "body_movement"
    IRREGULAR_PULSE = "irregular_pulse"
    IMPROPER_CUFF_FIT = "improper_cuff_fit"
    IMPROPER_POSITION = "improper_position"
    PULSE_RATE_OUT_OF_RANGE = "pulse_rate_out_of_range"
    SIGNAL_QUALITY_LOW = "signal_quality_low"
    QUESTIONABLE_MEASUREMENT = "questionable_measurement"
    VALUE_UNUSABLE = "value_unusable"
    DEVICE_CLOCK_NOT_SET = "device_clock_not_set"


NOT_EVIDENCE: frozenset[QualityFlag] = frozenset(
    {
        QualityFlag.SENSOR_CONTACT_LOST,
        QualityFlag.BODY_MOVEMENT,
        QualityFlag.IMPROPER_CUFF_FIT,
        QualityFlag.IMPROPER_POSITION,
        QualityFlag.SIGNAL_QUALITY_LOW,
        QualityFlag.QUESTIONABLE_MEASUREMENT,
        QualityFlag.VALUE_UNUSABLE,
    }
)
"""Flags that make a reading unfit as alarm evidence; the others (irregular pulse...) inform."""

EVIDENCE_KINDS: frozenset[ReadingKind] = frozenset(
    {
        ReadingKind.HEART_RATE,
        ReadingKind.BLOOD_PRESSURE,
        ReadingKind.TEMPERATURE,
        ReadingKind.SPO2,
    }
)
"""Final measurements; cuff inflation, intermediate temperatures and battery are context only."""


class Reading(_Frozen):
    """One measurement from one device, normalised to canonical units.

    A value that is not finite (a device's NaN, NRes or infinity) is kept as ``None`` in ``values``
    and the reading carries ``value_unusable``: it is stored and counted, never silently dropped.
    """

    session: Identifier
    participant: ParticipantCode
    device: Identifier
    kind: ReadingKind
    values: dict[Parameter, float | None] = Field(min_length=1)
    measured_at: AwareDatetime | None = None  # from the device clock, when it sends one
    received_at: AwareDatetime
    quality: frozenset[QualityFlag] = frozenset()

    @model_validator(mode="after")
    def _check_values(self) -> Self:
        allowed = _KIND_PARAMETERS[self.kind]
        unexpected = set(self.values) - allowed
        if unexpected:
            names = ", ".join(sorted(unexpected))
            msg = f"{self.kind} reading cannot carry {names}"
            raise ValueError(msg)
        unusable = any(v is None or not math.isfinite(v) for v in self.values.values())
        if unusable and QualityFlag.VALUE_UNUSABLE not in self.quality:
            msg = "a reading with a missing or non-finite value must be flagged value_unusable"
            raise ValueError(msg)
        return self

    @property
    def usable(self) -> bool:
        """Whether this reading may serve as alarm evidence (it is stored either way)."""
        return self.kind in EVIDENCE_KINDS and not (self.quality & NOT_EVIDENCE)


class AlarmPriority(enum.StrEnum):
    """IEC 60601-1-8 alarm priorities."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """Ordering for comparisons: low < medium < high."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {AlarmPriority.LOW: 1, AlarmPriority.MEDIUM: 2, AlarmPriority.HIGH: 3}


class AlarmCategory(enum.StrEnum):
    """Physiological (the participant) or technical (the equipment, the link, the data)."""

    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"


class AlarmState(enum.StrEnum):
    """Alarm states; every change between them is an :class:`AlarmEvent`."""

    INACTIVE = "inactive"
    PENDING = "pending"
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlarmEvent(_Frozen):
    """One transition of one alarm; the same record is published, persisted and recorded.

    ``alarm_id`` is stable for the life of an alarm (one per alarm group and participant at a
    time), so a duplicate delivery is harmless; ``sequence`` orders the events of a session without
    gaps. ``paused`` marks an alarm whose signal staff paused (it still changes state and is still
    recorded); ``condition_cleared`` marks an alarm whose condition has ended but which stays
    until acknowledged (a latched high alarm) or has just resolved.
    """

    alarm_id: uuid.UUID
    session: Identifier
    participant: ParticipantCode
    rule: Identifier
    parameter: Parameter | None = None
    priority: AlarmPriority
    category: AlarmCategory
    state: AlarmState
    value: float | None = None
    threshold: float | None = None
    message: str = Field(min_length=1, max_length=500)
    raised_at: AwareDatetime  # when the condition was first detected
    occurred_at: AwareDatetime  # when this transition happened
    acknowledged_by: Identifier | None = None
    acknowledged_at: AwareDatetime | None = None
    escalation_level: int = Field(default=0, ge=0)
    sequence: int = Field(ge=1)
    paused: bool = False
    condition_cleared: bool = False

    @model_validator(mode="after")
    def _check_acknowledgement(self) -> Self:
        if self.state is AlarmState.ACKNOWLEDGED and self.acknowledged_by is None:
            msg = "an acknowledged alarm must name the staff member who acknowledged it"
            raise ValueError(msg)
        if self.occurred_at < self.raised_at:
            msg = "occurred_at cannot precede raised_at"
            raise ValueError(msg)
        return self


class DeviceState(enum.StrEnum):
    """Where a wearable's link is in its life."""

    SEARCHING = "searching"  # configured, not seen yet
    CONNECTING = "connecting"
    CONNECTED = "connected"
    LOST = "lost"  # the link dropped; the connector keeps trying
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"  # the service shut the link down on purpose


class DeviceEventType(enum.StrEnum):
    """Technical conditions and link changes a wearable can go through."""

    STATE_CHANGED = "state_changed"
    NO_DATA = "no_data"
    DATA_RESUMED = "data_resumed"
    SENSOR_CONTACT_LOST = "sensor_contact_lost"
    SENSOR_CONTACT_RESTORED = "sensor_contact_restored"
    BATTERY_LOW = "battery_low"
    MALFORMED_PAYLOAD = "malformed_payload"
    MALFORMED_RATE_HIGH = "malformed_rate_high"
    NOTIFICATIONS_DROPPED = "notifications_dropped"
    CONNECT_FAILED = "connect_failed"


class DeviceEvent(_Frozen):
    """Something that happened to a wearable or its link; persisted and published like readings.

    A malformed payload is kept here whole (``payload_hex``, ``characteristic``, ``detail``), so a
    device that sends garbage can be diagnosed later and nothing it sent is lost.
    """

    session: Identifier
    participant: ParticipantCode
    device: Identifier
    device_kind: DeviceKind
    event: DeviceEventType
    state: DeviceState
    occurred_at: AwareDatetime
    detail: str = ""
    gap_s: float | None = Field(default=None, ge=0)  # silence bridged by a reconnect
    battery_percent: float | None = None
    characteristic: str | None = None  # 16-bit UUID as 0x2A37
    payload_hex: str | None = None
    count: int | None = Field(default=None, ge=0)  # e.g. notifications dropped so far


class DoseMarker(_Frozen):
    """When a participant took a dose (or a booster): the end of their pre-dose baseline window.

    Readings files carry no markers, so ``monitor replay`` reads them from a ``markers.jsonl``
    beside the readings. A later marker (a booster) never replaces a baseline already fixed.
    """

    session: Identifier
    participant: ParticipantCode
    given_at: AwareDatetime


class StaffRole(enum.StrEnum):
    """What a staff member may order; docs/mqtt.md lists the commands each role may give."""

    ROOM_STAFF = "room-staff"  # at the bedside: every command
    MEDICAL_MONITOR = "medical-monitor"  # remote physician: acknowledge, pause, resume


class StaffMember(_Frozen):
    """Someone who may command the monitor, by staff code (never a name).

    ``accounts`` are the broker accounts the member sends from directly; the broker's ACL lets
    an account publish commands only on its own topic level, so the detector knows the sender
    and refuses a ``staff`` the account may not act as. Paging (contact addresses, on-call
    tiers) will be further optional fields here, leaving existing entries valid.
    """

    id: Identifier
    roles: tuple[StaffRole, ...] = Field(min_length=1)
    accounts: tuple[Identifier, ...] = ()

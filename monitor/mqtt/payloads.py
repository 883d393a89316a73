"""What travels on each topic: versioned pydantic models, and the command parser.

Every payload carries ``schema_version`` so a dashboard built against version 1 can refuse a
version 2 message instead of misreading it, and every model forbids unknown fields. The domain
records (:class:`~monitor.models.AlarmEvent`, :class:`~monitor.models.DeviceEvent`,
:class:`~monitor.models.Reading`) travel whole inside an envelope rather than gaining a version
field, because they are also the persisted and recorded format and must stay one shape.

Commands come from outside and are untrusted: :func:`parse_command` never raises, and every way a
payload can be wrong becomes a :class:`CommandError` whose message names the problem without
echoing the payload (it could hold anything, names included).
"""

from __future__ import annotations

import collections
import enum
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from monitor.models import (
    DEFAULT_PAUSE_S,
    MAX_PAUSE_S,
    AlarmEvent,
    AlarmState,
    Consciousness,
    DeviceEvent,
    DoseMarker,
    Identifier,
    ParticipantCode,
    Reading,
    RefusalCode,
    RefusedError,
)
from monitor.mqtt.topics import COMMAND_KINDS, CommandKind, command_target

__all__ = [
    "ERROR_DESCRIPTIONS",
    "MAX_BATCH_READINGS",
    "MAX_BATCH_SEQUENCE",
    "MAX_COMMAND_BYTES",
    "REFUSAL_CODES",
    "SCHEMA_VERSION",
    "AcknowledgeCommand",
    "ActiveAlarms",
    "AlarmMessage",
    "Command",
    "CommandError",
    "CommandId",
    "CommandReply",
    "ConsciousnessCommand",
    "DeviceStatus",
    "DoseCommand",
    "DuplicateKeyError",
    "ErrorCode",
    "EscalationMessage",
    "EscalationReason",
    "PauseCommand",
    "ResumeCommand",
    "ServiceState",
    "ServiceStatus",
    "StatusReason",
    "VitalsBatch",
    "describe_validation_error",
    "load_json",
    "parse_command",
    "reply_for_error",
    "reply_ok",
]

SCHEMA_VERSION: Literal[1] = 1
"""The payload version this code writes and the only one it accepts in commands."""

MAX_COMMAND_BYTES = 16 * 1024
"""A command is a few hundred bytes; anything far bigger is refused before it is parsed."""

MAX_BATCH_READINGS = 1000
"""A gateway batches at most this many readings per message (a few seconds of a session)."""

MAX_BATCH_SEQUENCE = 2**63 - 1
"""A batch number fits a signed 64-bit integer, as every gateway's counter does (numbering four
batches a second, no gateway gets near it); a bigger one is a malformed payload."""

_MAX_REASON = 500

CommandId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
"""Chosen by the sender (a UUID or ULID fits) and echoed in the reply so it can match them."""


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


# --- published by gateways ------------------------------------------------------------------


class VitalsBatch(_Payload):
    """Readings of one participant from one gateway, numbered so the receiver can count loss.

    ``sequence`` counts this gateway's batches on this topic (1, 2, 3, ...): MQTT keeps order per
    topic, not across topics, so a gap in one topic's numbers is a lost batch, never reordering
    between participants. ``run`` changes whenever the gateway restarts and its numbering starts
    again at 1, so a restart is not mistaken for loss.
    """

    gateway: Identifier
    run: uuid.UUID
    sequence: int = Field(ge=1, le=MAX_BATCH_SEQUENCE)
    session: Identifier
    participant: ParticipantCode
    sent_at: AwareDatetime
    readings: tuple[Reading, ...] = Field(min_length=1, max_length=MAX_BATCH_READINGS)

    @model_validator(mode="after")
    def _one_stream(self) -> Self:
        for reading in self.readings:
            if reading.session != self.session or reading.participant != self.participant:
                msg = "every reading of a batch must belong to the batch's session and participant"
                raise ValueError(msg)
        return self


class DeviceStatus(_Payload):
    """A wearable's latest event; retained, and every event carries the link ``state``."""

    event: DeviceEvent


# --- published by the detector --------------------------------------------------------------


class AlarmMessage(_Payload):
    """One alarm transition, exactly as persisted (``event.sequence`` orders a session's)."""

    event: AlarmEvent


class ActiveAlarms(_Payload):
    """Every alarm of a session that has not resolved, each as its latest event.

    Retained, so a dashboard that connects late knows the truth at once. An empty ``alarms`` means
    nothing is active; there is never an empty retained message meaning "unknown". ``sequence`` is
    the last alarm-event sequence this snapshot includes: a dashboard that combines it with the
    alarm stream ignores events with a sequence at or below it.
    """

    session: Identifier
    as_of: AwareDatetime
    sequence: int = Field(ge=0)
    alarms: tuple[AlarmEvent, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for alarm in self.alarms:
            if alarm.session != self.session:
                msg = f"alarm {alarm.alarm_id} belongs to session {alarm.session}"
                raise ValueError(msg)
            if alarm.state is AlarmState.RESOLVED:
                msg = f"alarm {alarm.alarm_id} has resolved; a snapshot holds current alarms only"
                raise ValueError(msg)
            if alarm.sequence > self.sequence:
                msg = f"alarm event {alarm.sequence} is newer than the snapshot's sequence"
                raise ValueError(msg)
        return self


class EscalationReason(enum.StrEnum):
    """Why an alarm event is on the escalation topic (``EscalationTracker`` decides)."""

    ESCALATED = "escalated"  # active, escalation_level > 0: nobody acknowledged in time
    HIGH_PRIORITY = "high_priority"  # active, high priority, unacknowledged
    UPDATE = "update"  # a later event of an alarm sent here: acknowledged, resolved, changed


class EscalationMessage(_Payload):
    """An alarm the medical monitor must see, or the news that one was handled."""

    reason: EscalationReason
    event: AlarmEvent


class ServiceState(enum.StrEnum):
    """Whether a service is connected to the broker."""

    ONLINE = "online"
    OFFLINE = "offline"


class StatusReason(enum.StrEnum):
    """How the service got into its state."""

    CONNECTED = "connected"
    SHUTDOWN = "shutdown"  # a clean stop: it said goodbye itself
    CONNECTION_LOST = "connection_lost"  # the broker published the last will


class ServiceStatus(_Payload):
    """Retained; the last will carries ``offline`` / ``connection_lost``."""

    service: Identifier
    client_id: str = Field(min_length=1, max_length=128)
    state: ServiceState
    reason: StatusReason

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        online = self.state is ServiceState.ONLINE
        if online != (self.reason is StatusReason.CONNECTED):
            msg = "online goes with reason connected, offline with shutdown or connection_lost"
            raise ValueError(msg)
        return self


# --- commands (published by dashboards) -----------------------------------------------------


class _Command(BaseModel):
    """Fields every command has; ``schema_version`` has no default here: senders must state it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1]
    command_id: CommandId
    session: Identifier
    staff: Identifier
    issued_at: AwareDatetime  # the sender's clock: lets the service see a command held up


class AcknowledgeCommand(_Command):
    """Staff have seen an alarm (a duplicate acknowledgement is harmless)."""

    kind: Literal[CommandKind.ACKNOWLEDGE]
    alarm_id: uuid.UUID


class PauseCommand(_Command):
    """Pause a participant's medium and low physiological alarm signals, never for long."""

    kind: Literal[CommandKind.PAUSE]
    participant: ParticipantCode
    duration_s: int = Field(default=DEFAULT_PAUSE_S, ge=1, le=MAX_PAUSE_S)


class ResumeCommand(_Command):
    """End a participant's pause early."""

    kind: Literal[CommandKind.RESUME]
    participant: ParticipantCode


class DoseCommand(_Command):
    """A dose (or booster) was given: ends the participant's pre-dose baseline window."""

    kind: Literal[CommandKind.DOSE]
    participant: ParticipantCode
    given_at: AwareDatetime

    def marker(self) -> DoseMarker:
        """The marker as detection and the recorder keep it."""
        return DoseMarker(
            session=self.session, participant=self.participant, given_at=self.given_at
        )


class ConsciousnessCommand(_Command):
    """Staff-assessed ACVPU level, for NEWS2."""

    kind: Literal[CommandKind.CONSCIOUSNESS]
    participant: ParticipantCode
    level: Consciousness
    observed_at: AwareDatetime


Command = Annotated[
    AcknowledgeCommand | PauseCommand | ResumeCommand | DoseCommand | ConsciousnessCommand,
    Field(discriminator="kind"),
]

_COMMAND_MODELS: dict[str, type[_Command]] = {
    CommandKind.ACKNOWLEDGE: AcknowledgeCommand,
    CommandKind.PAUSE: PauseCommand,
    CommandKind.RESUME: ResumeCommand,
    CommandKind.DOSE: DoseCommand,
    CommandKind.CONSCIOUSNESS: ConsciousnessCommand,
}
_COMMAND_ID: TypeAdapter[str] = TypeAdapter(CommandId)
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


class ErrorCode(enum.StrEnum):
    """Why a command was refused; stable strings a dashboard may switch on."""

    TOO_LARGE = "too_large"
    INVALID_TOPIC = "invalid_topic"
    INVALID_JSON = "invalid_json"
    DUPLICATE_KEY = "duplicate_key"
    INVALID_COMMAND = "invalid_command"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    MISSING_STAFF = "missing_staff"
    UNKNOWN_STAFF = "unknown_staff"
    NOT_AUTHORIZED = "not_authorized"
    COMMAND_ID_REUSED = "command_id_reused"
    UNKNOWN_KIND = "unknown_kind"
    TOPIC_MISMATCH = "topic_mismatch"
    RETAINED = "retained"
    UNKNOWN_ALARM = "unknown_alarm"
    ALARM_RESOLVED = "alarm_resolved"
    ALARM_PENDING = "alarm_pending"
    UNKNOWN_PARTICIPANT = "unknown_participant"
    PAUSE_REJECTED = "pause_rejected"
    REJECTED = "rejected"
    INTERNAL = "internal"


ERROR_DESCRIPTIONS: Mapping[ErrorCode, str] = {
    ErrorCode.TOO_LARGE: f"the payload is over {MAX_COMMAND_BYTES} bytes; it was not parsed",
    ErrorCode.INVALID_TOPIC: "the topic is not `.../commands/<session>/<kind>/<account>` with a "
    "valid session identifier and account name",
    ErrorCode.INVALID_JSON: "the payload is not UTF-8 JSON",
    ErrorCode.DUPLICATE_KEY: "an object in the payload has the same key twice; such JSON means "
    "different things to different readers, so it is refused, never read as the last value",
    ErrorCode.INVALID_COMMAND: "the JSON does not match the command's schema (the reason names "
    "each field)",
    ErrorCode.UNSUPPORTED_SCHEMA_VERSION: f"`schema_version` is missing or not {SCHEMA_VERSION}",
    ErrorCode.MISSING_STAFF: "`staff` is missing, empty or not a staff code",
    ErrorCode.UNKNOWN_STAFF: "`staff` is not in the site's staff list",
    ErrorCode.NOT_AUTHORIZED: "the sending account may not act as this staff member, or the "
    "member's roles do not allow this kind of command",
    ErrorCode.COMMAND_ID_REUSED: "the `command_id` was used before for a different command "
    "(another kind, staff or field); the same command again gets its first reply",
    ErrorCode.UNKNOWN_KIND: f"the kind (topic level or `kind` field) is not one of "
    f"{', '.join(COMMAND_KINDS)}",
    ErrorCode.TOPIC_MISMATCH: "the payload's `kind` or `session` differs from the topic's",
    ErrorCode.RETAINED: "the command was published retained; commands must not be (a retained "
    "command would be carried out again on every reconnect)",
    ErrorCode.UNKNOWN_ALARM: "no such alarm in the session",
    ErrorCode.ALARM_RESOLVED: "the alarm has already resolved",
    ErrorCode.ALARM_PENDING: "the alarm is still pending (not yet announced); acknowledge it "
    "once it is active",
    ErrorCode.UNKNOWN_PARTICIPANT: "no such participant in the session",
    ErrorCode.PAUSE_REJECTED: f"a pause lasts 1 to {MAX_PAUSE_S} s; a resume needs a pause",
    ErrorCode.REJECTED: "the service refused the command for the reason given",
    ErrorCode.INTERNAL: "the service failed while handling the command (a bug: report it)",
}


class CommandReply(_Payload):
    """The outcome of one command, on ``.../replies/<session>``; match it by ``command_id``.

    ``command_id``, ``session`` and ``kind`` are whatever could be read from the command, so a
    reply to garbage may have none of them. ``answers`` is how many commands the reply answers: 1,
    or more for the summary that answers refused junk at most once a second per session (it then
    has no ``command_id`` or ``kind``, and ``error`` is the most common code).
    """

    command_id: CommandId | None
    session: Identifier | None
    kind: CommandKind | None
    ok: bool
    error: ErrorCode | None = None
    reason: str | None = Field(default=None, max_length=_MAX_REASON)
    alarm_events: int = Field(default=0, ge=0)  # alarm transitions the command caused
    answers: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ok != (self.error is None) or self.ok != (self.reason is None):
            msg = "an ok reply has no error or reason; a failed one has both"
            raise ValueError(msg)
        if self.ok and self.answers != 1:
            msg = "an ok reply answers its one command"
            raise ValueError(msg)
        return self


@dataclass(frozen=True, slots=True)
class CommandError:
    """A command that could not be parsed; what could be read of it is kept for the reply."""

    code: ErrorCode
    message: str
    topic: str
    command_id: str | None = None
    session: str | None = None
    kind: CommandKind | None = None

    @classmethod
    def refusing(cls, command: Command, topic: str, code: ErrorCode, message: str) -> Self:
        """The refusal of a command that parsed (the service will not carry it out)."""
        return cls(
            code,
            message,
            topic,
            command_id=command.command_id,
            session=command.session,
            kind=command.kind,
        )

    def reply(self) -> CommandReply:
        """The error reply to publish on ``Topics.replies(self.session)``."""
        return CommandReply(
            command_id=self.command_id,
            session=self.session,
            kind=self.kind,
            ok=False,
            error=self.code,
            reason=_clip(self.message),
        )


_COMMAND: TypeAdapter[Command] = TypeAdapter(Command)


_DUPLICATE_KEY = "an object has the same key twice"


class DuplicateKeyError(ValueError):
    """A JSON object with a key twice: ``json`` would silently keep the last value."""


def _decode(payload: bytes) -> tuple[Any, frozenset[str]]:
    """The JSON, and the keys some object of it had more than once (none: unambiguous)."""
    repeated: set[str] = set()

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        data = dict(items)
        if len(data) != len(items):  # linear: a payload may hold a hundred thousand keys
            counts = collections.Counter(key for key, _ in items)
            repeated.update(key for key, count in counts.items() if count > 1)
        return data

    return json.loads(payload, object_pairs_hook=pairs), frozenset(repeated)


def load_json(payload: bytes) -> Any:
    """Any MQTT payload's JSON; :class:`DuplicateKeyError` for a key given twice.

    A sender could otherwise put ``"staff"`` twice and have a log or dashboard that keeps the
    first value show someone other than the one the service acted for. Invalid JSON raises
    ``ValueError`` (``RecursionError`` for absurd nesting) first, as :func:`json.loads` does.
    """
    data, repeated = _decode(payload)
    if repeated:
        raise DuplicateKeyError(_DUPLICATE_KEY)
    return data


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _valid(adapter: TypeAdapter[str], value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _field_name(loc: tuple[int | str, ...]) -> str:
    text = ".".join(str(part) for part in loc) or "payload"
    return text if len(text) <= 40 else text[:39] + "…"


def describe_validation_error(err: ValidationError) -> str:
    """Field names and pydantic's messages only; input values are never echoed."""
    parts = [f"{_field_name(e['loc'])}: {e['msg']}" for e in err.errors(include_input=False)]
    return "; ".join(parts)


def parse_command(topic: str, payload: bytes, *, retained: bool = False) -> Command | CommandError:
    """A command from a message on a command topic, or the reason it is not one. Never raises.

    Checks run from the cheapest and most general to the most specific, so the error names the
    first thing wrong: topic, size, JSON, retain flag, kind, schema version, staff, fields and
    last the payload's session against the topic's.
    """
    try:
        return _parse(topic, payload, retained=retained)
    except Exception as exc:
        return CommandError(
            ErrorCode.INTERNAL, f"could not parse the command: {type(exc).__name__}", topic
        )


def _parse(topic: str, payload: bytes, *, retained: bool) -> Command | CommandError:
    target = command_target(topic)
    if target is None:
        return CommandError(
            ErrorCode.INVALID_TOPIC,
            "not a command topic (…/commands/<session>/<kind>/<account>)",
            topic,
        )
    session = _valid(_IDENTIFIER, target.session)
    if session is None:
        return CommandError(
            ErrorCode.INVALID_TOPIC, "the topic's session level is not an identifier", topic
        )
    if _valid(_IDENTIFIER, target.account) is None:
        return CommandError(
            ErrorCode.INVALID_TOPIC,
            "the topic's account level is not a broker account name",
            topic,
            session=session,
        )
    if target.kind not in COMMAND_KINDS:
        known = ", ".join(COMMAND_KINDS)
        return CommandError(
            ErrorCode.UNKNOWN_KIND,
            f"unknown command kind in the topic (known: {known})",
            topic,
            session=session,
        )
    kind = CommandKind(target.kind)

    def error(code: ErrorCode, message: str, command_id: str | None = None) -> CommandError:
        return CommandError(code, message, topic, command_id=command_id, session=session, kind=kind)

    if len(payload) > MAX_COMMAND_BYTES:
        return error(
            ErrorCode.TOO_LARGE,
            f"the payload has {len(payload)} bytes; a command has at most {MAX_COMMAND_BYTES}",
        )
    try:
        data, repeated = _decode(payload)
    except (ValueError, RecursionError):
        return error(ErrorCode.INVALID_JSON, "the payload is not valid UTF-8 JSON")
    if repeated:
        # the id is echoed so the sender can match the reply, unless it is the ambiguous key
        echo = isinstance(data, dict) and "command_id" not in repeated
        return error(
            ErrorCode.DUPLICATE_KEY,
            f"{_DUPLICATE_KEY}; each field may be given once",
            _valid(_COMMAND_ID, data.get("command_id")) if echo else None,
        )
    if not isinstance(data, dict):
        return error(
            ErrorCode.INVALID_COMMAND, f"a command is a JSON object, not {_json_type(data)}"
        )
    command_id = _valid(_COMMAND_ID, data.get("command_id"))
    if retained:
        return error(ErrorCode.RETAINED, "commands must not be published retained", command_id)
    if "kind" not in data:
        return error(ErrorCode.INVALID_COMMAND, "kind: Field required", command_id)
    if data["kind"] not in COMMAND_KINDS:
        known = ", ".join(COMMAND_KINDS)
        return error(
            ErrorCode.UNKNOWN_KIND, f"kind: unknown command kind (known: {known})", command_id
        )
    if data["kind"] != kind:
        return error(
            ErrorCode.TOPIC_MISMATCH,
            f"kind {data['kind']!r} was sent on the {kind.value!r} topic",
            command_id,
        )
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        found = (
            "missing"
            if "schema_version" not in data
            else f"{_json_type(version)} {_short(version)}".rstrip()
        )
        return error(
            ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version is {found}; this service speaks {SCHEMA_VERSION}",
            command_id,
        )
    staff = data.get("staff")
    if not isinstance(staff, str) or not staff.strip():
        return error(
            ErrorCode.MISSING_STAFF,
            f"staff: a {kind.value} command needs the staff member's id",
            command_id,
        )
    if _valid(_IDENTIFIER, staff) is None:
        return error(
            ErrorCode.MISSING_STAFF,
            "staff: must be a staff code (letters, digits, '.', '_', '-'), not a name",
            command_id,
        )
    try:
        command = _COMMAND.validate_json(payload, strict=True)
    except ValidationError as err:
        return error(ErrorCode.INVALID_COMMAND, describe_validation_error(err), command_id)
    if command.session != session:
        return error(
            ErrorCode.TOPIC_MISMATCH,
            f"session {command.session!r} was sent on the {session!r} topic",
            command_id,
        )
    return command


def _json_type(value: object) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number"


def _short(value: object) -> str:
    """A scalar from the payload for an error message, only when it is short and harmless."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = json.dumps(value)
        return text if len(text) <= 20 else ""
    return ""


# --- replies -----------------------------------------------------------------------------------

REFUSAL_CODES: Mapping[RefusalCode, ErrorCode] = MappingProxyType(
    {
        RefusalCode.REJECTED: ErrorCode.REJECTED,
        RefusalCode.UNKNOWN_ALARM: ErrorCode.UNKNOWN_ALARM,
        RefusalCode.ALARM_RESOLVED: ErrorCode.ALARM_RESOLVED,
        RefusalCode.ALARM_PENDING: ErrorCode.ALARM_PENDING,
        RefusalCode.STAFF_REQUIRED: ErrorCode.MISSING_STAFF,
        RefusalCode.UNKNOWN_PARTICIPANT: ErrorCode.UNKNOWN_PARTICIPANT,
        RefusalCode.PAUSE_REJECTED: ErrorCode.PAUSE_REJECTED,
    }
)
"""The reply's error code for each refusal detection can raise: one row per code, no import of
detection's error classes (the contract stays below detection in the room table)."""


def reply_ok(command: Command, *, alarm_events: int = 0) -> CommandReply:
    """The reply for a command the service carried out."""
    return CommandReply(
        command_id=command.command_id,
        session=command.session,
        kind=command.kind,
        ok=True,
        alarm_events=alarm_events,
    )


def reply_for_error(command: Command, error: Exception) -> CommandReply:
    """The reply for a command the pipeline refused.

    Refusals map to their codes through :data:`REFUSAL_CODES`; a ``KeyError`` is what
    ``DetectionPipeline`` raises for a participant outside the session (dose, consciousness).
    Anything else is a bug in the service, reported as ``internal`` without its details (they
    could hold anything).
    """
    code = ErrorCode.INTERNAL
    reason = "the service failed while handling the command"
    if isinstance(error, RefusedError):
        code = REFUSAL_CODES[error.code]
        reason = str(error)
    elif isinstance(error, KeyError):
        code = ErrorCode.UNKNOWN_PARTICIPANT
        reason = str(error.args[0]) if error.args else "unknown participant"
    return CommandReply(
        command_id=command.command_id,
        session=command.session,
        kind=command.kind,
        ok=False,
        error=code,
        reason=_clip(reason or code.value),
    )

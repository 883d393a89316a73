"""The MQTT contract without a broker: topics, payload models, the command parser, the outbox
policy and the escalation and loss-counting rules."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from monitor.alerts.lifecycle import (
    AlarmPendingError,
    AlarmResolvedError,
    LifecycleError,
    PauseError,
    StaffRequiredError,
    UnknownAlarmError,
    UnknownParticipantError,
)
from monitor.backoff import Backoff
from monitor.models import (
    AlarmCategory,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    Consciousness,
    Parameter,
    Reading,
    ReadingKind,
    RefusalCode,
    RefusedError,
    StaffMember,
    StaffRole,
)
from monitor.mqtt.client import MqttLink
from monitor.mqtt.contract import TOPICS
from monitor.mqtt.doc import _examples
from monitor.mqtt.outbox import Outbox, Priority
from monitor.mqtt.payloads import (
    MAX_BATCH_SEQUENCE,
    MAX_COMMAND_BYTES,
    REFUSAL_CODES,
    AcknowledgeCommand,
    ActiveAlarms,
    CommandError,
    CommandReply,
    ConsciousnessCommand,
    DoseCommand,
    DuplicateKeyError,
    ErrorCode,
    EscalationReason,
    PauseCommand,
    ResumeCommand,
    ServiceState,
    ServiceStatus,
    StatusReason,
    VitalsBatch,
    load_json,
    parse_command,
    reply_for_error,
    reply_ok,
)
from monitor.mqtt.staff import StaffDirectory
from monitor.mqtt.topics import Topics, topic_matches
from monitor.mqtt.tracking import BatchNumbering, EscalationTracker, SequenceTracker

TOPICS_ = Topics(root="vitals", site="SITE-1")
SESSION = "S-1"
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
ALARM_ID = uuid.UUID("5a0c35c4-2f7e-5d43-9a55-0d6a7c1f3b21")
ACCOUNT = "dashboard"


def command(which: str = "acknowledge", **changes: Any) -> dict[str, Any]:
    """A valid command of kind ``which`` as a dashboard would send it, with ``changes`` applied."""
    body: dict[str, Any] = {
        "schema_version": 1,
        "kind": which,
        "command_id": "cmd-1",
        "session": SESSION,
        "staff": "RN-07",
        "issued_at": "2025-03-01T09:00:00Z",
    }
    targets: dict[str, dict[str, Any]] = {
        "acknowledge": {"alarm_id": str(ALARM_ID)},
        "pause": {"participant": "P-001", "duration_s": 300},
        "resume": {"participant": "P-001"},
        "dose": {"participant": "P-001", "given_at": "2025-03-01T08:59:00Z"},
        "consciousness": {
            "participant": "P-001",
            "level": "voice",
            "observed_at": "2025-03-01T08:59:30Z",
        },
    }
    body |= targets.get(which, {})
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def parse(body: object, kind: str = "acknowledge", *, topic: str | None = None) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_command(topic or TOPICS_.command(SESSION, kind, ACCOUNT), raw)


def error_of(result: object) -> CommandError:
    assert isinstance(result, CommandError), result
    return result


# --- topics ---------------------------------------------------------------------------------


def test_topics_hold_codes_only() -> None:
    assert TOPICS_.readings(SESSION, "P-001") == "vitals/SITE-1/readings/S-1/P-001"
    assert TOPICS_.command(SESSION, "pause", "dash-1") == "vitals/SITE-1/commands/S-1/pause/dash-1"
    with pytest.raises(ValueError, match="account"):
        TOPICS_.command(SESSION, "pause", "+")
    assert TOPICS_.replies(None) == "vitals/SITE-1/replies/_invalid"
    with pytest.raises(ValueError, match="pseudonymous"):
        TOPICS_.alarms(SESSION, "Jane Doe")
    with pytest.raises(ValueError, match="identifier"):
        TOPICS_.active_alarms("S/#")
    with pytest.raises(ValueError, match="topic root"):
        Topics(root="vitals/+", site="SITE-1")


def test_every_topic_matches_its_filter() -> None:
    pairs = [
        (TOPICS_.readings(SESSION, "P-1"), TOPICS_.readings_filter),
        (TOPICS_.device(SESSION, "P-1", "hr-1"), TOPICS_.devices_filter),
        (TOPICS_.alarms(SESSION, "P-1"), TOPICS_.alarms_filter),
        (TOPICS_.active_alarms(SESSION), TOPICS_.active_alarms_filter),
        (TOPICS_.escalations(SESSION, "P-1"), TOPICS_.escalations_filter),
        (TOPICS_.command(SESSION, "dose", ACCOUNT), TOPICS_.commands_filter),
        (TOPICS_.replies(SESSION), TOPICS_.replies_filter),
        (TOPICS_.status("detector"), TOPICS_.status_filter),
    ]
    for topic, topic_filter in pairs:
        assert topic_matches(topic, topic_filter), (topic, topic_filter)
        assert topic_matches(topic, "vitals/#")
    assert not topic_matches(TOPICS_.alarms(SESSION, "P-1"), TOPICS_.commands_filter)
    assert not topic_matches("vitals/SITE-1/commands/S-1", TOPICS_.commands_filter)
    assert not topic_matches("vitals/SITE-1/commands/S-1/pause", TOPICS_.commands_filter)
    assert not topic_matches("$SYS/broker/uptime", "#")


# --- commands -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("acknowledge", AcknowledgeCommand),
        ("pause", PauseCommand),
        ("resume", ResumeCommand),
        ("dose", DoseCommand),
        ("consciousness", ConsciousnessCommand),
    ],
)
def test_a_valid_command_of_each_kind_parses(kind: str, model: type[BaseModel]) -> None:
    parsed = parse(command(kind), kind)
    assert isinstance(parsed, model)
    assert parsed.command_id == "cmd-1"  # type: ignore[attr-defined]
    assert parsed.staff == "RN-07"  # type: ignore[attr-defined]
    again = parse(json.loads(parsed.model_dump_json()), kind)
    assert again == parsed


def test_command_targets_are_typed() -> None:
    acknowledge = parse(command())
    assert isinstance(acknowledge, AcknowledgeCommand)
    assert acknowledge.alarm_id == ALARM_ID
    pause = parse(command("pause", duration_s=...), "pause")
    assert isinstance(pause, PauseCommand)
    assert pause.duration_s == 120
    consciousness = parse(command("consciousness"), "consciousness")
    assert isinstance(consciousness, ConsciousnessCommand)
    assert consciousness.level is Consciousness.VOICE
    dose = parse(command("dose"), "dose")
    assert isinstance(dose, DoseCommand)
    assert dose.marker().given_at == dt.datetime(2025, 3, 1, 8, 59, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("payload", "kind", "code", "words"),
    [
        (b"{not json", "acknowledge", ErrorCode.INVALID_JSON, "not valid UTF-8 JSON"),
        (b"\xff\xfe\x00garbage", "acknowledge", ErrorCode.INVALID_JSON, "JSON"),
        (b"", "acknowledge", ErrorCode.INVALID_JSON, "JSON"),
        (b"[" * 5000 + b"]" * 5000, "acknowledge", ErrorCode.INVALID_JSON, "JSON"),
        (b"[1, 2]", "acknowledge", ErrorCode.INVALID_COMMAND, "not an array"),
        (b'"ack"', "acknowledge", ErrorCode.INVALID_COMMAND, "not a string"),
        (b"x" * (MAX_COMMAND_BYTES + 1), "acknowledge", ErrorCode.TOO_LARGE, "at most"),
    ],
)
def test_garbage_becomes_an_error(payload: bytes, kind: str, code: ErrorCode, words: str) -> None:
    error = error_of(parse(payload, kind))
    assert error.code is code
    assert words in error.message
    assert error.session == SESSION


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (command(schema_version=...), ErrorCode.UNSUPPORTED_SCHEMA_VERSION, "missing"),
        (command(schema_version=2), ErrorCode.UNSUPPORTED_SCHEMA_VERSION, "number 2"),
        (command(schema_version="1"), ErrorCode.UNSUPPORTED_SCHEMA_VERSION, "a string"),
        (command(schema_version=True), ErrorCode.UNSUPPORTED_SCHEMA_VERSION, "a boolean"),
        (command(staff=...), ErrorCode.MISSING_STAFF, "needs the staff member's id"),
        (command(staff=""), ErrorCode.MISSING_STAFF, "needs the staff member's id"),
        (command(staff="   "), ErrorCode.MISSING_STAFF, "needs the staff member's id"),
        (command(staff=None), ErrorCode.MISSING_STAFF, "needs the staff member's id"),
        (command(staff="Nurse Jane"), ErrorCode.MISSING_STAFF, "not a name"),
        (command(kind=...), ErrorCode.INVALID_COMMAND, "kind: Field required"),
        (command(kind="reboot"), ErrorCode.UNKNOWN_KIND, "unknown command kind"),
        (command(kind="pause"), ErrorCode.TOPIC_MISMATCH, "'pause' was sent on the 'acknowledge'"),
        (command(session="S-2"), ErrorCode.TOPIC_MISMATCH, "session 'S-2'"),
        (command(alarm_id="not-a-uuid"), ErrorCode.INVALID_COMMAND, "alarm_id"),
        (command(alarm_id=...), ErrorCode.INVALID_COMMAND, "alarm_id: Field required"),
        (command(issued_at="2025-03-01T09:00:00"), ErrorCode.INVALID_COMMAND, "issued_at"),
        (command(command_id=...), ErrorCode.INVALID_COMMAND, "command_id: Field required"),
        (command(command_id="has space"), ErrorCode.INVALID_COMMAND, "command_id"),
        (command(colour="red"), ErrorCode.INVALID_COMMAND, "colour: Extra inputs"),
    ],
)
def test_a_bad_command_names_its_problem(body: dict[str, Any], code: ErrorCode, words: str) -> None:
    error = error_of(parse(body))
    assert error.code is code, error
    assert words in error.message, error.message


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": 901}, "duration_s"),
        ({"duration_s": 300.0}, "duration_s: Input should be a valid integer"),
        ({"duration_s": "300"}, "duration_s: Input should be a valid integer"),
        ({"participant": "Jane Doe"}, "participant"),
    ],
)
def test_pause_fields_are_strict(changes: dict[str, Any], words: str) -> None:
    error = error_of(parse(command("pause", **changes), "pause"))
    assert error.code is ErrorCode.INVALID_COMMAND
    assert words in error.message


def test_the_topic_is_checked_first() -> None:
    assert error_of(parse(command(), topic="vitals/SITE-1/alarms/S-1/P-1")).code is (
        ErrorCode.INVALID_TOPIC
    )
    bad_session = error_of(parse(command(), topic="vitals/SITE-1/commands/_x/acknowledge/d"))
    assert bad_session.code is ErrorCode.INVALID_TOPIC
    assert bad_session.session is None
    assert bad_session.reply().session is None
    unknown = error_of(parse(command(), topic="vitals/SITE-1/commands/S-1/reboot/d"))
    assert unknown.code is ErrorCode.UNKNOWN_KIND
    no_account = error_of(parse(command(), topic="vitals/SITE-1/commands/S-1/acknowledge"))
    assert no_account.code is ErrorCode.INVALID_TOPIC
    bad_account = error_of(parse(command(), topic="vitals/SITE-1/commands/S-1/acknowledge/_d"))
    assert (bad_account.code, bad_account.session) == (ErrorCode.INVALID_TOPIC, SESSION)
    assert "account" in bad_account.message


def test_a_retained_command_is_refused() -> None:
    raw = json.dumps(command()).encode()
    topic = TOPICS_.command(SESSION, "acknowledge", ACCOUNT)
    error = error_of(parse_command(topic, raw, retained=True))
    assert error.code is ErrorCode.RETAINED
    assert error.command_id == "cmd-1"


@pytest.mark.parametrize(
    ("raw", "command_id"),
    [
        # the reproduction of issue 9: the last "staff" won
        (b'{"staff": "RN-07", "staff": "MD-CHIEF-01"}', "cmd-1"),
        (b'{"command_id": "cmd-1", "command_id": "cmd-2"}', None),  # no id a sender could match
        (b'{"alarm_id": {"x": 1, "x": 2}}', "cmd-1"),  # nested objects too
    ],
)
def test_a_key_given_twice_is_refused(raw: bytes, command_id: str | None) -> None:
    body = json.dumps(command()).encode()
    payload = body[:-1] + b", " + raw[1:]  # the valid command's keys, then the repeated ones
    error = error_of(parse(payload))
    assert error.code is ErrorCode.DUPLICATE_KEY
    assert error.command_id == command_id
    assert "MD-CHIEF" not in error.message
    # invalid JSON after the repeated key is invalid JSON, never a crash of the parser
    assert error_of(parse(payload[:-1])).code is ErrorCode.INVALID_JSON


@pytest.mark.timeout(10)  # quadratic counting of the keys would take minutes
def test_a_feed_payload_with_many_repeated_keys_is_refused_in_linear_time() -> None:
    payload = b"{" + b", ".join(b'"k%d": 1, "k%d": 2' % (n, n) for n in range(50_000)) + b"}"
    with pytest.raises(DuplicateKeyError):
        load_json(payload)


def test_a_relay_acts_as_any_listed_staff_member_within_the_members_roles() -> None:
    directory = StaffDirectory.of(
        [
            StaffMember(id="RN-07", roles=(StaffRole.ROOM_STAFF,), accounts=("dash-a",)),
            StaffMember(id="MD-01", roles=(StaffRole.MEDICAL_MONITOR,)),
        ],
        relays=["console"],
    )

    def outcome(account: str, staff: str, kind: str = "acknowledge") -> ErrorCode | None:
        topic = TOPICS_.command(SESSION, kind, account)
        parsed = parse_command(topic, json.dumps(command(kind, staff=staff)).encode())
        assert not isinstance(parsed, CommandError), parsed
        refused = directory.check(topic, parsed)
        return None if refused is None else refused.code

    assert outcome("console", "RN-07", "dose") is None
    assert outcome("console", "MD-01") is None
    assert outcome("console", "MD-01", "consciousness") is ErrorCode.NOT_AUTHORIZED
    assert outcome("console", "NOBODY") is ErrorCode.UNKNOWN_STAFF
    assert outcome("dash-a", "RN-07", "consciousness") is None
    assert outcome("dash-a", "MD-01") is ErrorCode.NOT_AUTHORIZED
    assert outcome("dash-b", "RN-07") is ErrorCode.NOT_AUTHORIZED
    parsed = parse(command())
    assert isinstance(parsed, AcknowledgeCommand)
    refused = StaffDirectory.of([]).check(TOPICS_.command(SESSION, "acknowledge", "x"), parsed)
    assert refused is not None and refused.code is ErrorCode.UNKNOWN_STAFF  # no list: no one


def test_errors_echo_what_could_be_read_but_never_payload_values() -> None:
    body = command(alarm_id="Jane Doe's alarm", staff="RN-07")
    error = error_of(parse(body))
    assert (error.command_id, error.session, error.kind) == ("cmd-1", SESSION, "acknowledge")
    assert "Jane" not in error.message
    reply = error.reply()
    assert not reply.ok
    assert reply.error is ErrorCode.INVALID_COMMAND
    assert reply.command_id == "cmd-1"
    assert "Jane" not in reply.model_dump_json()


def test_parse_command_never_raises_on_random_bytes() -> None:
    rng = random.Random(5)
    topic = TOPICS_.command(SESSION, "pause", ACCOUNT)
    for _ in range(2000):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        assert isinstance(parse_command(topic, payload), CommandError)


# --- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnknownAlarmError("no alarm x"), ErrorCode.UNKNOWN_ALARM),
        (AlarmResolvedError("resolved"), ErrorCode.ALARM_RESOLVED),
        (AlarmPendingError("pending"), ErrorCode.ALARM_PENDING),
        (StaffRequiredError("staff"), ErrorCode.MISSING_STAFF),
        (UnknownParticipantError("who"), ErrorCode.UNKNOWN_PARTICIPANT),
        (PauseError("too long"), ErrorCode.PAUSE_REJECTED),
        (LifecycleError("other"), ErrorCode.REJECTED),
        (KeyError("participant P-9 is not in session S-1"), ErrorCode.UNKNOWN_PARTICIPANT),
        (RuntimeError("secret internals"), ErrorCode.INTERNAL),
    ],
)
def test_lifecycle_errors_become_replies(error: Exception, code: ErrorCode) -> None:
    parsed = parse(command())
    assert isinstance(parsed, AcknowledgeCommand)
    reply = reply_for_error(parsed, error)
    assert (reply.ok, reply.error, reply.command_id, reply.kind) == (
        False,
        code,
        "cmd-1",
        "acknowledge",
    )
    assert reply.reason
    assert "secret" not in reply.reason
    if isinstance(error, KeyError):
        assert reply.reason == "participant P-9 is not in session S-1"
    assert CommandReply.model_validate_json(reply.model_dump_json()) == reply


def test_every_refusal_code_has_a_reply_code() -> None:
    assert set(REFUSAL_CODES) == set(RefusalCode)


def test_a_refusal_maps_by_its_code_not_its_class() -> None:
    """The contract knows detection's errors only by the code they carry."""

    class LaterError(RefusedError):
        code = RefusalCode.ALARM_PENDING

    parsed = parse(command())
    assert isinstance(parsed, AcknowledgeCommand)
    reply = reply_for_error(parsed, LaterError("not yet"))
    assert (reply.error, reply.reason) == (ErrorCode.ALARM_PENDING, "not yet")


def test_an_ok_reply_has_no_error() -> None:
    parsed = parse(command())
    assert isinstance(parsed, AcknowledgeCommand)
    reply = reply_ok(parsed, alarm_events=2)
    assert reply.ok and reply.error is None and reply.alarm_events == 2
    with pytest.raises(ValidationError, match="ok reply"):
        CommandReply(command_id="x", session=SESSION, kind=None, ok=True, error=ErrorCode.INTERNAL)


# --- payload models -------------------------------------------------------------------------


def alarm(**changes: Any) -> AlarmEvent:
    fields: dict[str, Any] = {
        "alarm_id": ALARM_ID,
        "session": SESSION,
        "participant": "P-001",
        "rule": "hr-high",
        "parameter": Parameter.HEART_RATE,
        "priority": AlarmPriority.MEDIUM,
        "category": AlarmCategory.PHYSIOLOGICAL,
        "state": AlarmState.ACTIVE,
        "message": "Heart rate high",
        "raised_at": T0,
        "occurred_at": T0,
        "sequence": 1,
    }
    return AlarmEvent.model_validate(fields | changes)


@pytest.mark.parametrize("spec", TOPICS, ids=lambda spec: spec.name)
def test_every_payload_round_trips(spec: Any) -> None:
    for example in _examples(spec):
        model = type(example)
        assert model in spec.payloads
        text = example.model_dump_json()
        assert json.loads(text)["schema_version"] == 1
        assert model.model_validate_json(text) == example


def test_payloads_refuse_unknown_versions_and_fields() -> None:
    status = ServiceStatus(
        service="detector", client_id="c", state=ServiceState.ONLINE, reason=StatusReason.CONNECTED
    )
    data = json.loads(status.model_dump_json())
    with pytest.raises(ValidationError, match="schema_version"):
        ServiceStatus.model_validate(data | {"schema_version": 2})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ServiceStatus.model_validate(data | {"colour": "red"})
    with pytest.raises(ValidationError, match="online goes with reason connected"):
        ServiceStatus.model_validate(data | {"reason": "shutdown"})


def test_a_snapshot_holds_current_alarms_of_its_session() -> None:
    empty = ActiveAlarms(session=SESSION, as_of=T0, sequence=0)
    assert json.loads(empty.model_dump_json())["alarms"] == []
    with pytest.raises(ValidationError, match="has resolved"):
        ActiveAlarms(
            session=SESSION, as_of=T0, sequence=1, alarms=(alarm(state=AlarmState.RESOLVED),)
        )
    with pytest.raises(ValidationError, match="belongs to session"):
        ActiveAlarms(session="S-2", as_of=T0, sequence=1, alarms=(alarm(),))
    with pytest.raises(ValidationError, match="newer than the snapshot"):
        ActiveAlarms(session=SESSION, as_of=T0, sequence=0, alarms=(alarm(),))


def reading(seconds: float, participant: str = "P-001") -> Reading:
    return Reading(
        session=SESSION,
        participant=participant,
        device="hr-1",
        kind=ReadingKind.HEART_RATE,
        values={Parameter.HEART_RATE: 80.0},
        received_at=T0 + dt.timedelta(seconds=seconds),
    )


def test_a_batch_is_one_participant() -> None:
    numbering = BatchNumbering("gw-1")
    first = numbering.batch([reading(1)], T0)
    second = numbering.batch([reading(2)], T0)
    other = numbering.batch([reading(2, "P-002")], T0)
    assert (first.sequence, second.sequence, other.sequence) == (1, 2, 1)
    with pytest.raises(ValidationError, match="batch's session and participant"):
        VitalsBatch(
            gateway="gw-1",
            run=numbering.run,
            sequence=3,
            session=SESSION,
            participant="P-001",
            sent_at=T0,
            readings=(reading(3), reading(3, "P-002")),
        )


# --- loss counting and escalation -----------------------------------------------------------


def test_the_tracker_counts_loss_duplicates_late_batches_and_restarts() -> None:
    numbering = BatchNumbering("gw-1")
    batches = [numbering.batch([reading(i)], T0) for i in range(1, 8)]
    tracker = SequenceTracker()
    seen = [tracker.observe(batches[i]) for i in (0, 1, 4, 1, 2, 6)]
    assert seen == [True, True, True, False, True, True]
    assert (tracker.stats.lost, tracker.stats.late, tracker.stats.duplicates) == (2, 1, 1)
    restarted = BatchNumbering("gw-1")
    tracker.observe(restarted.batch([reading(9)], T0))
    tracker.observe(restarted.batch([reading(10)], T0))
    assert (tracker.stats.restarts, tracker.stats.lost) == (1, 2)


def test_a_huge_gap_is_counted_by_arithmetic_and_later_batches_still_count() -> None:
    """A jump to the largest number the payload allows is one remembered range, not a set of
    2**63 numbers; the gateway's real batches after it fill that range (late, not duplicate)."""
    numbering = BatchNumbering("gw-1")
    first, second, third = (numbering.batch([reading(i)], T0) for i in range(1, 4))
    tracker = SequenceTracker()
    assert tracker.observe(first)
    hostile = first.model_copy(update={"sequence": MAX_BATCH_SEQUENCE})
    assert tracker.observe(hostile)
    assert tracker.stats.lost == MAX_BATCH_SEQUENCE - 2
    assert [tracker.observe(batch) for batch in (second, third, third)] == [True, True, False]
    stats = tracker.stats
    assert (stats.lost, stats.late, stats.duplicates) == (MAX_BATCH_SEQUENCE - 4, 2, 1)
    # the tracker itself takes any number: beyond the payload's bound too, and in a new run
    beyond = hostile.model_copy(update={"sequence": 10**30})
    assert tracker.observe(beyond)
    assert tracker.stats.lost == 10**30 - 5
    restarted = (
        BatchNumbering("gw-1").batch([reading(4)], T0).model_copy(update={"sequence": 2**63})
    )
    assert tracker.observe(restarted)
    assert (tracker.stats.restarts, tracker.stats.lost) == (1, 10**30 - 5 + 2**63 - 1)


def test_the_payload_bounds_the_batch_number() -> None:
    batch = BatchNumbering("gw-1").batch([reading(1)], T0).model_dump(mode="json")
    assert VitalsBatch.model_validate(batch | {"sequence": MAX_BATCH_SEQUENCE})
    for sequence in (MAX_BATCH_SEQUENCE + 1, 10**30):
        with pytest.raises(ValidationError, match="sequence"):
            VitalsBatch.model_validate_json(json.dumps(batch | {"sequence": sequence}))


def test_the_gap_record_is_bounded_and_forgets_the_oldest_gaps() -> None:
    numbering = BatchNumbering("gw-1")
    batches = [numbering.batch([reading(i)], T0) for i in range(1, 12)]
    tracker = SequenceTracker(max_gaps=2)
    for index in (0, 2, 4, 6, 10):  # gaps: 2, 4, 6, 8-10 (numbers are index + 1)
        tracker.observe(batches[index])
    assert (tracker.stats.lost, tracker.stats.forgotten) == (6, 2)
    assert not tracker.observe(batches[1])  # its gap was forgotten: it stays lost
    assert tracker.observe(batches[5])
    assert tracker.observe(batches[8])  # splits 8-10 in two; 6's gap is gone, so still 2 ranges
    assert (tracker.stats.lost, tracker.stats.late, tracker.stats.forgotten) == (4, 2, 2)
    assert [tracker.observe(batches[i]) for i in (7, 9, 3)] == [True, True, False]
    assert (tracker.stats.lost, tracker.stats.late, tracker.stats.duplicates) == (2, 4, 2)


def test_a_receiver_that_starts_late_counts_no_loss() -> None:
    numbering = BatchNumbering("gw-1")
    batches = [numbering.batch([reading(i)], T0) for i in range(1, 5)]
    tracker = SequenceTracker()
    for batch in batches[2:]:
        tracker.observe(batch)
    assert tracker.stats.lost == 0


def test_escalation_routing() -> None:
    tracker = EscalationTracker()
    pending = alarm(state=AlarmState.PENDING, priority=AlarmPriority.HIGH)
    medium = alarm(sequence=2)
    escalated = alarm(sequence=3, priority=AlarmPriority.HIGH, escalation_level=1)
    acknowledged = alarm(
        sequence=4, state=AlarmState.ACKNOWLEDGED, acknowledged_by="RN-07", escalation_level=1
    )
    resolved = alarm(sequence=5, state=AlarmState.RESOLVED, escalation_level=1)
    routed = [
        tracker.route(event) for event in (pending, medium, escalated, acknowledged, resolved)
    ]
    reasons = [None if message is None else message.reason for message in routed]
    assert reasons == [
        None,
        None,
        EscalationReason.ESCALATED,
        EscalationReason.UPDATE,
        EscalationReason.UPDATE,
    ]

    other = uuid.uuid4()
    high = alarm(alarm_id=other, priority=AlarmPriority.HIGH, sequence=6)
    acked = alarm(
        alarm_id=other,
        priority=AlarmPriority.HIGH,
        sequence=7,
        state=AlarmState.ACKNOWLEDGED,
        acknowledged_by="RN-07",
    )
    fell = alarm(alarm_id=other, sequence=8, state=AlarmState.ACKNOWLEDGED, acknowledged_by="RN")
    gone = alarm(alarm_id=other, sequence=9, state=AlarmState.RESOLVED)
    after = alarm(alarm_id=other, sequence=10, state=AlarmState.ACKNOWLEDGED, acknowledged_by="R")
    reasons = [
        None if (message := tracker.route(event)) is None else message.reason
        for event in (high, acked, fell, gone, after)
    ]
    assert reasons == [
        EscalationReason.HIGH_PRIORITY,
        EscalationReason.UPDATE,
        EscalationReason.UPDATE,
        EscalationReason.UPDATE,
        None,
    ]


def test_a_restarted_tracker_follows_the_current_high_alarms() -> None:
    high = alarm(priority=AlarmPriority.HIGH)
    tracker = EscalationTracker()
    tracker.seed([high, alarm(alarm_id=uuid.uuid4())])
    handled = alarm(state=AlarmState.ACKNOWLEDGED, acknowledged_by="RN-07", sequence=2)
    message = tracker.route(handled)
    assert message is not None and message.reason is EscalationReason.UPDATE


# --- the outbox -----------------------------------------------------------------------------


def put(outbox: Outbox, topic: str, priority: Priority, *, retain: bool = False) -> Any:
    return outbox.put(topic, topic.encode(), qos=1, retain=retain, priority=priority, now=0.0)


def drain(outbox: Outbox) -> list[str]:
    sent = []
    while (message := outbox.take()) is not None:
        outbox.acknowledged(message.key)
        sent.append(message.topic)
    return sent


def test_the_outbox_sends_in_order_and_requeues_unacknowledged_messages_first() -> None:
    outbox = Outbox(capacity=10)
    for index, priority in enumerate([Priority.ALARM, Priority.TELEMETRY, Priority.REPLY]):
        put(outbox, f"t{index}", priority)
    first = outbox.take()
    second = outbox.take()
    assert first is not None and second is not None
    outbox.acknowledged(first.key)
    put(outbox, "t3", Priority.TELEMETRY)
    assert outbox.requeue() == 1
    assert drain(outbox) == ["t1", "t2", "t3"]
    assert len(outbox) == 0


def test_a_full_outbox_drops_the_least_important_oldest_message() -> None:
    outbox = Outbox(capacity=3)
    put(outbox, "reading-1", Priority.TELEMETRY)
    put(outbox, "alarm-1", Priority.ALARM)
    put(outbox, "reading-2", Priority.TELEMETRY)
    result = put(outbox, "alarm-2", Priority.ALARM)
    assert result.evicted is not None and result.evicted.topic == "reading-1"
    put(outbox, "alarm-3", Priority.ALARM)
    refused = put(outbox, "reading-3", Priority.TELEMETRY)
    assert refused.rejected
    assert drain(outbox) == ["alarm-1", "alarm-2", "alarm-3"]


def test_retained_messages_supersede_their_queued_predecessor() -> None:
    outbox = Outbox(capacity=3)
    put(outbox, "alarm", Priority.ALARM)
    put(outbox, "snapshot", Priority.STATE, retain=True)
    put(outbox, "reading", Priority.TELEMETRY)
    newer = outbox.put("snapshot", b"new", qos=1, retain=True, priority=Priority.STATE, now=1.0)
    assert newer.superseded is not None and newer.evicted is None
    messages = []
    while (message := outbox.take()) is not None:
        messages.append((message.topic, message.payload))
    assert messages == [("alarm", b"alarm"), ("reading", b"reading"), ("snapshot", b"new")]


def test_a_superseded_message_in_flight_is_not_sent_again() -> None:
    outbox = Outbox(capacity=5)
    put(outbox, "snapshot", Priority.STATE, retain=True)
    in_flight = outbox.take()
    assert in_flight is not None
    outbox.put("snapshot", b"new", qos=1, retain=True, priority=Priority.STATE, now=1.0)
    assert outbox.requeue() == 0
    message = outbox.take()
    assert message is not None and message.payload == b"new"
    assert outbox.holds_retained("snapshot")
    outbox.acknowledged(message.key)
    assert not outbox.holds_retained("snapshot")


def test_a_full_outbox_says_so_loudly(caplog: pytest.LogCaptureFixture) -> None:
    link = MqttLink(host="127.0.0.1", port=1, client_id="offline", outbox_capacity=2)
    assert link.publish("r/1", b"{}")
    assert link.publish("a/1", b"{}", priority=Priority.ALARM)
    with caplog.at_level(logging.ERROR, logger="monitor.mqtt"):
        assert link.publish("a/2", b"{}", priority=Priority.ALARM)  # evicts r/1
        assert not link.publish("r/2", b"{}")  # everything queued matters more
    assert link.stats.dropped == {"telemetry": 2, "reply": 0, "alarm": 0, "state": 0}
    assert link.queued == link.stats.queued == 2
    assert "MQTT outbox full" in caplog.text
    with pytest.raises(ValueError, match="QoS 0 or 1"):
        link.publish("a/3", b"{}", qos=2)
    with pytest.raises(ValueError, match="delete the retained state"):
        link.publish("s/1", b"", retain=True)


def test_reconnect_delays_are_jittered_and_capped() -> None:
    backoff = Backoff(initial_s=0.2, max_s=4.0)
    rng = random.Random(1)
    for attempt in range(100):
        ceiling = min(4.0, 0.2 * 2**attempt)
        delays = {backoff.delay(attempt, rng) for _ in range(20)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1

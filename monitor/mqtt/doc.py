"""docs/mqtt.md, generated from the contract and the payload models so it cannot drift from them.

``tests/test_mqtt_doc.py`` fails when the file differs from :func:`render`; regenerate with
``.venv/bin/python -m monitor.mqtt.doc > docs/mqtt.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid

from pydantic import BaseModel

from monitor.models import (
    DEFAULT_PAUSE_S,
    MAX_PAUSE_S,
    AlarmCategory,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    Consciousness,
    DeviceEvent,
    DeviceEventType,
    DeviceKind,
    DeviceState,
    Parameter,
    Reading,
    ReadingKind,
    RefusalCode,
    RefusedError,
)
from monitor.mqtt.client import (
    BATCH_INTERVAL_S,
    COMMAND_INTAKE_CAPACITY,
    COMMAND_INTAKE_SUFFIX,
    DEFAULT_OUTBOX_CAPACITY,
    INTAKE_BATCH,
    RECONNECT_BACKOFF,
    REFUSAL_REPLY_INTERVAL_S,
    SESSION_INTAKE_CAPACITY,
)
from monitor.mqtt.contract import TOPICS, Role, TopicSpec
from monitor.mqtt.outbox import Priority
from monitor.mqtt.payloads import (
    ERROR_DESCRIPTIONS,
    MAX_BATCH_READINGS,
    MAX_COMMAND_BYTES,
    SCHEMA_VERSION,
    AcknowledgeCommand,
    ActiveAlarms,
    AlarmMessage,
    CommandReply,
    ConsciousnessCommand,
    DeviceStatus,
    DoseCommand,
    EscalationMessage,
    EscalationReason,
    PauseCommand,
    ResumeCommand,
    ServiceState,
    ServiceStatus,
    StatusReason,
    VitalsBatch,
    parse_command,
    reply_for_error,
    reply_ok,
)
from monitor.mqtt.staff import ROLE_COMMANDS
from monitor.mqtt.topics import INVALID_SESSION, CommandKind, Topics
from monitor.mqtt.tracking import MAX_REMEMBERED_GAPS

__all__ = ["REGENERATE", "render"]

REGENERATE = ".venv/bin/python -m monitor.mqtt.doc > docs/mqtt.md"

_TOPICS = Topics(root="vitals", site="SITE-1")
_SESSION = "DEMO-MDMA-1"
_START = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
_ALARM_ID = uuid.UUID("5a0c35c4-2f7e-5d43-9a55-0d6a7c1f3b21")
_RUN = uuid.UUID("0f5b8a9e-3c1d-4e2f-8a7b-6c5d4e3f2a1b")
_ACCOUNT = Role.DASHBOARD.value


def _at(seconds: float) -> dt.datetime:
    return _START + dt.timedelta(seconds=seconds)


def _batch() -> VitalsBatch:
    readings = (
        Reading(
            session=_SESSION,
            participant="P-001",
            device="hr-p-001",
            kind=ReadingKind.HEART_RATE,
            values={Parameter.HEART_RATE: 92.0},
            received_at=_at(1.0),
        ),
        Reading(
            session=_SESSION,
            participant="P-001",
            device="bp-p-001",
            kind=ReadingKind.BLOOD_PRESSURE,
            values={
                Parameter.SYSTOLIC_BP: 142.0,
                Parameter.DIASTOLIC_BP: 88.0,
                Parameter.MEAN_ARTERIAL_BP: 106.0,
                Parameter.PULSE_RATE: 96.0,
            },
            measured_at=_at(1.5),
            received_at=_at(1.9),
        ),
    )
    return VitalsBatch(
        gateway="gw-room-1",
        run=_RUN,
        sequence=42,
        session=_SESSION,
        participant="P-001",
        sent_at=_at(2.0),
        readings=readings,
    )


def _device() -> DeviceStatus:
    event = DeviceEvent(
        session=_SESSION,
        participant="P-001",
        device="spo2-p-001",
        device_kind=DeviceKind.PULSE_OXIMETER,
        event=DeviceEventType.STATE_CHANGED,
        state=DeviceState.LOST,
        occurred_at=_at(30.0),
        detail="link dropped; reconnecting",
    )
    return DeviceStatus(event=event)


def _alarm(**changes: object) -> AlarmEvent:
    fields: dict[str, object] = {
        "alarm_id": _ALARM_ID,
        "session": _SESSION,
        "participant": "P-001",
        "rule": "hr-high-high",
        "parameter": Parameter.HEART_RATE,
        "priority": AlarmPriority.HIGH,
        "category": AlarmCategory.PHYSIOLOGICAL,
        "state": AlarmState.ACTIVE,
        "value": 134.0,
        "threshold": 131.0,
        "message": "Heart rate 134 bpm ≥ 131 for 1 min",
        "raised_at": _at(10.0),
        "occurred_at": _at(70.0),
        "sequence": 7,
    }
    fields.update(changes)
    return AlarmEvent.model_validate(fields)


def _snapshots() -> list[ActiveAlarms]:
    return [
        ActiveAlarms(session=_SESSION, as_of=_at(70.0), sequence=7, alarms=(_alarm(),)),
        ActiveAlarms(session=_SESSION, as_of=_at(400.0), sequence=9),
    ]


def _escalation() -> EscalationMessage:
    event = _alarm(
        occurred_at=_at(370.0),
        escalation_level=2,
        sequence=8,
        message="Heart rate 134 bpm ≥ 131 for 1 min (escalated to level 2)",
    )
    return EscalationMessage(reason=EscalationReason.ESCALATED, event=event)


def _commands() -> list[BaseModel]:
    common = {"schema_version": SCHEMA_VERSION, "session": _SESSION, "staff": "RN-07"}
    fields: list[tuple[type[BaseModel], dict[str, object]]] = [
        (
            AcknowledgeCommand,
            {"kind": "acknowledge", "command_id": "9b2f6c1e-0001", "issued_at": _at(80.0)}
            | {"alarm_id": _ALARM_ID},
        ),
        (
            PauseCommand,
            {"kind": "pause", "command_id": "9b2f6c1e-0002", "issued_at": _at(90.0)}
            | {"participant": "P-001", "duration_s": 300},
        ),
        (
            ResumeCommand,
            {"kind": "resume", "command_id": "9b2f6c1e-0003", "issued_at": _at(120.0)}
            | {"participant": "P-001"},
        ),
        (
            DoseCommand,
            {"kind": "dose", "command_id": "9b2f6c1e-0004", "issued_at": _at(1805.0)}
            | {"participant": "P-001", "given_at": _at(1800.0)},
        ),
        (
            ConsciousnessCommand,
            {"kind": "consciousness", "command_id": "9b2f6c1e-0005", "issued_at": _at(2400.0)}
            | {"participant": "P-001", "level": Consciousness.VOICE, "observed_at": _at(2395.0)},
        ),
    ]
    return [model.model_validate(common | values) for model, values in fields]


class _UnknownAlarmError(RefusedError):
    """Stands for detection's unknown-alarm error: the contract knows refusals by code only."""

    code = RefusalCode.UNKNOWN_ALARM


def _replies() -> list[CommandReply]:
    acknowledge, pause = _commands()[:2]
    assert isinstance(acknowledge, AcknowledgeCommand) and isinstance(pause, PauseCommand)
    unknown = _UnknownAlarmError(f"no alarm {_ALARM_ID} in session {_SESSION}")
    garbage = parse_command(_TOPICS.command(_SESSION, "pause", _ACCOUNT), b'{"kind": "pause"')
    assert not isinstance(garbage, BaseModel)
    return [
        reply_ok(acknowledge, alarm_events=1),
        reply_for_error(acknowledge, unknown),
        garbage.reply(),
    ]


def _statuses() -> list[ServiceStatus]:
    def status(state: ServiceState, reason: StatusReason) -> ServiceStatus:
        return ServiceStatus(
            service="detector", client_id="monitor-SITE-1-detector", state=state, reason=reason
        )

    return [
        status(ServiceState.ONLINE, StatusReason.CONNECTED),
        status(ServiceState.OFFLINE, StatusReason.SHUTDOWN),
        status(ServiceState.OFFLINE, StatusReason.CONNECTION_LOST),
    ]


def _examples(spec: TopicSpec) -> list[BaseModel]:
    examples: dict[str, list[BaseModel]] = {
        "Readings": [_batch()],
        "Device status": [_device()],
        "Alarm events": [AlarmMessage(event=_alarm())],
        "Active alarms": list(_snapshots()),
        "Escalations": [_escalation()],
        "Commands": _commands(),
        "Command replies": list(_replies()),
        "Service status": list(_statuses()),
    }
    return examples[spec.name]


def _example_topic(spec: TopicSpec) -> str:
    topics: dict[str, str] = {
        "Readings": _TOPICS.readings(_SESSION, "P-001"),
        "Device status": _TOPICS.device(_SESSION, "P-001", "spo2-p-001"),
        "Alarm events": _TOPICS.alarms(_SESSION, "P-001"),
        "Active alarms": _TOPICS.active_alarms(_SESSION),
        "Escalations": _TOPICS.escalations(_SESSION, "P-001"),
        "Commands": _TOPICS.command(_SESSION, "acknowledge", _ACCOUNT),
        "Command replies": _TOPICS.replies(_SESSION),
        "Service status": _TOPICS.status("detector"),
    }
    return topics[spec.name]


def _roles(roles: tuple[Role, ...]) -> str:
    return ", ".join(role.value for role in roles)


def _schema(model: type[BaseModel]) -> list[str]:
    text = json.dumps(model.model_json_schema(), indent=2, ensure_ascii=False)
    return [
        f"<details><summary>JSON Schema: {model.__name__}</summary>",
        "",
        "```json",
        text,
        "```",
        "",
        "</details>",
        "",
    ]


def _anchor(name: str) -> str:
    return name.lower().replace(" ", "-")


def _table() -> list[str]:
    lines = [
        "| topic | payload | QoS | retained | published by | read by |",
        "|---|---|---|---|---|---|",
    ]
    for spec in TOPICS:
        payloads = ", ".join(model.__name__ for model in spec.payloads)
        lines.append(
            f"| [`{spec.pattern}`](#{_anchor(spec.name)}) | {payloads} | {spec.qos} | "
            f"{'yes' if spec.retained else 'no'} | {_roles(spec.publishers)} | "
            f"{_roles(spec.readers)} |"
        )
    return [*lines, ""]


def _topic_section(spec: TopicSpec) -> list[str]:
    lines = [
        f"### {spec.name}",
        "",
        f"`<root>/<site>/{spec.pattern}`, e.g. `{_example_topic(spec)}`",
        "",
        f"- direction: {_roles(spec.publishers)} → {_roles(spec.readers)}",
        f"- QoS {spec.qos}, {'retained' if spec.retained else 'not retained'}",
        f"- payload: {', '.join(f'`{model.__name__}`' for model in spec.payloads)}",
        "",
        spec.summary,
        "",
    ]
    if spec.name == "Escalations":
        lines += _escalation_rule()
    examples = _examples(spec)
    lines += ["Example" + ("s" if len(examples) > 1 else "") + ":", "", "```json"]
    lines += [example.model_dump_json() for example in examples]
    lines += ["```", ""]
    for model in spec.payloads:
        lines += _schema(model)
    return lines


def _escalation_rule() -> list[str]:
    return [
        "An alarm event goes to the escalation topic when",
        "",
        "1. its `state` is `active` (announced, unacknowledged) and `escalation_level > 0`: "
        "reason `escalated` (an unacknowledged medium alarm became high at level 1, or an "
        "unacknowledged high alarm paged the backup at level 2 and up), or",
        "2. its `state` is `active` and its `priority` is `high`: reason `high_priority` (the "
        "medical monitor hears of a high alarm at once, not only after the backup interval), or",
        "3. it is a later event of an alarm that went there under 1 or 2, or it has "
        "`escalation_level > 0` in any state: reason `update` (acknowledged, priority fell, "
        "resolved), so the medical monitor also learns that it was handled. After `resolved` the "
        "alarm is forgotten.",
        "",
        "Pending alarms (not yet announced) never go there. The same event is also on the alarm "
        "topic.",
        "",
    ]


def _commands_intro() -> list[str]:
    return [
        "Every command is a JSON object with `schema_version` "
        f"({SCHEMA_VERSION}, required), `kind` (equal to the topic's last level), `command_id` "
        "(chosen by the sender: 1-64 letters, digits, `.`, `_`, `:`, `-`; a UUID fits; echoed in "
        "the reply), `session` (equal to the topic's), `staff` (the staff member's code, "
        "required for every command), `issued_at` (the sender's clock, ISO 8601 with offset) and "
        "its target:",
        "",
        "| kind | target and fields | carried out as |",
        "|---|---|---|",
        "| `acknowledge` | `alarm_id` | `DetectionPipeline.acknowledge(alarm_id, staff, moment)` |",
        f"| `pause` | `participant`, `duration_s` (whole seconds, 1-{MAX_PAUSE_S}, default "
        f"{DEFAULT_PAUSE_S}) | `DetectionPipeline.pause(participant, staff, duration_s, moment)` |",
        "| `resume` | `participant` | `AlarmLifecycle.resume(participant, staff, t_ms=...)` |",
        "| `dose` | `participant`, `given_at` | "
        "`DetectionPipeline.mark_dose(participant, given_at)` |",
        "| `consciousness` | `participant`, `level` (ACVPU), `observed_at` | "
        "`DetectionPipeline.set_consciousness(participant, observed_at, level)` |",
        "",
        f"Unknown fields are refused, numbers are not read from strings, and a payload over "
        f"{MAX_COMMAND_BYTES} bytes is refused unread, and so is JSON with a key given twice "
        "in one object (`duplicate_key`: readers disagree on which value counts; readings and "
        "device events with one are dropped and counted the same way). `parse_command(topic, "
        "payload)` never raises; it checks, in this order, the topic (its session, kind and "
        "account levels), the size, the JSON, the retain flag, `kind`, `schema_version`, "
        "`staff`, the fields, and the payload's `session` against the topic's; then the "
        "detector checks `staff` against the sending account (below) and the `command_id` "
        "against the commands it remembers. The first problem becomes the error reply.",
        "",
        *_staff_section(),
    ]


def _staff_section() -> list[str]:
    lines = [
        "#### Who may command: staff and broker accounts",
        "",
        "A command's `staff` is checked against the sender's broker account, which the payload "
        "cannot forge: the ACL's one `pattern write vitals/+/commands/+/+/%u` line lets every "
        "account publish commands only on the last level named after itself "
        "(`%u`, its user name), and the detector reads that level. The site file's `[[staff]]` "
        "list (docs/configuration.md) names each staff member by code (never a name), the "
        "`accounts` they send from and their `roles`; `[[relays]]` names accounts that log staff "
        "in themselves and relay their commands (a web console), which may act as any listed "
        "member. A command is carried out only if",
        "",
        "1. its `staff` is in the list (else `unknown_staff`),",
        "2. the topic's account is one of that member's `accounts` or a relay "
        "(else `not_authorized`), and",
        "3. one of the member's roles allows the kind (else `not_authorized`):",
        "",
        "| role | may give |",
        "|---|---|",
    ]
    for role, kinds in ROLE_COMMANDS.items():
        allowed = ", ".join(f"`{kind.value}`" for kind in CommandKind if kind in kinds)
        lines.append(f"| `{role.value}` | {allowed} |")
    return [
        *lines,
        "",
        "Every refusal is answered and counted like a parse error. A site without `[[staff]]` "
        "refuses every command. An account shared by several people (one dashboard login per "
        "room) lets each of them act as every member listed with it: give anyone whose "
        "identity matters (a medical monitor) an account of their own, or send through a relay "
        "that logs each person in. A broker without accounts (the embedded broker of `monitor "
        "run`, or any broker that admits anonymous clients) cannot bind the account level: "
        "senders use the account name the staff list gives them (the demo's staff send as "
        "`local`), and anyone who reaches the broker can claim it. That is why the embedded "
        "broker listens on loopback only; a site with staff on other machines uses a broker "
        "with accounts and the example ACL (config/mosquitto/).",
        "",
    ]


def _replies_section() -> list[str]:
    lines = [
        "## Replies and errors",
        "",
        f"Commands are answered on `<root>/<site>/replies/<session>` (QoS 1, not "
        f"retained), `ok: true` or `ok: false` with an `error` code and a human `reason`, "
        f"carrying the command's `command_id`, `session` and `kind` as far as they could be "
        f"read, and `answers`: how many commands the reply answers (1, or more for a summary). "
        f"A command whose topic names no valid session is answered on "
        f"`replies/{INVALID_SESSION}` (no session identifier starts with `_`). Reasons name "
        f"fields, never echo values from the payload. Replies leave on the command intake's "
        f"own connection, so one may arrive before the alarm events its command caused (match "
        f"those by `alarm_id` and `sequence`).",
        "",
        f"- **Refused commands are answered coalesced, per session**: the first command that "
        f"cannot be parsed is answered at once; those refused within the next "
        f"{REFUSAL_REPLY_INTERVAL_S:g} s on the same reply topic are answered by one summary "
        f"reply at its end (`answers` says how many, `error` is the most common code, `reason` "
        f"counts each code; no `command_id`). A flood of N junk commands costs about one reply "
        f"a second, not N, and every refusal is counted per code "
        f"(`monitor_command_rejected_total`, `monitor_command_refusals_coalesced_total`) and "
        f"summarised in the log; the channel keeps running whatever arrives.",
        "- Valid commands are carried out one at a time in the order they arrived, and each "
        "gets its own reply; so does a well-formed command refused for who sent it "
        "(`unknown_staff`, `not_authorized`) or for a reused `command_id`: the person acting "
        "must learn that their own command was not carried out.",
        "- A command redelivered with the same `session` and `command_id` (QoS 1 is at least "
        "once, and a sender may retry) is not carried out again; its first reply is published "
        "again. It counts as the same command when everything but `issued_at` is equal (a "
        "retry may be stamped anew); a `command_id` reused for a different command (another "
        "kind, `staff` or field) is refused with `command_id_reused`, never answered with the "
        "first command's reply.",
        "- Commands that parse but cannot be carried out (unknown alarm, alarm still pending, "
        "pause out of bounds...) are always answered.",
        "",
        "| error | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{code.value}` | {text} |" for code, text in ERROR_DESCRIPTIONS.items()]
    return [*lines, ""]


def _connection_section() -> list[str]:
    backoff = RECONNECT_BACKOFF
    return [
        "## Connections, sessions and the outbox",
        "",
        "- **Protocol**: MQTT 5 when the broker speaks it, else 3.1.1 (a broker that refuses "
        'version 5 with "unsupported protocol version" gets 3.1.1 from then on). All payloads '
        "are UTF-8 JSON; over MQTT 5 messages carry content type `application/json`.",
        "- **Persistent sessions**: every service connects with a stable client id (the site "
        "file's `client_id`, else `monitor-<site>-<service>`; two services must never share "
        "one) and `clean_start = false` with a session expiry of a day (MQTT 5) or "
        "`clean_session = false` (3.1.1), so the broker keeps QoS 1 subscriptions and queues "
        "commands while the detector reconnects.",
        f"- **Command intake on its own connection**: the detector reads commands on a second "
        f"connection, client id the detector's followed by `{COMMAND_INTAKE_SUFFIX}`, with its "
        f"own persistent session, and sends its replies there. A broker queues a session's "
        f"messages in one line, so a backlog or a flood of commands on the detector's one "
        f"connection used to hold back the readings behind it and the acknowledgements of its "
        f"alarms (10,000 queued junk commands knocked it off the broker). Now a flood can only "
        f"delay commands: the connection that carries readings, alarms, snapshots and status "
        f"never subscribes to commands (it unsubscribes them on every connect, for a session an "
        f"older version left subscribed). Intake is bounded per session: at most "
        f"{COMMAND_INTAKE_CAPACITY} received commands wait to be handled, at most "
        f"{SESSION_INTAKE_CAPACITY} of one session (the topic's session level); beyond that "
        f"the newest is dropped, neither carried out nor answered, counted "
        f"(`monitor_command_dropped_total`) and logged at ERROR. Sessions take turns, one "
        f"command each, so a flood on one session cannot hold back another's; a session's "
        f"commands keep their order. The service handles them in slices of {INTAKE_BATCH} "
        f"between which detection and publishing run. "
        f"`monitor_command_backlog` and `monitor_mqtt_intake_connected` are on `/metrics`.",
        "- **Gateways** (`monitor gateway`, one per BLE adapter: a room, about ten links) "
        f"publish every {BATCH_INTERVAL_S * 1000:g} ms what their wearables sent as one "
        "`VitalsBatch` per participant (split at "
        f"{MAX_BATCH_READINGS} readings), numbered 1, 2, 3, ... per topic under the gateway's "
        "name (`gateway-<room>` unless `--name` says otherwise) with a new `run` on every start, "
        "and every device event, retained per device. A gateway's client id is "
        "`monitor-<site>-<name>`, or the site file's `client_id` followed by `-<name>`, so it "
        "never takes the detector's session. Gateways have no status topic (their broker user "
        "may write only `readings` and `devices`): a gateway that is gone shows as its "
        "participants' streams going stale. The detector (`monitor detect`) reads them with "
        "`VitalsFeed`, which skips duplicate batches and repeats of a device's latest event, "
        "counts lost and late batches (`SequenceTracker`; `monitor_vitals_batches_lost` on "
        "`/metrics`) and counts malformed messages (logged, rate-limited); it does not publish "
        "the readings again. A batch number is at most "
        "2^63 - 1 (`MAX_BATCH_SEQUENCE`; a bigger one is malformed). Gaps are counted by "
        "arithmetic and remembered as ranges, at most "
        f"{MAX_REMEMBERED_GAPS} per stream, so a batch costs the same whatever its number; a late "
        "batch in a remembered gap is used and counted late, the oldest gaps are forgotten first "
        "(they stay lost, counted as forgotten, and a late copy counts as a duplicate). "
        "`monitor run` is both roles in one process: it publishes its own "
        "wearables' batches under the name `detector`.",
        "- **Credentials**: the user name is in `mqtt.url`; the password comes only from "
        "`MONITOR_MQTT_PASSWORD`. With `mqtts://` the broker's certificate is verified against "
        "`mqtt.tls.ca_file` (else the system's CAs), and `cert_file`/`key_file` give a client "
        "certificate.",
        f"- **Reconnecting**: after a lost connection the link reconnects at once; failed "
        f"attempts back off from {backoff.initial_s:g} s doubling up to {backoff.max_s:g} s, "
        f"each delay drawn from [d/2, d] so gateways do not reconnect in lock step. The link is "
        f"back within about {backoff.max_s:g} s of the broker. A failure that would only come "
        "back on every attempt is not retried: a CONNACK refusing the credentials or the client "
        "(reason 133, 134, 135, 138 or 140; 3.1.1's 2, 4 and 5) or a broker certificate that does "
        "not verify ends the link with `BrokerUnusableError`, and `monitor run`, `detect` and "
        "`gateway` stop at once with one line naming the broker and the cause and exit status 3 "
        "(a refused or reset connection, a timeout or a restarting broker are still retried).",
        "- **Outbox**: publishing never blocks. Every message waits in a local outbox until the "
        "broker acknowledges it, and after a reconnect the unacknowledged ones are sent first, "
        "in their original order: delivery is at least once, so receivers must tolerate "
        "duplicates (alarm events: `alarm_id` + `sequence`; reading batches: `gateway` + `run` "
        "+ `sequence`; replies: `command_id`).",
        f"- **A full outbox** ({DEFAULT_OUTBOX_CAPACITY} messages by default) keeps what "
        "matters most: a retained message replaces the queued one of its topic (only the "
        "latest snapshot or status is worth sending; counted as superseded), else the oldest "
        "message of the least important class queued goes, in the order "
        + ", ".join(f"{p.name.lower()}" for p in Priority)
        + " (readings and device events first, retained state last), and if everything queued "
        "is more important the new message is refused. Every drop is counted per class and "
        "logged at ERROR; readings and alarm events are persisted locally as well.",
        "- **Retained state**: after every connect, the link sends the latest retained message "
        "of each of its topics again (snapshots, device status), after the backlog: a broker "
        "that crashed may have lost retained messages since its last save.",
        "- **Service status**: the detector's link publishes a retained `online` status before "
        "anything else on each connect, a retained `offline`/`shutdown` as its last message on "
        "a clean stop, and registers `offline`/`connection_lost` as its last will. A connection "
        "the link gives up on (an acknowledgement or subscription that timed out) is closed "
        "without a DISCONNECT packet, so the broker publishes the will: the status says "
        "`online` only while the link is up.",
        "",
    ]


def _acl_section() -> list[str]:
    levels = {spec.level: spec for spec in TOPICS}
    header = "| role | " + " | ".join(f"`{level}`" for level in levels) + " |"
    lines = [
        "## Access control",
        "",
        "`config/mosquitto/acl` grants each broker user (one per role) exactly this; the tests "
        "check the file against the table. `W` publish, `R` subscribe; `w` publish on the "
        "topics whose last level is the user's own name only (one `pattern` line grants this "
        "to every account; the staff list decides which accounts' commands count).",
        "",
        header,
        "|---|" + "---|" * len(levels),
    ]
    for role in Role:
        cells = []
        for spec in levels.values():
            write = "w" if spec.own_level else "W"
            rights = (write if role in spec.publishers else "") + (
                "R" if role in spec.readers else ""
            )
            cells.append(rights or "-")
        lines.append(f"| {role.value} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def render() -> str:
    """The whole of docs/mqtt.md."""
    lines = [
        "# MQTT contract",
        "",
        "<!-- Generated from monitor/mqtt by monitor.mqtt.doc; do not edit. Regenerate with:",
        f"     {REGENERATE} -->",
        "",
        "Every topic lives under `<root>/<site>/`: `<root>` is the site file's `mqtt.topic_root` "
        "(default `vitals`) and `<site>` its `site.code`; the examples use `vitals/SITE-1`. "
        "Topic levels are identifiers (sessions, devices, services) and pseudonymous participant "
        "codes (`P-014`), never names. Every payload is a JSON object with `schema_version` "
        f"(now {SCHEMA_VERSION}); a receiver should refuse a version it does not know. Models "
        "forbid unknown fields. Reading, alarm and device records are the models of "
        "`monitor.models` (docs/formats.md) inside an envelope; a reading batch holds at most "
        f"{MAX_BATCH_READINGS} readings.",
        "",
        *_table(),
        *_connection_section(),
        "## Topics",
        "",
    ]
    for spec in TOPICS:
        if spec.name == "Commands":
            lines += [f"### {spec.name}", "", *_commands_intro()]
            lines += _topic_section(spec)[2:]
        else:
            lines += _topic_section(spec)
    lines += [*_replies_section(), *_acl_section()]
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

"""docs/formats.md, generated from the models so the document cannot drift from the code.

The examples are built by the models themselves (the alarm event by a real pipeline run), and the
schemas are pydantic's ``model_json_schema()``. ``tests/test_formats_doc.py`` fails when the file
differs; regenerate with ``.venv/bin/python -m monitor.formats_doc > docs/formats.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from pydantic import BaseModel

from monitor.alerts.pipeline import DetectionPipeline
from monitor.alerts.rules import CompiledRule, LimitSpec, RuleSet
from monitor.models import (
    _KIND_PARAMETERS,
    EVIDENCE_KINDS,
    NOT_EVIDENCE,
    PARAMETER_UNITS,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    DeviceEvent,
    DeviceEventType,
    DeviceKind,
    DeviceState,
    DoseMarker,
    Parameter,
    QualityFlag,
    Reading,
    ReadingKind,
)

__all__ = ["REGENERATE", "render"]

REGENERATE = ".venv/bin/python -m monitor.formats_doc > docs/formats.md"

_SESSION = "DEMO-MDMA-1"
_START = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


def _at(seconds: float) -> dt.datetime:
    return _START + dt.timedelta(seconds=seconds)


def _heart_rate(seconds: float, bpm: float) -> Reading:
    return Reading(
        session=_SESSION,
        participant="P-001",
        device="hr-p-001",
        kind=ReadingKind.HEART_RATE,
        values={Parameter.HEART_RATE: bpm},
        received_at=_at(seconds),
    )


def _reading_examples() -> list[Reading]:
    blood_pressure = Reading(
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
        measured_at=_at(2.0),
        received_at=_at(2.431),
    )
    unusable = Reading(
        session=_SESSION,
        participant="P-002",
        device="spo2-p-002",
        kind=ReadingKind.SPO2,
        values={Parameter.SPO2: None, Parameter.PULSE_RATE: 88.0},
        received_at=_at(3.012),
        quality=frozenset({QualityFlag.VALUE_UNUSABLE}),  # one flag: sets have no order
    )
    return [_heart_rate(1.0, 92.0), blood_pressure, unusable]


def _alarm_example() -> AlarmEvent:
    """What the lifecycle really writes, so the example's message and ids stay true."""
    rule = CompiledRule(
        id="hr-high-high",
        alarm="hr-high",
        spec=LimitSpec(Parameter.HEART_RATE, high=True, threshold=131.0, inclusive=True),
        priority=AlarmPriority.HIGH,
        delay_s=60,
    )
    pipeline = DetectionPipeline(RuleSet.build({"P-001": [rule]}), session=_SESSION, origin=_START)
    events = pipeline.feed(_heart_rate(s, 134.0) for s in range(1, 70))
    events += pipeline.advance(_at(70))
    return next(event for event in events if event.state is AlarmState.ACTIVE)


def _device_event_example() -> DeviceEvent:
    return DeviceEvent(
        session=_SESSION,
        participant="P-001",
        device="hr-p-001",
        device_kind=DeviceKind.HEART_RATE,
        event=DeviceEventType.MALFORMED_PAYLOAD,
        state=DeviceState.CONNECTED,
        occurred_at=_at(4.5),
        detail="Heart Rate Measurement: 1 byte, needs at least 2",
        characteristic="0x2A37",
        payload_hex="06",
    )


def _marker_example() -> DoseMarker:
    return DoseMarker(session=_SESSION, participant="P-001", given_at=_at(1800))


def _schema(model: type[BaseModel]) -> list[str]:
    text = json.dumps(model.model_json_schema(), indent=2, ensure_ascii=False)
    return [
        "<details><summary>JSON Schema</summary>",
        "",
        "```json",
        text,
        "```",
        "",
        "</details>",
        "",
    ]


def _examples(models: list[BaseModel]) -> list[str]:
    return ["```json", *(model.model_dump_json() for model in models), "```", ""]


def _names(values: object) -> str:
    assert isinstance(values, frozenset | tuple | list)
    return ", ".join(f"`{value}`" for value in sorted(str(v) for v in values))


def _readings_section() -> list[str]:
    kinds = [
        "| kind | may carry | alarm evidence |",
        "|---|---|---|",
        *(
            f"| `{kind}` | {_names(_KIND_PARAMETERS[kind])} | "
            f"{'yes' if kind in EVIDENCE_KINDS else 'no (context only)'} |"
            for kind in ReadingKind
        ),
    ]
    units = [
        "| parameter | unit |",
        "|---|---|",
        *(f"| `{parameter}` | {unit} |" for parameter, unit in PARAMETER_UNITS.items()),
    ]
    return [
        "## Readings: `readings.jsonl`",
        "",
        "One measurement from one device per line (`monitor.models.Reading`). Written by "
        "`monitor record`, read by `monitor replay`. `received_at` is the service's clock when "
        "the reading arrived and orders detection; `measured_at` is the device's own clock, when "
        "it sends one, and is never trusted for ordering. Values are in canonical units; a "
        "missing or non-finite value is `null` and the reading must then carry `value_unusable`. "
        "`quality` is a set of flags: its order means nothing.",
        "",
        *_examples(list(_reading_examples())),
        "What each kind may carry (anything else is refused):",
        "",
        *kinds,
        "",
        "A reading counts as alarm evidence only when its kind is a final measurement and it "
        f"carries none of these quality flags: {_names(NOT_EVIDENCE)}. Flagged readings are "
        "kept and counted, never dropped.",
        "",
        *units,
        "",
        *_schema(Reading),
    ]


def _alarms_section() -> list[str]:
    return [
        "## Alarm events: `alarms.jsonl`",
        "",
        "One transition of one alarm per line (`monitor.models.AlarmEvent`), the same record "
        "that is published on MQTT and stored in InfluxDB. Written by `monitor replay --out DIR`. "
        "`alarm_id` stays the same for the life of an alarm (uuid5 of session, participant, alarm "
        "group and onset, so a replay gives the same ids); `sequence` numbers a session's events "
        "1, 2, 3, ... without gaps. Semantics: docs/detection.md section 5.",
        "",
        *_examples([_alarm_example()]),
        *_schema(AlarmEvent),
    ]


def _device_events_section() -> list[str]:
    return [
        "## Device events: `device-events.jsonl`",
        "",
        "Something that happened to a wearable or its link, one per line "
        "(`monitor.models.DeviceEvent`). Written by `monitor record` beside `readings.jsonl`. A "
        "malformed payload is kept whole (`characteristic`, `payload_hex`, `detail`), so a device "
        "that sends garbage can be diagnosed later.",
        "",
        *_examples([_device_event_example()]),
        *_schema(DeviceEvent),
    ]


def _markers_section() -> list[str]:
    return [
        "## Dose markers: `markers.jsonl`",
        "",
        "When a participant took a dose or a booster, one per line (`monitor.models.DoseMarker`). "
        "Readings files carry no markers: `monitor replay` reads a `markers.jsonl` in the folder "
        "of each readings file, when there is one, and feeds each marker to detection at "
        "`given_at` (after the readings of that same instant). A marker fixes the participant's "
        "pre-dose baseline from the evidence of the preceding baseline window "
        "(docs/detection.md section 3); a later marker never replaces a baseline already fixed. "
        "Without markers there is no baseline and baseline rules stay clear; the replay summary "
        "says so. Write the file by hand or with any tool; its lines are checked like readings.",
        "",
        *_examples([_marker_example()]),
        *_schema(DoseMarker),
    ]


def render() -> str:
    """The whole of docs/formats.md."""
    lines = [
        "# File formats",
        "",
        "<!-- Generated by monitor/formats_doc.py; do not edit. Regenerate with:",
        f"     {REGENERATE} -->",
        "",
        "Every file is JSON lines: UTF-8, one JSON object per line, each line one pydantic model "
        "of `monitor.models` serialised by `model_dump_json()`. Times are ISO 8601 with their UTC "
        "offset. Models forbid unknown fields, so a line that does not match is an error, not a "
        "surprise: `monitor replay` reports each bad line on stderr as `FILE:LINE: reason`, "
        "counts it and skips it (an empty line, a line that is not JSON, one that does not match "
        "the model, one naming a session or participant the configuration does not have).",
        "",
        "Participants are pseudonymous study codes (`P-014`), never names.",
        "",
        "| file | model | written by | read by |",
        "|---|---|---|---|",
        "| `readings.jsonl` | `Reading` | `monitor record` | `monitor replay` |",
        "| `alarms.jsonl` | `AlarmEvent` | `monitor replay --out` | tools, dashboards |",
        "| `device-events.jsonl` | `DeviceEvent` | `monitor record` | tools |",
        "| `markers.jsonl` | `DoseMarker` | staff, tools | `monitor replay` |",
        "",
        *_readings_section(),
        *_alarms_section(),
        *_device_events_section(),
        *_markers_section(),
    ]
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

"""The shared vocabulary rejects what must never cross a boundary."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pytest
from pydantic import ValidationError

from monitor.models import (
    AlarmCategory,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    Parameter,
    QualityFlag,
    Reading,
    ReadingKind,
)

NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def reading(**overrides: object) -> Reading:
    fields: dict[str, object] = {
        "session": "S-1",
        "participant": "P-014",
        "device": "strap-1",
        "kind": ReadingKind.HEART_RATE,
        "values": {Parameter.HEART_RATE: 72.0},
        "received_at": NOW,
    }
    fields.update(overrides)
    return Reading.model_validate(fields)


def test_reading_round_trips_through_json() -> None:
    original = reading(quality=frozenset({QualityFlag.BODY_MOVEMENT}))
    assert Reading.model_validate_json(original.model_dump_json()) == original
    assert not original.usable


def test_clean_heart_rate_reading_is_alarm_evidence() -> None:
    assert reading().usable


def test_intermediate_cuff_pressure_is_never_alarm_evidence() -> None:
    cuff = reading(kind=ReadingKind.CUFF_PRESSURE, values={Parameter.CUFF_PRESSURE: 150.0})
    assert not cuff.usable


@pytest.mark.parametrize("value", [None, math.nan, math.inf])
def test_non_finite_value_must_be_flagged_unusable(value: float | None) -> None:
    with pytest.raises(ValidationError, match="value_unusable"):
        reading(values={Parameter.HEART_RATE: value})
    flagged = reading(
        values={Parameter.HEART_RATE: value}, quality=frozenset({QualityFlag.VALUE_UNUSABLE})
    )
    assert not flagged.usable


def test_reading_kind_limits_its_parameters() -> None:
    with pytest.raises(ValidationError, match="cannot carry systolic_bp"):
        reading(values={Parameter.SYSTOLIC_BP: 120.0})


@pytest.mark.parametrize("code", ["Jane Doe", "jane@example.org", "", "-P1", "x" * 40])
def test_participant_must_be_a_pseudonymous_code(code: str) -> None:
    with pytest.raises(ValidationError, match="participant"):
        reading(participant=code)


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError, match="received_at"):
        reading(received_at=NOW.replace(tzinfo=None))


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        reading(patient_name="x")


def alarm(**overrides: object) -> AlarmEvent:
    fields: dict[str, object] = {
        "alarm_id": uuid.uuid4(),
        "session": "S-1",
        "participant": "P-014",
        "rule": "sbp-high-medium",
        "parameter": Parameter.SYSTOLIC_BP,
        "priority": AlarmPriority.MEDIUM,
        "category": AlarmCategory.PHYSIOLOGICAL,
        "state": AlarmState.ACTIVE,
        "value": 184.0,
        "threshold": 180.0,
        "message": "Systolic 184 mmHg >= 180 (confirmed)",
        "raised_at": NOW,
        "occurred_at": NOW,
        "sequence": 1,
    }
    fields.update(overrides)
    return AlarmEvent.model_validate(fields)


def test_alarm_event_round_trips_through_json() -> None:
    event = alarm()
    assert AlarmEvent.model_validate_json(event.model_dump_json()) == event


def test_alarm_event_from_before_pause_and_latch_fields_still_validates() -> None:
    older = alarm().model_dump(mode="json", exclude={"paused", "condition_cleared"})
    event = AlarmEvent.model_validate(older)
    assert not event.paused
    assert not event.condition_cleared


def test_paused_and_latched_marks_round_trip_through_json() -> None:
    event = alarm(paused=True, condition_cleared=True)
    assert AlarmEvent.model_validate_json(event.model_dump_json()) == event


def test_acknowledgement_names_the_staff_member() -> None:
    with pytest.raises(ValidationError, match="name the staff member"):
        alarm(state=AlarmState.ACKNOWLEDGED)
    acked = alarm(state=AlarmState.ACKNOWLEDGED, acknowledged_by="nurse-3", acknowledged_at=NOW)
    assert acked.acknowledged_by == "nurse-3"


def test_transition_cannot_precede_the_alarm() -> None:
    with pytest.raises(ValidationError, match="precede"):
        alarm(occurred_at=NOW - dt.timedelta(seconds=1))


def test_sequence_numbers_start_at_one() -> None:
    with pytest.raises(ValidationError, match="sequence"):
        alarm(sequence=0)


def test_priorities_are_ordered() -> None:
    ranks = [p.rank for p in (AlarmPriority.LOW, AlarmPriority.MEDIUM, AlarmPriority.HIGH)]
    assert ranks == sorted(ranks)

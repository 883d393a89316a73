"""The alarm lifecycle: every transition of docs/detection.md section 5, one test each."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.alerts.lifecycle import (
    PAUSE_RULE,
    AlarmLifecycle,
    AlarmPendingError,
    AlarmResolvedError,
    LifecycleError,
    PauseError,
    StaffRequiredError,
    UnknownAlarmError,
    UnknownParticipantError,
)
from monitor.alerts.rules import (
    CompiledRule,
    ConditionStatus,
    ConditionUpdate,
    EscalationSettings,
    LimitSpec,
    RuleSet,
    StalenessSpec,
)
from monitor.models import (
    MAX_PAUSE_S,
    AlarmCategory,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    Parameter,
)

LOW, MEDIUM, HIGH = AlarmPriority.LOW, AlarmPriority.MEDIUM, AlarmPriority.HIGH
CLEAR, PENDING, MET = ConditionStatus.CLEAR, ConditionStatus.PENDING, ConditionStatus.MET
T0 = 1_795_680_000_000  # 2026-11-26 08:00:00 UTC, in ms
NURSE = "nurse-3"


def at(seconds: float) -> int:
    """Session time in ms, ``seconds`` after T0."""
    return T0 + round(seconds * 1000)


def limit(
    rule_id: str,
    parameter: Parameter,
    threshold: float,
    priority: AlarmPriority,
    *,
    high: bool = True,
    alarm: str = "",
    confirm: int = 1,
    delay_s: int = 0,
) -> CompiledRule:
    return CompiledRule(
        id=rule_id,
        spec=LimitSpec(parameter=parameter, high=high, threshold=threshold, inclusive=True),
        priority=priority,
        alarm=alarm,
        confirm=confirm,
        delay_s=delay_s,
    )


SBP_TIERS = [
    limit("sbp-160", Parameter.SYSTOLIC_BP, 160, LOW, alarm="sbp-high"),
    limit("sbp-180", Parameter.SYSTOLIC_BP, 180, MEDIUM, alarm="sbp-high", confirm=2),
    limit("sbp-200", Parameter.SYSTOLIC_BP, 200, HIGH, alarm="sbp-high"),
]
HR_HIGH = limit("hr-120", Parameter.HEART_RATE, 120, MEDIUM, delay_s=120)
SPO2_LOW = limit("spo2-88", Parameter.SPO2, 88, HIGH, high=False)
HR_STALE = CompiledRule(
    id="hr-stale",
    spec=StalenessSpec(parameter=Parameter.HEART_RATE, stale_after_s=60),
    priority=MEDIUM,
    category=AlarmCategory.TECHNICAL,
)
RULES = RuleSet.build(
    {
        "P-001": [*SBP_TIERS, HR_HIGH, SPO2_LOW, HR_STALE],
        "P-002": [*SBP_TIERS, HR_HIGH, HR_STALE],  # no SpO2 rule for this participant
    }
)


def update(
    seconds: float,
    rule_id: str,
    status: ConditionStatus,
    value: float | None = None,
    *,
    participant: str = "P-001",
) -> ConditionUpdate:
    """What detection would emit: the rule's own priority and threshold."""
    p = RULES.participants.index(participant)
    r = RULES.rule_ids.index(rule_id)
    rule = RULES.rules[p][r]
    assert rule is not None
    threshold = rule.spec.threshold if isinstance(rule.spec, LimitSpec) else None
    return ConditionUpdate(at(seconds), p, r, status, rule.priority, value, threshold)


def only(events: list[AlarmEvent]) -> AlarmEvent:
    assert len(events) == 1, events
    return events[0]


@pytest.fixture
def life() -> AlarmLifecycle:
    return AlarmLifecycle(RULES, session="S-1")


# --- inactive -> pending -> active -> resolved ---------------------------------------------------


def test_pending_then_active_is_one_alarm(life: AlarmLifecycle) -> None:
    pending = only(life.apply([update(0, "sbp-180", PENDING, 184)]))
    assert pending.state is AlarmState.PENDING
    assert pending.priority is MEDIUM
    assert pending.message == "Systolic 184 mmHg ≥ 180 (pending)"
    assert pending.sequence == 1

    active = only(life.apply([update(90, "sbp-180", MET, 186)]))
    assert active.state is AlarmState.ACTIVE
    assert active.alarm_id == pending.alarm_id
    assert active.raised_at == pending.occurred_at
    assert active.occurred_at - active.raised_at == dt.timedelta(seconds=90)
    assert active.message == "Systolic 186 mmHg ≥ 180 (confirmed)"
    assert (active.rule, active.parameter, active.value, active.threshold) == (
        "sbp-180",
        Parameter.SYSTOLIC_BP,
        186,
        180,
    )
    assert active.category is AlarmCategory.PHYSIOLOGICAL
    assert active.occurred_at.tzinfo is not None
    assert life.active() == [active]


def test_met_without_pending_goes_straight_to_active(life: AlarmLifecycle) -> None:
    event = only(life.apply([update(0, "spo2-88", MET, 86)]))
    assert event.state is AlarmState.ACTIVE
    assert event.raised_at == event.occurred_at
    assert event.message == "SpO2 86% ≤ 88"


def test_pending_cancelled_resolves_without_ever_being_active(life: AlarmLifecycle) -> None:
    pending = only(life.apply([update(0, "hr-120", PENDING, 125)]))
    cancelled = only(life.apply([update(30, "hr-120", CLEAR, 110)]))
    assert cancelled.alarm_id == pending.alarm_id
    assert cancelled.state is AlarmState.RESOLVED
    assert cancelled.condition_cleared
    assert "cancelled while pending" in cancelled.message
    assert cancelled.value == 125  # what raised it, not the clearing sample
    assert life.active() == []


@pytest.mark.parametrize(("rule_id", "priority"), [("hr-120", MEDIUM), ("sbp-160", LOW)])
def test_active_medium_and_low_resolve_when_the_condition_clears(
    life: AlarmLifecycle, rule_id: str, priority: AlarmPriority
) -> None:
    active = only(life.apply([update(0, rule_id, MET, 170)]))
    assert active.priority is priority
    resolved = only(life.apply([update(60, rule_id, CLEAR, 100)]))
    assert resolved.alarm_id == active.alarm_id
    assert resolved.state is AlarmState.RESOLVED
    assert resolved.priority is priority
    assert resolved.message.endswith("(resolved)")
    assert life.active() == []


# --- high alarms latch ---------------------------------------------------------------------------


def test_high_alarm_latches_until_acknowledged_then_resolves(life: AlarmLifecycle) -> None:
    active = only(life.apply([update(0, "spo2-88", MET, 85)]))
    latched = only(life.apply([update(20, "spo2-88", CLEAR, 95)]))
    assert latched.state is AlarmState.ACTIVE
    assert latched.condition_cleared
    assert latched.priority is HIGH
    assert latched.value == 85  # still shows what raised it
    assert latched.message == "SpO2 85% ≤ 88 (condition ended, acknowledge to clear)"
    assert life.active() == [latched]

    resolved = only(life.acknowledge(active.alarm_id, NURSE, at(60)))
    assert resolved.state is AlarmState.RESOLVED
    assert resolved.acknowledged_by == NURSE
    assert resolved.acknowledged_at == resolved.occurred_at
    assert resolved.priority is HIGH
    assert life.active() == []


def test_latched_alarm_whose_condition_returns_is_the_same_alarm(life: AlarmLifecycle) -> None:
    active = only(life.apply([update(0, "spo2-88", MET, 85)]))
    life.apply([update(20, "spo2-88", CLEAR, 95)])
    back = only(life.apply([update(40, "spo2-88", MET, 84)]))
    assert back.alarm_id == active.alarm_id
    assert back.state is AlarmState.ACTIVE
    assert not back.condition_cleared
    assert back.value == 84


# --- acknowledgement -----------------------------------------------------------------------------


def test_acknowledge_moves_active_to_acknowledged(life: AlarmLifecycle) -> None:
    active = only(life.apply([update(0, "hr-120", MET, 130)]))
    acked = only(life.acknowledge(str(active.alarm_id), NURSE, at(30)))
    assert acked.state is AlarmState.ACKNOWLEDGED
    assert acked.alarm_id == active.alarm_id
    assert acked.acknowledged_by == NURSE
    assert acked.acknowledged_at == dt.datetime.fromtimestamp(at(30) / 1000, tz=dt.UTC)
    assert acked.message == "Heart rate 130 bpm ≥ 120 for 2 min (acknowledged)"
    assert life.acknowledge(active.alarm_id, "nurse-4", at(31)) == []  # duplicate delivery
    assert life.active() == [acked]


@pytest.mark.parametrize("rule_id", ["hr-120", "spo2-88"])
def test_acknowledged_alarm_resolves_when_cleared(life: AlarmLifecycle, rule_id: str) -> None:
    active = only(life.apply([update(0, rule_id, MET, 50 if rule_id == "spo2-88" else 130)]))
    life.acknowledge(active.alarm_id, NURSE, at(10))
    resolved = only(life.apply([update(20, rule_id, CLEAR, 95)]))
    assert resolved.state is AlarmState.RESOLVED
    assert resolved.acknowledged_by == NURSE
    assert life.active() == []


def test_acknowledged_alarm_whose_priority_rises_alarms_again(life: AlarmLifecycle) -> None:
    medium = only(life.apply([update(0, "sbp-180", MET, 185)]))
    life.acknowledge(medium.alarm_id, NURSE, at(10))
    again = only(life.apply([update(60, "sbp-200", MET, 204)]))
    assert again.alarm_id == medium.alarm_id
    assert again.state is AlarmState.ACTIVE
    assert again.priority is HIGH
    assert again.rule == "sbp-200"
    assert again.acknowledged_by is None
    assert again.acknowledged_at is None


def test_acknowledged_alarm_follows_a_fall_without_alarming(life: AlarmLifecycle) -> None:
    life.apply([update(0, "sbp-160", MET, 185), update(0, "sbp-180", MET, 185)])
    (alarm,) = life.active()
    life.acknowledge(alarm.alarm_id, NURSE, at(10))
    fallen = only(life.apply([update(60, "sbp-180", CLEAR, 170)]))
    assert (fallen.state, fallen.priority, fallen.rule) == (AlarmState.ACKNOWLEDGED, LOW, "sbp-160")


# --- priority changes and tiers ------------------------------------------------------------------


def test_tiers_of_one_parameter_share_one_alarm(life: AlarmLifecycle) -> None:
    event = only(
        life.apply(
            [update(0, "sbp-160", MET, 186), update(0, "sbp-180", MET, 186)],
        )
    )
    assert (event.priority, event.rule) == (MEDIUM, "sbp-180")
    risen = only(life.apply([update(30, "sbp-200", MET, 203)]))
    assert risen.alarm_id == event.alarm_id
    assert (risen.state, risen.priority, risen.rule) == (AlarmState.ACTIVE, HIGH, "sbp-200")
    assert len(life.active()) == 1


def test_priority_fall_is_an_event_with_the_state_unchanged(life: AlarmLifecycle) -> None:
    medium = only(life.apply([update(0, "sbp-160", MET, 184), update(0, "sbp-180", MET, 184)]))
    fallen = only(life.apply([update(120, "sbp-180", CLEAR, 172)]))
    assert fallen.alarm_id == medium.alarm_id
    assert (fallen.state, fallen.priority, fallen.rule) == (AlarmState.ACTIVE, LOW, "sbp-160")
    assert fallen.value == 184  # the value at which sbp-160 was met


def test_unacknowledged_high_alarm_keeps_its_priority_until_acknowledged(
    life: AlarmLifecycle,
) -> None:
    life.apply([update(0, "sbp-180", MET, 205), update(0, "sbp-200", MET, 205)])
    assert life.apply([update(60, "sbp-200", CLEAR, 185)]) == []
    (held,) = life.active()
    assert (held.priority, held.rule) == (HIGH, "sbp-200")
    acked = only(life.acknowledge(held.alarm_id, NURSE, at(90)))
    assert (acked.state, acked.priority, acked.rule) == (AlarmState.ACKNOWLEDGED, MEDIUM, "sbp-180")


def test_active_alarm_with_only_a_pending_tier_left_stays_active(life: AlarmLifecycle) -> None:
    life.apply([update(0, "sbp-160", MET, 170)])
    life.apply([update(10, "sbp-180", PENDING, 181)])
    event = only(life.apply([update(20, "sbp-160", CLEAR, 150)]))
    assert (event.state, event.priority, event.rule) == (AlarmState.ACTIVE, MEDIUM, "sbp-180")
    resolved = only(life.apply([update(30, "sbp-180", CLEAR, 150)]))
    assert resolved.state is AlarmState.RESOLVED


# --- escalation ----------------------------------------------------------------------------------


def test_unacknowledged_medium_escalates_to_high_then_to_backup(life: AlarmLifecycle) -> None:
    active = only(life.apply([update(0, "hr-120", MET, 130)]))
    assert life.tick(at(299.999)) == []
    escalated = only(life.tick(at(300)))
    assert escalated.alarm_id == active.alarm_id
    assert (escalated.state, escalated.priority, escalated.escalation_level) == (
        AlarmState.ACTIVE,
        HIGH,
        1,
    )
    assert escalated.rule == "hr-120"
    assert "escalated to level 1" in escalated.message
    assert life.tick(at(419.999)) == []
    assert only(life.tick(at(420))).escalation_level == 2
    assert only(life.tick(at(540))).escalation_level == 3


def test_unacknowledged_high_goes_to_backup_every_interval(life: AlarmLifecycle) -> None:
    life.apply([update(0, "spo2-88", MET, 85)])
    assert life.tick(at(119)) == []
    first = only(life.tick(at(120)))
    assert (first.priority, first.escalation_level) == (HIGH, 1)
    assert only(life.tick(at(240))).escalation_level == 2


def test_escalation_steps_keep_their_schedule_when_ticks_are_late(life: AlarmLifecycle) -> None:
    life.apply([update(0, "hr-120", MET, 130)])
    events = life.tick(at(545))  # due at 300, 420 and 540
    assert [event.escalation_level for event in events] == [1, 2, 3]
    assert life.tick(at(659)) == []
    assert only(life.tick(at(660))).escalation_level == 4


def test_escalation_intervals_come_from_the_participant_settings() -> None:
    rules = RuleSet.build(
        {"P-001": [HR_HIGH]},
        {"P-001": EscalationSettings(medium_to_high_s=60, high_to_backup_s=30)},
    )
    life = AlarmLifecycle(rules, session="S-1")
    life.apply([ConditionUpdate(at(0), 0, 0, MET, MEDIUM, 130, 120)])
    assert only(life.tick(at(60))).escalation_level == 1
    assert only(life.tick(at(90))).escalation_level == 2


def test_acknowledgement_stops_escalation(life: AlarmLifecycle) -> None:
    active = only(life.apply([update(0, "hr-120", MET, 130)]))
    assert life.tick(at(200)) == []
    life.acknowledge(active.alarm_id, NURSE, at(250))
    assert life.tick(at(3600)) == []


def test_acknowledging_an_escalated_medium_shows_its_own_priority(life: AlarmLifecycle) -> None:
    active = only(life.apply([update(0, "hr-120", MET, 130)]))
    life.tick(at(300))
    acked = only(life.acknowledge(active.alarm_id, NURSE, at(310)))
    assert (acked.state, acked.priority, acked.escalation_level) == (
        AlarmState.ACKNOWLEDGED,
        MEDIUM,
        1,
    )
    assert life.tick(at(3600)) == []


def test_escalation_timer_starts_when_the_alarm_becomes_active(life: AlarmLifecycle) -> None:
    life.apply([update(0, "hr-120", PENDING, 130)])
    life.apply([update(120, "hr-120", MET, 131)])
    assert life.tick(at(419)) == []
    assert only(life.tick(at(420))).priority is HIGH


def test_rise_from_low_to_medium_starts_the_medium_timer(life: AlarmLifecycle) -> None:
    life.apply([update(0, "sbp-160", MET, 170)])
    assert life.tick(at(1000)) == []  # low alarms never escalate
    life.apply([update(1000, "sbp-180", MET, 182)])
    assert life.tick(at(1299)) == []
    assert only(life.tick(at(1300))).escalation_level == 1


def test_realarm_restarts_escalation_from_level_zero(life: AlarmLifecycle) -> None:
    medium = only(life.apply([update(0, "sbp-180", MET, 185)]))
    life.tick(at(300))
    life.acknowledge(medium.alarm_id, NURSE, at(310))
    again = only(life.apply([update(400, "sbp-200", MET, 210)]))
    assert (again.state, again.escalation_level) == (AlarmState.ACTIVE, 0)
    assert life.tick(at(519)) == []
    assert only(life.tick(at(520))).escalation_level == 1


# --- pause ---------------------------------------------------------------------------------------


def test_pause_is_visible_and_marks_medium_alarms_paused(life: AlarmLifecycle) -> None:
    medium = only(life.apply([update(0, "hr-120", MET, 130)]))
    notice, marked = life.pause("P-001", NURSE, t_ms=at(10))
    assert (notice.rule, notice.category, notice.priority, notice.state) == (
        PAUSE_RULE,
        AlarmCategory.TECHNICAL,
        LOW,
        AlarmState.ACKNOWLEDGED,
    )
    assert notice.acknowledged_by == NURSE
    assert notice.value == 120  # the default, 2 min
    assert notice.message == f"Physiological alarms paused for 2 min by {NURSE}"
    assert not notice.paused
    assert marked.alarm_id == medium.alarm_id
    assert marked.paused
    assert marked.message.endswith("(paused)")
    assert {event.alarm_id for event in life.active()} == {notice.alarm_id, medium.alarm_id}


def test_transitions_during_a_pause_are_still_events(life: AlarmLifecycle) -> None:
    life.pause("P-001", NURSE, 300, t_ms=at(0))
    raised = only(life.apply([update(10, "sbp-160", MET, 170)]))
    assert raised.state is AlarmState.ACTIVE
    assert raised.paused
    resolved = only(life.apply([update(20, "sbp-160", CLEAR, 150)]))
    assert resolved.state is AlarmState.RESOLVED
    assert resolved.paused


def test_high_and_technical_alarms_are_never_paused(life: AlarmLifecycle) -> None:
    life.apply([update(0, "spo2-88", MET, 85), update(0, "hr-stale", MET)])
    events = life.pause("P-001", NURSE, t_ms=at(10))
    assert [event.rule for event in events] == [PAUSE_RULE]  # no alarm changed its mark
    assert not any(event.paused for event in life.active())
    stale = next(event for event in life.active() if event.rule == "hr-stale")
    assert stale.category is AlarmCategory.TECHNICAL
    assert stale.message == "Heart rate: no data for 60 s"


def test_paused_medium_that_escalates_is_no_longer_paused(life: AlarmLifecycle) -> None:
    life.apply([update(0, "hr-120", MET, 130)])
    life.pause("P-001", NURSE, MAX_PAUSE_S, t_ms=at(100))
    escalated = only(life.tick(at(300)))
    assert (escalated.priority, escalated.paused) == (HIGH, False)


def test_pause_expires_by_itself_at_a_tick(life: AlarmLifecycle) -> None:
    medium = only(life.apply([update(0, "hr-120", MET, 130)]))
    life.acknowledge(medium.alarm_id, NURSE, at(1))
    notice, _ = life.pause("P-001", NURSE, 60, t_ms=at(10))
    assert life.tick(at(69.999)) == []
    ended, unmarked = life.tick(at(70))
    assert (ended.alarm_id, ended.state) == (notice.alarm_id, AlarmState.RESOLVED)
    assert ended.message == "Alarm pause ended"
    assert (unmarked.alarm_id, unmarked.paused) == (medium.alarm_id, False)
    assert [event.rule for event in life.active()] == ["hr-120"]


def test_pausing_again_restarts_the_same_pause(life: AlarmLifecycle) -> None:
    (first,) = life.pause("P-001", NURSE, 60, t_ms=at(0))
    (second,) = life.pause("P-001", "nurse-4", 120, t_ms=at(50))
    assert second.alarm_id == first.alarm_id
    assert (second.value, second.acknowledged_by) == (120, "nurse-4")
    assert life.tick(at(169)) == []
    assert only(life.tick(at(170))).state is AlarmState.RESOLVED


def test_resume_ends_a_pause_early(life: AlarmLifecycle) -> None:
    life.pause("P-001", NURSE, t_ms=at(0))
    ended = only(life.resume("P-001", "nurse-4", t_ms=at(5)))
    assert ended.state is AlarmState.RESOLVED
    assert ended.message == "Alarm pause ended early by nurse-4"
    with pytest.raises(PauseError, match="not paused"):
        life.resume("P-001", NURSE, t_ms=at(6))


@pytest.mark.parametrize("duration_s", [0, -5, MAX_PAUSE_S + 1, 3600])
def test_pause_is_bounded(life: AlarmLifecycle, duration_s: int) -> None:
    with pytest.raises(PauseError, match="900 s"):
        life.pause("P-001", NURSE, duration_s, t_ms=at(0))


def test_pause_names_unknown_participants(life: AlarmLifecycle) -> None:
    with pytest.raises(UnknownParticipantError, match="P-404"):
        life.pause("P-404", NURSE, t_ms=at(0))


def test_pause_applies_to_one_participant_only(life: AlarmLifecycle) -> None:
    life.pause("P-001", NURSE, t_ms=at(0))
    other = only(life.apply([update(10, "hr-120", MET, 130, participant="P-002")]))
    assert not other.paused


# --- errors --------------------------------------------------------------------------------------


def test_acknowledging_an_unknown_alarm_names_it(life: AlarmLifecycle) -> None:
    missing = uuid.uuid4()
    with pytest.raises(UnknownAlarmError, match=f"no alarm {missing} in session S-1"):
        life.acknowledge(missing, NURSE, at(0))
    with pytest.raises(UnknownAlarmError, match="not an alarm id"):
        life.acknowledge("alarm-7", NURSE, at(0))


def test_acknowledging_a_resolved_alarm_says_so(life: AlarmLifecycle) -> None:
    active = only(life.apply([update(0, "hr-120", MET, 130)]))
    life.apply([update(10, "hr-120", CLEAR, 100)])
    with pytest.raises(AlarmResolvedError, match="already resolved"):
        life.acknowledge(active.alarm_id, NURSE, at(20))


def test_acknowledging_a_pending_alarm_is_refused(life: AlarmLifecycle) -> None:
    pending = only(life.apply([update(0, "hr-120", PENDING, 130)]))
    with pytest.raises(AlarmPendingError, match="still pending"):
        life.acknowledge(pending.alarm_id, NURSE, at(5))


@pytest.mark.parametrize("staff", [None, "", "   ", "Jane Doe", "nurse@ward"])
def test_commands_need_a_staff_id(life: AlarmLifecycle, staff: str | None) -> None:
    active = only(life.apply([update(0, "hr-120", MET, 130)]))
    with pytest.raises(StaffRequiredError, match="staff"):
        life.acknowledge(active.alarm_id, staff, at(5))
    with pytest.raises(StaffRequiredError, match="staff"):
        life.pause("P-001", staff, t_ms=at(5))
    assert life.active() == [active]


def test_update_for_a_rule_the_participant_lacks_is_refused(life: AlarmLifecycle) -> None:
    spo2 = RULES.rule_ids.index("spo2-88")
    bad = ConditionUpdate(at(0), 1, spo2, MET, HIGH, 85, 88)
    with pytest.raises(LifecycleError, match="P-002 has no rule spo2-88"):
        life.apply([bad])
    assert life.next_sequence == 1


# --- sequence, identity, time --------------------------------------------------------------------


def test_sequence_is_gapless_across_participants(life: AlarmLifecycle) -> None:
    events = life.apply(
        [
            update(0, "hr-120", MET, 130),
            update(0, "sbp-160", MET, 170, participant="P-002"),
            update(10, "spo2-88", MET, 85),
            update(10, "hr-120", PENDING, 125, participant="P-002"),
        ]
    )
    events += life.pause("P-002", NURSE, t_ms=at(20))
    events += life.acknowledge(events[0].alarm_id, NURSE, at(30))
    events += life.tick(at(400))
    events += life.apply([update(410, "hr-120", CLEAR, 90, participant="P-002")])
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert len({event.participant for event in events}) == 2


def test_sequence_can_start_where_a_previous_run_stopped() -> None:
    life = AlarmLifecycle(RULES, session="S-1", sequence_start=41)
    assert only(life.apply([update(0, "hr-120", MET, 130)])).sequence == 41


def test_recurrence_after_resolve_is_a_new_alarm(life: AlarmLifecycle) -> None:
    first = only(life.apply([update(0, "hr-120", MET, 130)]))
    life.apply([update(60, "hr-120", CLEAR, 100)])
    second = only(life.apply([update(120, "hr-120", MET, 131)]))
    assert second.alarm_id != first.alarm_id
    assert second.raised_at > first.raised_at


def test_alarm_ids_are_reproducible_across_replays() -> None:
    inputs = [update(0, "hr-120", MET, 130), update(5, "sbp-160", MET, 170, participant="P-002")]
    one = AlarmLifecycle(RULES, session="S-1").apply(inputs)
    two = AlarmLifecycle(RULES, session="S-1").apply(inputs)
    other_session = AlarmLifecycle(RULES, session="S-2").apply(inputs)
    assert [event.alarm_id for event in one] == [event.alarm_id for event in two]
    assert one[0].alarm_id != other_session[0].alarm_id


def test_input_stamped_before_the_latest_time_is_taken_at_that_time(life: AlarmLifecycle) -> None:
    active = only(life.apply([update(10, "hr-120", MET, 130)]))
    acked = only(life.acknowledge(active.alarm_id, NURSE, at(5)))  # command clock a little behind
    assert acked.occurred_at == active.occurred_at


def test_messages_carry_no_participant_code(life: AlarmLifecycle) -> None:
    events = life.apply([update(0, "hr-120", MET, 130), update(0, "spo2-88", MET, 85)])
    events += life.pause("P-001", NURSE, t_ms=at(1))
    assert events
    assert not any("P-001" in event.message for event in events)


# --- crash recovery ------------------------------------------------------------------------------


def first_half(life: AlarmLifecycle) -> list[AlarmEvent]:
    """A session up to the crash: escalation under way, an acknowledgement, a latch, a pause."""
    events = life.apply(
        [
            update(0, "hr-120", MET, 130),
            update(0, "sbp-160", MET, 186, participant="P-002"),
            update(0, "sbp-180", MET, 186, participant="P-002"),
            update(10, "spo2-88", MET, 85),
        ]
    )
    events += life.tick(at(130))  # spo2 high -> backup
    events += life.apply([update(140, "spo2-88", CLEAR, 95)])  # latched
    events += life.acknowledge(events[1].alarm_id, NURSE, at(150))  # P-002 sbp acknowledged
    events += life.tick(at(310))  # hr medium -> high
    events += life.pause("P-002", NURSE, 600, t_ms=at(320))
    return events


def second_half(life: AlarmLifecycle) -> list[AlarmEvent]:
    """What happens after the restart; identical inputs must give identical events."""
    events = life.tick(at(430))  # hr backup at 420; spo2 backup at 370 and 490 pending
    events += life.apply([update(440, "sbp-200", MET, 207, participant="P-002")])  # re-alarm
    events += life.tick(at(500))
    by_rule = {event.rule: event.alarm_id for event in life.active()}
    events += life.acknowledge(by_rule["hr-120"], NURSE, at(510))
    events += life.apply([update(520, "hr-120", CLEAR, 100)])
    events += life.acknowledge(by_rule["spo2-88"], NURSE, at(530))  # latched -> resolved
    events += life.tick(at(1000))  # pause over; sbp-200 escalates on schedule
    return events


def test_restore_after_a_crash_rebuilds_the_snapshot_and_continues() -> None:
    original = AlarmLifecycle(RULES, session="S-1")
    persisted = first_half(original)

    restarted = AlarmLifecycle(RULES, session="S-1")
    restarted.restore(reversed(persisted))  # order on disk does not matter; sequence does
    assert restarted.active() == original.active()
    assert restarted.next_sequence == original.next_sequence == len(persisted) + 1

    after_crash = second_half(restarted)
    uninterrupted = second_half(original)
    assert after_crash == uninterrupted
    assert {AlarmState.ACKNOWLEDGED, AlarmState.RESOLVED} <= {e.state for e in after_crash}
    assert after_crash[0].sequence == len(persisted) + 1
    assert restarted.active() == original.active()


def test_restore_keeps_acknowledgements_and_refuses_resolved_alarms() -> None:
    original = AlarmLifecycle(RULES, session="S-1")
    persisted = original.apply([update(0, "hr-120", MET, 130)])
    persisted += original.apply([update(10, "hr-120", CLEAR, 100)])
    persisted += original.apply([update(20, "sbp-180", MET, 185)])
    persisted += original.acknowledge(persisted[-1].alarm_id, NURSE, at(30))

    restarted = AlarmLifecycle(RULES, session="S-1")
    restarted.restore(persisted + persisted[:1])  # a duplicate delivery on disk is harmless
    assert restarted.active() == original.active()
    assert restarted.acknowledge(persisted[-1].alarm_id, NURSE, at(40)) == []
    with pytest.raises(AlarmResolvedError):
        restarted.acknowledge(persisted[0].alarm_id, NURSE, at(40))


def test_restore_from_a_snapshot_continues_the_sequence() -> None:
    original = AlarmLifecycle(RULES, session="S-1")
    first_half(original)
    restarted = AlarmLifecycle(RULES, session="S-1")
    restarted.restore(original.active())
    assert restarted.active() == original.active()
    assert (
        only(restarted.apply([update(600, "hr-120", CLEAR, 90)])).sequence
        == max(event.sequence for event in original.active()) + 1
    )


def test_reconcile_after_restore_follows_a_fresh_detector() -> None:
    original = AlarmLifecycle(RULES, session="S-1")
    original.apply([update(0, "hr-120", MET, 130), update(0, "spo2-88", MET, 85)])
    restarted = AlarmLifecycle(RULES, session="S-1")
    restarted.restore(original.active())
    events = restarted.reconcile(at(60), [])  # nothing is breached any more
    by_rule = {event.rule: event for event in events}
    assert by_rule["hr-120"].state is AlarmState.RESOLVED
    assert by_rule["spo2-88"].state is AlarmState.ACTIVE
    assert by_rule["spo2-88"].condition_cleared


def test_restore_needs_a_fresh_lifecycle_and_the_same_session(life: AlarmLifecycle) -> None:
    event = only(life.apply([update(0, "hr-120", MET, 130)]))
    with pytest.raises(LifecycleError, match="fresh lifecycle"):
        life.restore([event])
    with pytest.raises(LifecycleError, match="session S-1, not S-2"):
        AlarmLifecycle(RULES, session="S-2").restore([event])


# --- property: a restart changes nothing ---------------------------------------------------------

RULE_CHOICES = ["sbp-160", "sbp-180", "sbp-200", "hr-120", "hr-stale"]
Op = tuple[str, int, int, int]  # (kind, seconds later, participant, choice)

ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["update", "update", "update", "tick", "ack", "pause", "resume"]),
        st.integers(0, 200),
        st.integers(0, 1),
        st.integers(0, 14),
    ),
    max_size=40,
)


class Driver:
    """Feeds a lifecycle and tracks what detection currently reports (for reconcile)."""

    def __init__(self) -> None:
        self.seconds = 0
        self.conditions: dict[tuple[int, int], ConditionUpdate] = {}

    def run(self, life: AlarmLifecycle, ops: list[Op]) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        for kind, later, participant, choice in ops:
            self.seconds += later
            code = RULES.participants[participant]
            if kind == "update":
                rule_id = RULE_CHOICES[choice % len(RULE_CHOICES)]
                status = ConditionStatus(choice % 3)
                new = update(self.seconds, rule_id, status, 150 + choice * 5, participant=code)
                self.conditions[(new.participant, new.rule)] = new
                events += life.apply([new])
            elif kind == "tick":
                events += life.tick(at(self.seconds))
            elif kind == "ack":
                open_alarms = [e for e in life.active() if e.state is not AlarmState.PENDING]
                if open_alarms:
                    target = open_alarms[choice % len(open_alarms)]
                    events += life.acknowledge(target.alarm_id, NURSE, at(self.seconds))
            elif kind == "pause":
                events += life.pause(code, NURSE, 60 * (1 + choice % 15), t_ms=at(self.seconds))
            elif any(e.rule == PAUSE_RULE and e.participant == code for e in life.active()):
                events += life.resume(code, NURSE, t_ms=at(self.seconds))
        return events

    def current(self) -> list[ConditionUpdate]:
        return [u for _, u in sorted(self.conditions.items()) if u.status is not CLEAR]


def alarm_group(event: AlarmEvent) -> str:
    if event.rule == PAUSE_RULE:
        return PAUSE_RULE
    p = RULES.participants.index(event.participant)
    rule = RULES.rules[p][RULES.rule_ids.index(event.rule)]
    assert rule is not None
    return rule.alarm


def check_invariants(events: list[AlarmEvent], life: AlarmLifecycle) -> None:
    open_groups = [(event.participant, alarm_group(event)) for event in life.active()]
    assert len(open_groups) == len(set(open_groups))
    assert all(e.state is not AlarmState.RESOLVED for e in life.active())
    for event in events:
        if event.priority is HIGH or event.category is AlarmCategory.TECHNICAL:
            assert not event.paused


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=ops_strategy, after=ops_strategy)
def test_restart_from_the_event_log_changes_nothing(before: list[Op], after: list[Op]) -> None:
    driver = Driver()
    original = AlarmLifecycle(RULES, session="S-1")
    persisted = driver.run(original, before)
    assert [e.sequence for e in persisted] == list(range(1, len(persisted) + 1))
    check_invariants(persisted, original)

    restarted = AlarmLifecycle(RULES, session="S-1")
    restarted.restore(persisted)
    assert restarted.active() == original.active()
    assert restarted.reconcile(at(driver.seconds), driver.current()) == []

    twin = Driver()
    twin.seconds, twin.conditions = driver.seconds, dict(driver.conditions)
    continued = driver.run(original, after)
    assert twin.run(restarted, after) == continued
    assert [e.sequence for e in continued] == list(
        range(len(persisted) + 1, len(persisted) + len(continued) + 1)
    )
    check_invariants(continued, original)

"""The alarm lifecycle: condition updates and staff commands in, alarm events out.

IEC 60601-1-8 concepts as fixed in ``docs/detection.md`` section 5: one alarm per (participant,
alarm group), pending / active / acknowledged / resolved, latching high alarms, escalation of
unacknowledged alarms and a bounded, visible pause. The class is pure: no clock, no I/O. Time comes
with every input as integer milliseconds, so replaying the same inputs yields the same events, the
same alarm ids and the same sequence numbers; :meth:`AlarmLifecycle.restore` rebuilds the state
from persisted events after a crash.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from monitor.alerts.rules import (
    BaselineSpec,
    CombinedSpec,
    CompiledRule,
    ConditionStatus,
    ConditionUpdate,
    LimitSpec,
    News2Spec,
    ReportedSpec,
    RuleSet,
    StalenessSpec,
    TrendSpec,
)
from monitor.models import (
    DEFAULT_PAUSE_S,
    MAX_PAUSE_S,
    PARAMETER_UNITS,
    AlarmCategory,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    Identifier,
    Parameter,
    RefusalCode,
    RefusedError,
)

__all__ = [
    "PAUSE_RULE",
    "AlarmLifecycle",
    "AlarmPendingError",
    "AlarmResolvedError",
    "FutureTimeError",
    "LifecycleError",
    "PauseError",
    "StaffRequiredError",
    "UnknownAlarmError",
    "UnknownParticipantError",
]

PAUSE_RULE = "alarm-pause"
"""The rule id of the technical notice that shows a participant's alarms are paused."""

_ALARM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:session-vitals-monitor:alarm")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)

_LABELS: dict[Parameter, str] = {
    Parameter.HEART_RATE: "Heart rate",
    Parameter.SYSTOLIC_BP: "Systolic",
    Parameter.DIASTOLIC_BP: "Diastolic",
    Parameter.MEAN_ARTERIAL_BP: "MAP",
    Parameter.PULSE_RATE: "Pulse rate",
    Parameter.TEMPERATURE: "Temperature",
    Parameter.SPO2: "SpO2",
    Parameter.CUFF_PRESSURE: "Cuff pressure",
    Parameter.BATTERY: "Battery",
}


class LifecycleError(RefusedError):
    """A command or input the lifecycle cannot carry out; the message names the problem."""


class UnknownAlarmError(LifecycleError):
    """The alarm id names no alarm of this session."""

    code = RefusalCode.UNKNOWN_ALARM


class AlarmResolvedError(LifecycleError):
    """The alarm has already resolved; there is nothing left to act on."""

    code = RefusalCode.ALARM_RESOLVED


class AlarmPendingError(LifecycleError):
    """The alarm is still pending (its condition delay is running): not yet announced."""

    code = RefusalCode.ALARM_PENDING


class StaffRequiredError(LifecycleError):
    """Staff commands must name the staff member (a code) who gave them."""

    code = RefusalCode.STAFF_REQUIRED


class UnknownParticipantError(LifecycleError):
    """The participant code is not part of this session."""

    code = RefusalCode.UNKNOWN_PARTICIPANT


class PauseError(LifecycleError):
    """A pause outside its bounds, or a resume without a pause."""

    code = RefusalCode.PAUSE_REJECTED


class FutureTimeError(LifecycleError):
    """An input stamped later than its session accepts yet: it would move session time ahead
    and run every timer and staleness limit on the way (docs/detection.md section 1)."""


def _at(t_ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=t_ms)


def _ms(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


@dataclass(slots=True)
class _Condition:
    """The latest non-clear condition of one (participant, rule)."""

    status: ConditionStatus
    priority: AlarmPriority
    value: float | None
    threshold: float | None


@dataclass(slots=True)
class _Alarm:
    """One alarm (or a participant's pause notice, ``slot is None``) between onset and resolution.

    ``priority``, ``value`` and ``threshold`` belong to the condition shown (rule ``slot``);
    ``held_high`` keeps an unacknowledged alarm high once it was high (latching and escalation).
    """

    alarm_id: uuid.UUID
    participant: int
    group: str
    raised_ms: int
    state: AlarmState
    slot: int | None
    priority: AlarmPriority
    value: float | None = None
    threshold: float | None = None
    activated: bool = False
    held_high: bool = False
    condition_cleared: bool = False
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None
    escalation_level: int = 0
    timer: AlarmPriority | None = None
    due_ms: int | None = None
    pause_until_ms: int | None = None
    pause_ended_by: str | None = None
    last: AlarmEvent | None = None

    @property
    def effective_priority(self) -> AlarmPriority:
        return AlarmPriority.HIGH if self.held_high else self.priority


class AlarmLifecycle:
    """Turns :class:`ConditionUpdate` s and staff commands into :class:`AlarmEvent` s.

    Every input carries its time; an input stamped earlier than the latest time already seen is
    taken as happening at that latest time, so events never run backwards and no update is ever
    refused for clock skew between detection and the command channel.
    """

    def __init__(self, rules: RuleSet, *, session: str, sequence_start: int = 1) -> None:
        try:
            self._session = _IDENTIFIER.validate_python(session)
        except ValidationError:
            msg = f"session {session!r} is not a valid code (letters, digits, '.', '_', '-')"
            raise LifecycleError(msg) from None
        if sequence_start < 1:
            msg = f"sequence numbers start at 1 or later, got {sequence_start}"
            raise LifecycleError(msg)
        if PAUSE_RULE in rules.rule_ids:
            msg = f"rule id {PAUSE_RULE!r} is reserved for the alarm pause notice"
            raise LifecycleError(msg)
        for code, settings in zip(rules.participants, rules.escalation, strict=True):
            if settings.medium_to_high_s <= 0 or settings.high_to_backup_s <= 0:
                msg = f"participant {code}: escalation intervals must be positive"
                raise LifecycleError(msg)
        self._rules = rules
        self._participants = {code: index for index, code in enumerate(rules.participants)}
        self._slot_group = tuple(
            next((rule.alarm for row in rules.rules if (rule := row[slot]) is not None), rule_id)
            for slot, rule_id in enumerate(rules.rule_ids)
        )
        group_slots: dict[str, list[int]] = {}
        for slot, group in enumerate(self._slot_group):
            group_slots.setdefault(group, []).append(slot)
        self._group_slots = {group: tuple(slots) for group, slots in group_slots.items()}
        self._group_order = {group: slots[0] for group, slots in group_slots.items()}
        self._group_order[PAUSE_RULE] = -1
        self._sequence_start = sequence_start
        self._next_sequence = sequence_start
        self._last_ms: int | None = None
        self._conditions: dict[tuple[int, int], _Condition] = {}
        self._alarms: dict[tuple[int, str], _Alarm] = {}
        self._by_id: dict[uuid.UUID, _Alarm] = {}
        self._issued: set[uuid.UUID] = set()
        self._resolved: set[uuid.UUID] = set()

    @property
    def session(self) -> str:
        """The session whose alarms this lifecycle numbers."""
        return self._session

    @property
    def next_sequence(self) -> int:
        """The sequence number the next event will carry."""
        return self._next_sequence

    # --- inputs ---------------------------------------------------------------------------------

    def apply(self, updates: Iterable[ConditionUpdate]) -> list[AlarmEvent]:
        """Take detection's condition changes (ordered by ``(t_ms, participant, rule)``).

        Updates of one participant at one time are applied together before its alarms are
        evaluated, so two tiers met by the same sample give one event, not a rise through both.
        """
        batch = list(updates)
        for update in batch:
            self._check_update(update)
        events: list[AlarmEvent] = []
        start = 0
        while start < len(batch):
            t_raw, participant = batch[start].t_ms, batch[start].participant
            end = start
            touched: set[str] = set()
            while (
                end < len(batch)
                and batch[end].t_ms == t_raw
                and batch[end].participant == participant
            ):
                update = batch[end]
                self._set_condition(participant, update.rule, update)
                touched.add(self._slot_group[update.rule])
                end += 1
            t = self._advance(t_raw)
            for group in sorted(touched, key=self._group_order.__getitem__):
                events.extend(self._evaluate(participant, group, t))
            start = end
        return events

    def tick(self, t_ms: int) -> list[AlarmEvent]:
        """Run the timers due by ``t_ms``: pause expiry first, then escalation."""
        t = self._advance(t_ms)
        events: list[AlarmEvent] = []
        for alarm in self._sorted_alarms():
            if alarm.pause_until_ms is not None and alarm.pause_until_ms <= t:
                events.extend(self._end_pause(alarm, t))
        for alarm in self._sorted_alarms():
            while alarm.due_ms is not None and alarm.due_ms <= t:
                events.append(self._escalate(alarm, t))
        return events

    def next_due_ms(self) -> int | None:
        """When :meth:`tick` next has work (a pause ending or an escalation step), if ever."""
        due = [
            moment
            for alarm in self._alarms.values()
            for moment in (alarm.pause_until_ms, alarm.due_ms)
            if moment is not None
        ]
        return min(due, default=None)

    def acknowledge(
        self, alarm_id: uuid.UUID | str, staff: str | None, t_ms: int
    ) -> list[AlarmEvent]:
        """A staff member has seen the alarm: active -> acknowledged (latched -> resolved).

        Acknowledging an already acknowledged alarm changes nothing (a duplicate command delivery
        is harmless) and returns no event.
        """
        staff_id = self._check_staff(staff, "acknowledging an alarm")
        key = self._parse_alarm_id(alarm_id)
        alarm = self._by_id.get(key)
        if alarm is None:
            if key in self._resolved:
                msg = f"alarm {key} is already resolved; there is nothing to acknowledge"
                raise AlarmResolvedError(msg)
            msg = f"no alarm {key} in session {self._session}"
            raise UnknownAlarmError(msg)
        if alarm.state is AlarmState.PENDING:
            msg = (
                f"alarm {key} is still pending (its condition is not confirmed yet); "
                "it can be acknowledged once it is active"
            )
            raise AlarmPendingError(msg)
        if alarm.state is AlarmState.ACKNOWLEDGED:
            return []
        t = self._advance(t_ms)
        alarm.acknowledged_by = staff_id
        alarm.acknowledged_ms = t
        if alarm.condition_cleared:
            return self._resolve(alarm, t)
        alarm.state = AlarmState.ACKNOWLEDGED
        alarm.held_high = False
        shown = self._group_condition(alarm.participant, alarm.group)
        if shown is not None:
            self._show(alarm, *shown)
        return self._settle(alarm, t)

    def pause(
        self,
        participant: str,
        staff: str | None,
        duration_s: int = DEFAULT_PAUSE_S,
        *,
        t_ms: int,
    ) -> list[AlarmEvent]:
        """Pause a participant's medium and low physiological alarm signals for a bounded time.

        Returns the pause notice's event, then an event for every alarm whose ``paused`` mark
        changes. Pausing again while paused restarts the pause with the new duration.
        """
        staff_id = self._check_staff(staff, "pausing alarms")
        index = self._participant_index(participant)
        if isinstance(duration_s, bool) or not isinstance(duration_s, int):
            msg = f"a pause lasts a whole number of seconds; got {duration_s!r}"
            raise PauseError(msg)
        if not 1 <= duration_s <= MAX_PAUSE_S:
            msg = f"a pause lasts 1 to {MAX_PAUSE_S} s (15 min) at most; got {duration_s} s"
            raise PauseError(msg)
        t = self._advance(t_ms)
        notice = self._alarms.get((index, PAUSE_RULE))
        if notice is None:
            notice = _Alarm(
                alarm_id=self._new_alarm_id(index, PAUSE_RULE, t),
                participant=index,
                group=PAUSE_RULE,
                raised_ms=t,
                state=AlarmState.ACKNOWLEDGED,
                slot=None,
                priority=AlarmPriority.LOW,
                activated=True,
            )
            self._register(notice)
        notice.acknowledged_by = staff_id
        notice.acknowledged_ms = t
        notice.value = float(duration_s)
        notice.pause_until_ms = t + duration_s * 1000
        events = [self._publish(notice, t)]
        events.extend(self._refresh(index, t))
        return events

    def resume(self, participant: str, staff: str | None, *, t_ms: int) -> list[AlarmEvent]:
        """End a participant's pause before it expires."""
        staff_id = self._check_staff(staff, "resuming alarms")
        index = self._participant_index(participant)
        notice = self._alarms.get((index, PAUSE_RULE))
        if notice is None:
            msg = f"alarms of participant {participant} are not paused"
            raise PauseError(msg)
        t = self._advance(t_ms)
        notice.pause_ended_by = staff_id
        return self._end_pause(notice, t)

    def reconcile(self, t_ms: int, conditions: Iterable[ConditionUpdate]) -> list[AlarmEvent]:
        """Replace every condition with detection's current ones (non-clear; others are clear).

        After :meth:`restore`, only the condition each alarm showed is known; a detector rebuilt
        after the crash reports the full picture here, and the alarms follow it.
        """
        batch = list(conditions)
        for update in batch:
            self._check_update(update)
        t = self._advance(t_ms)
        self._conditions.clear()
        for update in batch:
            self._set_condition(update.participant, update.rule, update)
        keys = {(alarm.participant, alarm.group) for alarm in self._alarms.values()}
        keys.update((p, self._slot_group[slot]) for p, slot in self._conditions)
        keys = {key for key in keys if key[1] != PAUSE_RULE}
        events: list[AlarmEvent] = []
        for participant, group in sorted(keys, key=lambda k: (k[0], self._group_order[k[1]])):
            events.extend(self._evaluate(participant, group, t))
        return events

    # --- outputs and recovery -------------------------------------------------------------------

    def active(self) -> list[AlarmEvent]:
        """The latest event of every alarm not resolved (the retained snapshot), by sequence."""
        latest = [alarm.last for alarm in self._alarms.values() if alarm.last is not None]
        return sorted(latest, key=lambda event: event.sequence)

    def restore(self, events: Iterable[AlarmEvent]) -> None:
        """Rebuild alarms, acknowledgements, pauses, timers and the sequence from persisted events.

        Give the session's whole event log for exact escalation timers; a snapshot (the latest
        event per alarm) also works, with timers restarted from each alarm's latest event. Only
        the condition each alarm showed is restored: follow with :meth:`reconcile` once detection
        knows the current conditions.
        """
        if self._by_id or self._resolved or self._next_sequence != self._sequence_start:
            msg = "restore() needs a fresh lifecycle that has not emitted or restored events yet"
            raise LifecycleError(msg)
        seen: dict[int, AlarmEvent] = {}
        for event in sorted(events, key=lambda item: item.sequence):
            earlier = seen.get(event.sequence)
            if earlier is not None:
                if earlier == event:
                    continue
                msg = f"two different events carry sequence {event.sequence}"
                raise LifecycleError(msg)
            seen[event.sequence] = event
            self._replay(event)

    # --- the state machine ----------------------------------------------------------------------

    def _evaluate(self, participant: int, group: str, t: int) -> list[AlarmEvent]:
        found = self._group_condition(participant, group)
        alarm = self._alarms.get((participant, group))
        if alarm is None:
            if found is None:
                return []
            slot, condition = found
            met = condition.status is ConditionStatus.MET
            alarm = _Alarm(
                alarm_id=self._new_alarm_id(participant, group, t),
                participant=participant,
                group=group,
                raised_ms=t,
                state=AlarmState.ACTIVE if met else AlarmState.PENDING,
                slot=slot,
                priority=condition.priority,
            )
            self._show(alarm, slot, condition)
            self._register(alarm)
            return self._settle(alarm, t)
        if found is None:
            if alarm.state is AlarmState.ACTIVE and alarm.effective_priority is AlarmPriority.HIGH:
                alarm.condition_cleared = True
                return self._settle(alarm, t)
            return self._resolve(alarm, t)
        slot, condition = found
        alarm.condition_cleared = False
        if alarm.state is AlarmState.PENDING:
            self._show(alarm, slot, condition)
            if condition.status is ConditionStatus.MET:
                alarm.state = AlarmState.ACTIVE
        elif alarm.state is AlarmState.ACKNOWLEDGED:
            if condition.priority.rank > alarm.priority.rank:
                alarm.state = AlarmState.ACTIVE
                alarm.acknowledged_by = None
                alarm.acknowledged_ms = None
                alarm.escalation_level = 0
            self._show(alarm, slot, condition)
        elif not alarm.held_high or condition.priority.rank >= alarm.priority.rank:
            self._show(alarm, slot, condition)
        return self._settle(alarm, t)

    def _settle(self, alarm: _Alarm, t: int) -> list[AlarmEvent]:
        if alarm.state is AlarmState.ACTIVE:
            alarm.activated = True
            if alarm.priority is AlarmPriority.HIGH:
                alarm.held_high = True
        self._rearm(alarm, t)
        event = self._emit(alarm, t)
        return [] if event is None else [event]

    def _resolve(self, alarm: _Alarm, t: int) -> list[AlarmEvent]:
        alarm.state = AlarmState.RESOLVED
        alarm.condition_cleared = alarm.slot is not None
        alarm.timer = None
        alarm.due_ms = None
        alarm.pause_until_ms = None
        event = self._publish(alarm, t)
        self._forget(alarm)
        return [event]

    def _escalate(self, alarm: _Alarm, t: int) -> AlarmEvent:
        """Medium -> high at level 1, then one level more per backup interval, on schedule."""
        assert alarm.due_ms is not None
        alarm.escalation_level += 1
        alarm.held_high = True
        alarm.timer = AlarmPriority.HIGH
        alarm.due_ms += self._interval(alarm.participant, AlarmPriority.HIGH)
        return self._publish(alarm, t)

    def _rearm(self, alarm: _Alarm, t: int) -> None:
        """Start the escalation timer when an alarm enters an unacknowledged medium/high state."""
        kind: AlarmPriority | None = None
        if (
            alarm.state is AlarmState.ACTIVE
            and alarm.slot is not None
            and alarm.effective_priority is not AlarmPriority.LOW
        ):
            kind = alarm.effective_priority
        if kind is not alarm.timer:
            alarm.timer = kind
            alarm.due_ms = None if kind is None else t + self._interval(alarm.participant, kind)

    def _end_pause(self, notice: _Alarm, t: int) -> list[AlarmEvent]:
        events = self._resolve(notice, t)
        events.extend(self._refresh(notice.participant, t))
        return events

    def _refresh(self, participant: int, t: int) -> list[AlarmEvent]:
        """Events for the participant's alarms whose pause mark changed."""
        events: list[AlarmEvent] = []
        for alarm in self._sorted_alarms():
            if alarm.participant == participant and alarm.slot is not None:
                event = self._emit(alarm, t)
                if event is not None:
                    events.append(event)
        return events

    # --- conditions -----------------------------------------------------------------------------

    def _check_update(self, update: ConditionUpdate) -> None:
        if not 0 <= update.participant < len(self._rules.participants):
            msg = f"condition update names participant index {update.participant}, which is unknown"
            raise LifecycleError(msg)
        if not 0 <= update.rule < len(self._rules.rule_ids):
            msg = f"condition update names rule index {update.rule}, which is unknown"
            raise LifecycleError(msg)
        if self._rules.rules[update.participant][update.rule] is None:
            code = self._rules.participants[update.participant]
            msg = f"participant {code} has no rule {self._rules.rule_ids[update.rule]}"
            raise LifecycleError(msg)

    def _set_condition(self, participant: int, slot: int, update: ConditionUpdate) -> None:
        status = ConditionStatus(update.status)
        if status is ConditionStatus.CLEAR:
            self._conditions.pop((participant, slot), None)
            return
        self._conditions[(participant, slot)] = _Condition(
            status=status,
            priority=update.priority,
            value=update.value,
            threshold=update.threshold,
        )

    def _group_condition(self, participant: int, group: str) -> tuple[int, _Condition] | None:
        """The condition that drives the group: met before pending, then the highest priority."""
        best: tuple[int, _Condition] | None = None
        for slot in self._group_slots.get(group, ()):
            condition = self._conditions.get((participant, slot))
            if condition is None:
                continue
            rank = (condition.status, condition.priority.rank)
            if best is None or rank > (best[1].status, best[1].priority.rank):
                best = (slot, condition)
        return best

    def _show(self, alarm: _Alarm, slot: int, condition: _Condition) -> None:
        alarm.slot = slot
        alarm.priority = condition.priority
        alarm.value = condition.value
        alarm.threshold = condition.threshold

    # --- bookkeeping ----------------------------------------------------------------------------

    def _advance(self, t_ms: int) -> int:
        t = t_ms if self._last_ms is None else max(t_ms, self._last_ms)
        self._last_ms = t
        return t

    def _interval(self, participant: int, kind: AlarmPriority) -> int:
        settings = self._rules.escalation[participant]
        seconds = (
            settings.medium_to_high_s if kind is AlarmPriority.MEDIUM else settings.high_to_backup_s
        )
        return seconds * 1000

    def _new_alarm_id(self, participant: int, group: str, t: int) -> uuid.UUID:
        """uuid5 of session, participant, group and onset: replays give the same ids."""
        code = self._rules.participants[participant]
        name = f"{self._session}/{code}/{group}/{t}"
        alarm_id = uuid.uuid5(_ALARM_NAMESPACE, name)
        recurrence = 1
        while alarm_id in self._issued:
            recurrence += 1
            alarm_id = uuid.uuid5(_ALARM_NAMESPACE, f"{name}/{recurrence}")
        self._issued.add(alarm_id)
        return alarm_id

    def _register(self, alarm: _Alarm) -> None:
        self._alarms[(alarm.participant, alarm.group)] = alarm
        self._by_id[alarm.alarm_id] = alarm

    def _forget(self, alarm: _Alarm) -> None:
        self._alarms.pop((alarm.participant, alarm.group), None)
        self._by_id.pop(alarm.alarm_id, None)
        self._resolved.add(alarm.alarm_id)

    def _sorted_alarms(self) -> list[_Alarm]:
        return sorted(
            self._alarms.values(),
            key=lambda alarm: (alarm.participant, self._group_order[alarm.group]),
        )

    def _participant_index(self, code: str) -> int:
        index = self._participants.get(code)
        if index is None:
            msg = f"no participant {code!r} in session {self._session}"
            raise UnknownParticipantError(msg)
        return index

    def _check_staff(self, staff: str | None, action: str) -> str:
        if staff is None or not staff.strip():
            msg = f"{action} needs the staff member's id"
            raise StaffRequiredError(msg)
        try:
            return _IDENTIFIER.validate_python(staff)
        except ValidationError:
            msg = f"staff id {staff!r} is not a valid code (letters, digits, '.', '_', '-')"
            raise StaffRequiredError(msg) from None

    def _parse_alarm_id(self, alarm_id: uuid.UUID | str) -> uuid.UUID:
        if isinstance(alarm_id, uuid.UUID):
            return alarm_id
        try:
            return uuid.UUID(alarm_id)
        except ValueError:
            msg = f"{alarm_id!r} is not an alarm id (expected a UUID)"
            raise UnknownAlarmError(msg) from None

    # --- events ---------------------------------------------------------------------------------

    def _rule(self, alarm: _Alarm) -> CompiledRule | None:
        if alarm.slot is None:
            return None
        rule = self._rules.rules[alarm.participant][alarm.slot]
        assert rule is not None
        return rule

    def _is_paused(self, alarm: _Alarm, rule: CompiledRule | None) -> bool:
        return (
            rule is not None
            and rule.category is AlarmCategory.PHYSIOLOGICAL
            and alarm.effective_priority is not AlarmPriority.HIGH
            and (alarm.participant, PAUSE_RULE) in self._alarms
        )

    def _fields(self, alarm: _Alarm) -> dict[str, object]:
        rule = self._rule(alarm)
        paused = self._is_paused(alarm, rule)
        return {
            "alarm_id": alarm.alarm_id,
            "session": self._session,
            "participant": self._rules.participants[alarm.participant],
            "rule": PAUSE_RULE if rule is None else rule.id,
            "parameter": None if rule is None else rule.parameter,
            "priority": alarm.effective_priority,
            "category": AlarmCategory.TECHNICAL if rule is None else rule.category,
            "state": alarm.state,
            "value": alarm.value,
            "threshold": alarm.threshold,
            "message": _pause_message(alarm) if rule is None else _message(alarm, rule, paused),
            "raised_at": _at(alarm.raised_ms),
            "acknowledged_by": alarm.acknowledged_by,
            "acknowledged_at": None
            if alarm.acknowledged_ms is None
            else _at(alarm.acknowledged_ms),
            "escalation_level": alarm.escalation_level,
            "paused": paused,
            "condition_cleared": alarm.condition_cleared,
        }

    def _emit(self, alarm: _Alarm, t: int) -> AlarmEvent | None:
        """An event if anything the event shows has changed since the alarm's last one."""
        fields = self._fields(alarm)
        last = alarm.last
        if last is not None and all(getattr(last, key) == value for key, value in fields.items()):
            return None
        return self._publish(alarm, t, fields)

    def _publish(
        self, alarm: _Alarm, t: int, fields: dict[str, object] | None = None
    ) -> AlarmEvent:
        """An event, changed or not: commands, escalation steps and resolutions always show."""
        shown = self._fields(alarm) if fields is None else fields
        event = AlarmEvent.model_validate(
            {**shown, "occurred_at": _at(t), "sequence": self._next_sequence}
        )
        self._next_sequence += 1
        alarm.last = event
        return event

    # --- recovery -------------------------------------------------------------------------------

    def _replay(self, event: AlarmEvent) -> None:
        """Apply one persisted event to the state, mirroring what emitted it."""
        if event.session != self._session:
            msg = f"event {event.sequence} belongs to session {event.session}, not {self._session}"
            raise LifecycleError(msg)
        participant = self._participant_index(event.participant)
        t = self._advance(_ms(event.occurred_at))
        self._next_sequence = max(self._next_sequence, event.sequence + 1)
        self._issued.add(event.alarm_id)
        slot: int | None = None
        group = PAUSE_RULE
        if event.rule != PAUSE_RULE:
            if event.rule not in self._rules.rule_ids:
                msg = f"event {event.sequence} names rule {event.rule}, which is not in the rules"
                raise LifecycleError(msg)
            slot = self._rules.rule_ids.index(event.rule)
            if self._rules.rules[participant][slot] is None:
                msg = f"event {event.sequence}: participant {event.participant} has no {event.rule}"
                raise LifecycleError(msg)
            group = self._slot_group[slot]
        alarm = self._alarms.get((participant, group))
        if alarm is not None and alarm.alarm_id != event.alarm_id:
            self._forget(alarm)  # the log lost its resolution; the newer alarm supersedes it
            alarm = None
        if event.state is AlarmState.RESOLVED:
            if alarm is not None:
                self._forget(alarm)
            self._resolved.add(event.alarm_id)
            self._clear_group(participant, group)
            return
        if event.alarm_id in self._resolved:
            msg = f"event {event.sequence} continues alarm {event.alarm_id} after it resolved"
            raise LifecycleError(msg)
        fresh = alarm is None
        if alarm is None:
            alarm = _Alarm(
                alarm_id=event.alarm_id,
                participant=participant,
                group=group,
                raised_ms=_ms(event.raised_at),
                state=event.state,
                slot=slot,
                priority=event.priority,
            )
            self._register(alarm)
        same_rule = not fresh and alarm.slot == slot
        step = not fresh and event.escalation_level == alarm.escalation_level + 1
        alarm.state = event.state
        alarm.slot = slot
        alarm.value = event.value
        alarm.threshold = event.threshold
        alarm.condition_cleared = event.condition_cleared
        alarm.acknowledged_by = event.acknowledged_by
        alarm.acknowledged_ms = (
            None if event.acknowledged_at is None else _ms(event.acknowledged_at)
        )
        alarm.activated = alarm.activated or event.state is not AlarmState.PENDING
        alarm.last = event
        if slot is None:
            duration_s = DEFAULT_PAUSE_S if event.value is None else int(event.value)
            alarm.priority = AlarmPriority.LOW
            alarm.pause_until_ms = t + duration_s * 1000
            return
        rule = self._rules.rules[participant][slot]
        assert rule is not None
        alarm.held_high = event.state is AlarmState.ACTIVE and event.priority is AlarmPriority.HIGH
        if not alarm.held_high:
            alarm.priority = event.priority
        elif not same_rule:
            alarm.priority = rule.priority  # the condition's own priority under the latch
        if step and alarm.due_ms is not None:
            alarm.timer = AlarmPriority.HIGH
            alarm.due_ms += self._interval(participant, AlarmPriority.HIGH)
        else:
            self._rearm(alarm, t)
        alarm.escalation_level = event.escalation_level
        self._clear_group(participant, group)
        if not event.condition_cleared:
            status = (
                ConditionStatus.PENDING
                if event.state is AlarmState.PENDING
                else ConditionStatus.MET
            )
            self._conditions[(participant, slot)] = _Condition(
                status=status,
                priority=alarm.priority,
                value=event.value,
                threshold=event.threshold,
            )

    def _clear_group(self, participant: int, group: str) -> None:
        for slot in self._group_slots.get(group, ()):
            self._conditions.pop((participant, slot), None)


# --- messages: short, human, codes only ---------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.4g}"


def _quantity(value: float, parameter: Parameter) -> str:
    unit = PARAMETER_UNITS[parameter].replace("degC", "°C")
    return f"{_number(value)}{unit}" if unit == "%" else f"{_number(value)} {unit}"


def _duration(seconds: int) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _comparison(high: bool, inclusive: bool) -> str:
    if high:
        return "≥" if inclusive else ">"
    return "≤" if inclusive else "<"


def _mid_sentence(phrase: str) -> str:
    """Lower-case a phrase that continues a sentence, except acronyms (SpO2, MAP)."""
    return phrase if phrase.startswith(("SpO2", "MAP")) else phrase[0].lower() + phrase[1:]


def _describe(rule: CompiledRule, value: float | None, threshold: float | None) -> str:
    """What the condition is, e.g. ``Systolic 184 mmHg ≥ 180``."""
    spec = rule.spec
    if isinstance(spec, LimitSpec):
        label, op = _LABELS[spec.parameter], _comparison(spec.high, spec.inclusive)
        limit = spec.threshold if threshold is None else threshold
        if value is None:
            return f"{label} {op} {_quantity(limit, spec.parameter)}"
        return f"{label} {_quantity(value, spec.parameter)} {op} {_number(limit)}"
    if isinstance(spec, BaselineSpec):
        label = _LABELS[spec.parameter]
        head = label if value is None else f"{label} {_quantity(value, spec.parameter)}"
        side = "above" if spec.high else "below"
        return f"{head}, {_quantity(spec.delta, spec.parameter)} or more {side} baseline"
    if isinstance(spec, TrendSpec):
        change = spec.rate_per_min * spec.window_s / 60
        way = "rising" if spec.rising else "falling"
        return (
            f"{_LABELS[spec.parameter]} {way} {_quantity(change, spec.parameter)} or more "
            f"in {_duration(spec.window_s)}"
        )
    if isinstance(spec, StalenessSpec):
        return f"{_LABELS[spec.parameter]}: no data for {_duration(spec.stale_after_s)}"
    if isinstance(spec, CombinedSpec):
        parts = [
            f"{_LABELS[part.parameter]} {_comparison(part.high, part.inclusive)} "
            f"{_quantity(part.threshold, part.parameter)}"
            for part in spec.parts
        ]
        return " with ".join([parts[0], *(_mid_sentence(part) for part in parts[1:])])
    if isinstance(spec, ReportedSpec):
        if value is None:
            return spec.label
        mark = "" if threshold is None else f" (mark {threshold:,.0f})"
        return f"{spec.label}: {value:,.0f} {spec.unit}{mark}"
    assert isinstance(spec, News2Spec)
    if value is None:
        return "NEWS2 (partial)" if threshold is None else f"NEWS2 (partial) ≥ {_number(threshold)}"
    return f"NEWS2 (partial) score {_number(value)}"


def _message(alarm: _Alarm, rule: CompiledRule, paused: bool) -> str:
    text = _describe(rule, alarm.value, alarm.threshold)
    tags: list[str] = []
    if alarm.state is AlarmState.PENDING:
        tags.append("pending")
    elif alarm.state is AlarmState.RESOLVED and not alarm.activated:
        tags.append("cancelled while pending")
    else:
        if rule.delay_s > 0:
            text += f" for {_duration(rule.delay_s)}"
        if rule.confirm > 1:
            tags.append("confirmed")
    if alarm.state is AlarmState.ACTIVE:
        if alarm.condition_cleared:
            tags.append("condition ended, acknowledge to clear")
        if alarm.escalation_level:
            tags.append(f"escalated to level {alarm.escalation_level}")
    elif alarm.state is AlarmState.ACKNOWLEDGED:
        tags.append("acknowledged")
    elif alarm.state is AlarmState.RESOLVED and alarm.activated:
        tags.append("resolved")
    if paused:
        tags.append("paused")
    return f"{text} ({'; '.join(tags)})" if tags else text


def _pause_message(notice: _Alarm) -> str:
    if notice.state is not AlarmState.RESOLVED:
        duration = _duration(int(notice.value or DEFAULT_PAUSE_S))
        return f"Physiological alarms paused for {duration} by {notice.acknowledged_by}"
    if notice.pause_ended_by is not None:
        return f"Alarm pause ended early by {notice.pause_ended_by}"
    return "Alarm pause ended"

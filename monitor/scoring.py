"""``monitor score``: detection scored against the ground truth of simulated sessions.

Each scenario's wearables are computed from the session physiology directly (no radio:
``simulators.traces`` produces the same frames the simulated wearables send), turned into samples
exactly as :meth:`DetectionPipeline.feed` turns readings into samples, and run through one
:class:`DetectionPipeline` per configuration: the shipped protocol profiles, and a naive
single-threshold variant. A simulated staff member acknowledges every announced alarm
:data:`ACK_AFTER_S` after it sounds, so alarms resolve and recur the way they would on a staffed
ward (without it, high alarms latch for the rest of the session and every later recurrence hides
inside them).

The rules, in session seconds (0 = session start):

* An alarm **covers** a ground-truth event when it belongs to the event's participant and its
  alarm group watches the event's parameter in the event's direction: a limit, trend or baseline
  rule on that parameter (high/rising for ``above``, low/falling for ``below``), a combined rule
  with such a part, or NEWS2 when chart 1 scores the parameter at the event's threshold (NEWS2
  gives SBP 111-219 no points, so it cannot see a systolic of 180). A signal-loss event is covered
  by the staleness rules of the streams its device feeds.
* An alarm **sounds** while it is active or acknowledged with its condition present (not latched
  after the condition cleared). It is **announced** by every event that leaves it active with its
  condition present (activation, priority rise, re-alarm, escalation, condition returning).
* What an alarm shows **reaches** an event when it is high priority, or its rule is a limit (or a
  combined part) at or beyond the event's threshold, or the reading it shows (limit and baseline
  rules show the reading that raised them) is beyond the threshold: an alarm raised by SBP 165
  against "> 160" does not tell staff of SBP >= 180, one raised by SBP 191 does, and a high SpO2
  <= 91 alarm tells them of SpO2 <= 88. Signal loss: any covering staleness alarm.
* An event's **window** is ``[onset - LEAD_S, end + TAIL_S]``: ``end`` is when the true value
  settles back across the threshold (re-crossings within 10 min belong to the episode, as in the
  scenarios' answer key) or the signal returns. :data:`LEAD_S` (30 min) is the longest look-back
  of any default rule (the temperature rise over 30 min): lower tiers, rises and baseline rules
  may rightly sound before the threshold is crossed. :data:`TAIL_S` is the 10 min episode gap.
* An event is **detected** at its onset when a covering alarm sounds at the onset showing
  something that reaches it and was announced in ``[onset - LEAD_S, onset]``; otherwise at the
  first announcement of a covering alarm in ``(onset, end + TAIL_S]`` that reaches it.
  Latency = detection time - onset (0 when staff already had it).
* An alarm is **non-actionable** when it became active at a time that lies in the window of no
  ground-truth event it covers. Every priority counts, technical alarms too. Rates are per
  participant-hour of session time.
* A scenario is scored over ``[0, duration)``: every scenario runs in the same pipeline until the
  longest one ends, and what its participants' alarms do after its own end (their wearables have
  stopped, so staleness would sound) is not counted.

Targets: every ``critical`` event detected within :data:`TARGET_LATENCY_S` of onset; at most
:data:`TARGET_NON_ACTIONABLE_PER_HOUR` non-actionable alarm per participant-hour on the scenarios
in :data:`FALSE_ALARM_SCENARIOS` (reported for all). A scenario set without those scenarios is
held to the latency target only.

The naive configuration has, per participant, one limit per parameter and direction at the
protocol's lowest alarm limit (its most sensitive tier), no delay, no confirmation, no hysteresis
and no artefact rejection (quality flags ignored, no plausibility or spike checks); it keeps the
protocol's staleness rules so that technical events are scored alike.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import datetime as dt
import heapq
import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

from monitor.alerts.compile import compile_rules
from monitor.alerts.inputs import SampleBatch
from monitor.alerts.pipeline import DetectionPipeline, to_ms
from monitor.alerts.rules import (
    BaselineSpec,
    CombinedSpec,
    CompiledRule,
    EscalationSettings,
    LimitSpec,
    News2Spec,
    RuleSet,
    RuleSetError,
    StalenessSpec,
    TrendSpec,
)
from monitor.config import ConfigError, ProtocolProfile, SiteConfig, load_protocol
from monitor.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from monitor.models import (
    DETECTION_PARAMETERS,
    EVIDENCE_KINDS,
    NOT_EVIDENCE,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    ArtefactSettings,
    DeviceKind,
    Parameter,
    QualityFlag,
    ReadingKind,
)

if TYPE_CHECKING:
    from simulators.scenario import GroundTruthEvent, Scenario, SessionModel

__all__ = [
    "ACK_AFTER_S",
    "FALSE_ALARM_SCENARIOS",
    "LEAD_S",
    "ORIGIN",
    "PROTOCOLS_DIR",
    "TAIL_S",
    "TARGET_LATENCY_S",
    "TARGET_NON_ACTIONABLE_PER_HOUR",
    "AlarmRecord",
    "ConfigurationResult",
    "Detection",
    "ParticipantInput",
    "ReadingColumns",
    "ScenarioInput",
    "ScenarioResult",
    "ScoreReport",
    "TruthEvent",
    "alarm_records",
    "detect",
    "format_report",
    "is_non_actionable",
    "naive_rules",
    "report_json",
    "run_score",
    "sample_batch",
    "score",
]

FloatArray = npt.NDArray[np.float64]
Direction = Literal["above", "below"]

TARGET_LATENCY_S: Final = 120.0
TARGET_NON_ACTIONABLE_PER_HOUR: Final = 1.0
FALSE_ALARM_SCENARIOS: Final = ("mdma-typical", "psilocybin-typical", "artifacts")
LEAD_S: Final = 1800.0
TAIL_S: Final = 600.0
ACK_AFTER_S: Final = 60.0
"""Simulated staff response: under both escalation timers (2 and 5 min), so nothing escalates."""
PROTOCOLS_DIR: Final = Path(__file__).resolve().parent.parent / "config" / "protocols"

ORIGIN: Final = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
"""Session time 0 in every scored pipeline (any fixed instant: detection reads no clock)."""
_ORIGIN_MS: Final = to_ms(ORIGIN)
_STAFF: Final = "score-staff"
_SESSION: Final = "score"
_SOUNDING: Final = frozenset({AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED})
_PARAMETER_INDEX: Final[Mapping[Parameter, int]] = MappingProxyType(
    {parameter: index for index, parameter in enumerate(DETECTION_PARAMETERS)}
)
_DEVICE_STREAMS: Final[Mapping[DeviceKind, frozenset[Parameter]]] = MappingProxyType(
    {
        DeviceKind.HEART_RATE: frozenset({Parameter.HEART_RATE}),
        DeviceKind.BLOOD_PRESSURE: frozenset({Parameter.SYSTOLIC_BP, Parameter.DIASTOLIC_BP}),
        DeviceKind.THERMOMETER: frozenset({Parameter.TEMPERATURE}),
        DeviceKind.PULSE_OXIMETER: frozenset({Parameter.SPO2}),
    }
)
_NEWS2_SCORES_BEYOND: Final[Mapping[tuple[Parameter, str], float]] = MappingProxyType(
    {
        (Parameter.HEART_RATE, "above"): 90.0,
        (Parameter.HEART_RATE, "below"): 50.0,
        (Parameter.SYSTOLIC_BP, "above"): 219.0,
        (Parameter.SYSTOLIC_BP, "below"): 110.0,
        (Parameter.TEMPERATURE, "above"): 38.0,
        (Parameter.TEMPERATURE, "below"): 36.0,
        (Parameter.SPO2, "below"): 95.0,
    }
)
"""Where NEWS2 chart 1 starts to score: above the limit (``above``) or at/below it (``below``)."""
_SIGNAL: Final = "signal"  # the "direction" a staleness rule watches

# ------------------------------------------------------------------------------------------------
# Inputs: what the scoring needs to know about a scenario, in the monitor's own vocabulary
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """A ground-truth event with the end of its episode (from the true physiology)."""

    id: str
    participant: str
    kind: str
    severity: str
    onset_s: float
    end_s: float
    parameter: Parameter | None = None
    direction: Direction | None = None
    threshold: float | None = None
    device: DeviceKind | None = None

    @property
    def signal_loss(self) -> bool:
        """A technical event: the device's data stopped."""
        return self.device is not None and self.direction is None

    def watched(self) -> frozenset[tuple[Parameter, str]]:
        """The (parameter, direction) pairs an alarm must watch to cover this event."""
        if self.signal_loss:
            assert self.device is not None
            streams = {self.parameter} if self.parameter else _DEVICE_STREAMS[self.device]
            return frozenset((parameter, _SIGNAL) for parameter in streams)
        assert self.parameter is not None
        assert self.direction is not None
        return frozenset({(self.parameter, self.direction)})


@dataclass(frozen=True, slots=True, eq=False)
class ReadingColumns:
    """Readings of one kind from one participant's wearable, as columns (one row a reading).

    ``values`` holds NaN where a reading has no value; ``quality`` is each reading's flags.
    """

    kind: ReadingKind
    t_s: FloatArray
    values: Mapping[Parameter, FloatArray]
    quality: Sequence[frozenset[QualityFlag]]


@dataclass(frozen=True, slots=True, eq=False)
class ParticipantInput:
    """One participant of a scenario: protocol, wearables, doses and what the wearables sent."""

    code: str
    room: str
    protocol: str
    devices: tuple[DeviceKind, ...]
    doses_s: tuple[float, ...]
    readings: tuple[ReadingColumns, ...]


@dataclass(frozen=True, slots=True, eq=False)
class ScenarioInput:
    """A whole scenario, ready to score."""

    name: str
    duration_s: float
    participants: tuple[ParticipantInput, ...]
    truth: tuple[TruthEvent, ...]

    @property
    def participant_hours(self) -> float:
        """Monitored time, the denominator of the false-alarm rate."""
        return len(self.participants) * self.duration_s / 3600.0


# ------------------------------------------------------------------------------------------------
# Rule sets
# ------------------------------------------------------------------------------------------------


def _site_config(scenario: ScenarioInput, profiles: Mapping[str, ProtocolProfile]) -> SiteConfig:
    """One session per room, as a site would configure the scenario's participants."""
    rooms = sorted({participant.room for participant in scenario.participants})
    sessions = []
    for room in rooms:
        members = [p for p in scenario.participants if p.room == room]
        participants = [
            {
                "code": p.code,
                "protocol": p.protocol,
                "devices": [
                    {"id": f"{kind}-{p.code}", "kind": kind, "name_pattern": f"{kind}-{p.code}"}
                    for kind in p.devices
                ],
            }
            for p in members
        ]
        sessions.append(
            {
                "id": room,
                "room": room,
                "protocol": members[0].protocol,
                "participants": participants,
            }
        )
    return SiteConfig.model_validate(
        {
            "site": {"code": "SCORE", "timezone": "UTC"},
            "rooms": [{"id": room, "max_connections": 20} for room in rooms],
            "sessions": sessions,
            "protocols": dict(profiles),
        }
    )


@dataclass(frozen=True, slots=True)
class _Rows:
    """Compiled rules of every scored participant, keyed by a pipeline-wide participant code."""

    rules: dict[str, list[CompiledRule]] = field(default_factory=dict)
    escalation: dict[str, EscalationSettings] = field(default_factory=dict)
    artefacts: list[ArtefactSettings] = field(default_factory=list)

    def rule_set(self, artefacts: ArtefactSettings | None = None) -> RuleSet:
        if artefacts is None:
            if any(a != self.artefacts[0] for a in self.artefacts):
                msg = "the scored protocols disagree on their [artefacts] settings"
                raise RuleSetError(msg)
            artefacts = self.artefacts[0]
        return RuleSet.build(self.rules, self.escalation, artefacts=artefacts)


def _key(scenario_index: int, code: str) -> str:
    """Participant code inside the one pipeline that runs every scenario at once."""
    return f"{scenario_index}.{code}"


def _compile(scenarios: Sequence[ScenarioInput], profiles: Mapping[str, ProtocolProfile]) -> _Rows:
    rows = _Rows()
    for index, scenario in enumerate(scenarios):
        config = _site_config(scenario, profiles)
        for session in config.sessions:
            compiled = compile_rules(config, session.id)
            rows.artefacts.append(compiled.artefacts)
            for row, code in enumerate(compiled.participants):
                key = _key(index, code)
                rows.rules[key] = [rule for rule in compiled.rules[row] if rule is not None]
                rows.escalation[key] = compiled.escalation[row]
    return rows


_NO_REJECTION: Final = ArtefactSettings(
    plausible=MappingProxyType(dict.fromkeys(DETECTION_PARAMETERS, (-math.inf, math.inf))),
    spike_delta=MappingProxyType(dict.fromkeys(DETECTION_PARAMETERS)),
)


def naive_rules(rules: Sequence[CompiledRule]) -> list[CompiledRule]:
    """One participant's naive configuration, derived from their compiled protocol rules.

    Per parameter and direction, the most sensitive physiological limit of the protocol (lowest
    high limit, highest low limit; inclusive wins a tie) with its priority, and nothing else:
    no delay, confirmation or hysteresis. Staleness rules are kept as they are.
    """
    chosen: dict[tuple[Parameter, bool], tuple[LimitSpec, CompiledRule]] = {}
    for rule in rules:
        spec = rule.spec
        if not isinstance(spec, LimitSpec):
            continue
        key = (spec.parameter, spec.high)
        best = chosen.get(key)
        if best is None or _more_sensitive(spec, best[0]):
            chosen[key] = (spec, rule)
    naive = [
        CompiledRule(
            id=f"naive-{parameter}-{'high' if high else 'low'}".replace("_", "-"),
            spec=LimitSpec(parameter, high, spec.threshold, spec.inclusive),
            priority=rule.priority,
        )
        for (parameter, high), (spec, rule) in chosen.items()
    ]
    naive.extend(rule for rule in rules if isinstance(rule.spec, StalenessSpec))
    return naive


def _more_sensitive(spec: LimitSpec, than: LimitSpec) -> bool:
    if spec.threshold != than.threshold:
        return spec.threshold < than.threshold if spec.high else spec.threshold > than.threshold
    return spec.inclusive and not than.inclusive


def _watches(rule: CompiledRule) -> frozenset[tuple[Parameter, str]]:
    """The (parameter, direction) pairs one rule watches (NEWS2: see ``_news2_sees``)."""
    spec = rule.spec
    if isinstance(spec, LimitSpec | BaselineSpec):
        return frozenset({(spec.parameter, "above" if spec.high else "below")})
    if isinstance(spec, TrendSpec):
        return frozenset({(spec.parameter, "above" if spec.rising else "below")})
    if isinstance(spec, StalenessSpec):
        return frozenset({(spec.parameter, _SIGNAL)})
    if isinstance(spec, CombinedSpec):
        return frozenset((p.parameter, "above" if p.high else "below") for p in spec.parts)
    return frozenset()


# ------------------------------------------------------------------------------------------------
# Running detection
# ------------------------------------------------------------------------------------------------


def _flagged(kind: ReadingKind, quality: frozenset[QualityFlag]) -> bool:
    """``not Reading.usable``: the flag the pipeline gives a reading's samples."""
    return not (kind in EVIDENCE_KINDS and not quality & NOT_EVIDENCE)


def sample_batch(
    rows: Mapping[str, int],
    readings: Mapping[str, Sequence[ReadingColumns]],
    *,
    trust_flags: bool = True,
) -> SampleBatch:
    """Readings fanned out into one time-ordered batch, as :meth:`DetectionPipeline.feed` would.

    ``rows`` gives each participant's row in the rule set, ``readings`` their readings.
    ``trust_flags=False`` (the naive configuration) takes every reading as evidence; a missing
    value is still no evidence, since it is not a number. Samples of one instant keep the order
    of ``readings``, as readings given to ``feed`` in that order would.
    """
    t_parts, who, what, values, flags = [], [], [], [], []
    for code, columns_list in readings.items():
        row = rows[code]
        for columns in columns_list:
            if columns.kind not in EVIDENCE_KINDS:
                continue  # cuff inflation, intermediate temperature: no samples (feed)
            t_ms = _ORIGIN_MS + (np.rint(columns.t_s * 1e6).astype(np.int64) // 1000)
            flagged = np.fromiter(
                (trust_flags and _flagged(columns.kind, q) for q in columns.quality),
                dtype=np.bool_,
                count=len(columns.quality),
            )
            for parameter, column in columns.values.items():
                stream = _PARAMETER_INDEX.get(parameter)
                if stream is None:
                    continue
                t_parts.append(t_ms)
                who.append(np.full(t_ms.shape[0], row, dtype=np.int32))
                what.append(np.full(t_ms.shape[0], stream, dtype=np.int8))
                values.append(column)
                flags.append(flagged)
    if not t_parts:
        return SampleBatch.from_rows([])
    t_all = np.concatenate(t_parts)
    order = np.argsort(t_all, kind="stable")
    return SampleBatch(
        t_ms=t_all[order],
        participant=np.concatenate(who)[order],
        parameter=np.concatenate(what)[order],
        value=np.concatenate(values)[order],
        flagged=np.concatenate(flags)[order],
    )


class _Staff:
    """Acknowledges every alarm ``ACK_AFTER_S`` after it is announced, if it is still active."""

    def __init__(self, pipeline: DetectionPipeline) -> None:
        self.pipeline = pipeline
        self.state: dict[str, AlarmState] = {}
        self.due: list[tuple[int, str]] = []
        self._scheduled: set[str] = set()
        self._after_ms = round(ACK_AFTER_S * 1000)

    def watch(self, events: list[AlarmEvent]) -> list[AlarmEvent]:
        for event in events:
            alarm = str(event.alarm_id)
            self.state[alarm] = event.state
            if event.state is AlarmState.ACTIVE and alarm not in self._scheduled:
                self._scheduled.add(alarm)
                heapq.heappush(self.due, (to_ms(event.occurred_at) + self._after_ms, alarm))
        return events

    def next_due_ms(self) -> float:
        return self.due[0][0] if self.due else math.inf

    def acknowledge_due(self, t_ms: int) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        while self.due and self.due[0][0] <= t_ms:
            _, alarm = heapq.heappop(self.due)
            self._scheduled.discard(alarm)
            if self.state.get(alarm) is AlarmState.ACTIVE:
                moment = ORIGIN + dt.timedelta(milliseconds=t_ms - _ORIGIN_MS)
                events += self.watch(self.pipeline.acknowledge(alarm, _STAFF, moment))
        return events


def _run(
    rules: RuleSet, batch: SampleBatch, doses: Sequence[tuple[int, str]], end_ms: int
) -> list[AlarmEvent]:
    """The pipeline over every sample, with dose markers and staff acknowledgements on time.

    Steps of at most ``ACK_AFTER_S`` guarantee that an acknowledgement falls due only after the
    step that announced its alarm. At one instant: samples, then markers, then the tick, then
    acknowledgements (docs/detection.md section 1; a command follows the ticks before it).
    """
    pipeline = DetectionPipeline(rules, session=_SESSION, origin=ORIGIN)
    staff = _Staff(pipeline)
    step_ms = round(ACK_AFTER_S * 1000)
    pending = sorted(doses)
    events: list[AlarmEvent] = []
    now, position, dose = _ORIGIN_MS, 0, 0
    while now < end_ms:
        next_dose = pending[dose][0] if dose < len(pending) else math.inf
        until = int(min(now + step_ms, next_dose, staff.next_due_ms(), end_ms))
        stop = int(np.searchsorted(batch.t_ms, until, side="right"))
        if stop > position:
            part = slice(position, stop)
            chunk = SampleBatch(
                t_ms=batch.t_ms[part],
                participant=batch.participant[part],
                parameter=batch.parameter[part],
                value=batch.value[part],
                flagged=batch.flagged[part],
            )
            events += staff.watch(pipeline.feed_samples(chunk))
            position = stop
        while dose < len(pending) and pending[dose][0] == until:
            moment = ORIGIN + dt.timedelta(milliseconds=until - _ORIGIN_MS)
            events += staff.watch(pipeline.mark_dose(pending[dose][1], moment))
            dose += 1
        events += staff.watch(pipeline.advance_ms(until))
        events += staff.acknowledge_due(until)
        now = until
    return events


# ------------------------------------------------------------------------------------------------
# Matching alarms to the ground truth
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class AlarmRecord:
    """One alarm (one ``alarm_id``) as the scorer sees it, times in session seconds.

    ``rules`` are the rules of the alarm's group (its tiers), by id.
    """

    alarm_id: str
    participant: str
    rules: Mapping[str, CompiledRule]
    events: list[tuple[float, AlarmEvent]] = field(default_factory=list)

    @property
    def first_active_s(self) -> float | None:
        """When it first became active (None: it never did, it stayed pending)."""
        for t_s, event in self.events:
            if event.state is AlarmState.ACTIVE:
                return t_s
        return None

    def covers(self, truth: TruthEvent) -> bool:
        """Whether the alarm's group watches the event's parameter in its direction."""
        if truth.participant != self.participant:
            return False
        watched = truth.watched()
        for rule in self.rules.values():
            if isinstance(rule.spec, News2Spec):
                if _news2_sees(truth):
                    return True
            elif _watches(rule) & watched:
                return True
        return False

    def reaches(self, shown: AlarmEvent, truth: TruthEvent) -> bool:
        """Whether what the alarm shows tells staff of this event, not only of a lower tier:
        high priority, a limit (or combined part) at or beyond the event's threshold, or a
        shown reading beyond it (a limit or baseline rule shows the reading that raised it)."""
        if shown.priority is AlarmPriority.HIGH or truth.signal_loss:
            return True
        rule = self.rules.get(shown.rule)
        if rule is None or truth.threshold is None:
            return False
        high = truth.direction == "above"
        spec = rule.spec
        levels: list[float] = []
        same_side = (
            isinstance(spec, LimitSpec | BaselineSpec)
            and spec.parameter is truth.parameter
            and spec.high == high
        )
        if same_side and shown.value is not None:
            levels.append(shown.value)
        if same_side and isinstance(spec, LimitSpec):
            levels.append(spec.threshold)
        if isinstance(spec, CombinedSpec):
            levels += [
                part.threshold
                for part in spec.parts
                if part.parameter is truth.parameter and part.high == high
            ]
        if high:
            return any(level >= truth.threshold for level in levels)
        return any(level <= truth.threshold for level in levels)

    def announcements(self) -> list[tuple[float, AlarmEvent]]:
        """Events that leave it active with its condition present."""
        return [
            (t_s, event)
            for t_s, event in self.events
            if event.state is AlarmState.ACTIVE and not event.condition_cleared
        ]

    def shown_at(self, t_s: float) -> AlarmEvent | None:
        """Its latest event at or before ``t_s`` if it sounds then, else None."""
        times = [time for time, _ in self.events]
        index = bisect.bisect_right(times, t_s) - 1
        if index < 0:
            return None
        event = self.events[index][1]
        sounding = event.state in _SOUNDING and not event.condition_cleared
        return event if sounding else None


def _news2_sees(truth: TruthEvent) -> bool:
    """Whether NEWS2 scores the event's parameter at its limit (docs/clinical-basis.md#news2)."""
    if truth.signal_loss or truth.parameter is None or truth.direction is None:
        return False
    limit = _NEWS2_SCORES_BEYOND.get((truth.parameter, truth.direction))
    if limit is None or truth.threshold is None:
        return False
    return truth.threshold > limit if truth.direction == "above" else truth.threshold <= limit


def alarm_records(
    events: Iterable[AlarmEvent], rules_by_participant: Mapping[str, Sequence[CompiledRule]]
) -> list[AlarmRecord]:
    """Group alarm events by alarm, each with the rules of its group."""
    records: dict[str, AlarmRecord] = {}
    for event in events:
        alarm = str(event.alarm_id)
        record = records.get(alarm)
        if record is None:
            rules = rules_by_participant[event.participant]
            group = next(rule.alarm for rule in rules if rule.id == event.rule)
            tiers = MappingProxyType({rule.id: rule for rule in rules if rule.alarm == group})
            record = AlarmRecord(alarm, event.participant, tiers)
            records[alarm] = record
        t_s = (to_ms(event.occurred_at) - _ORIGIN_MS) / 1000.0
        record.events.append((t_s, event))
    return list(records.values())


@dataclass(frozen=True, slots=True)
class Detection:
    """How a ground-truth event was detected: how late, and by which alarm as it was shown."""

    latency_s: float
    rule: str
    priority: AlarmPriority


def _window(event: TruthEvent) -> tuple[float, float]:
    return event.onset_s - LEAD_S, event.end_s + TAIL_S


def detect(event: TruthEvent, records: Iterable[AlarmRecord]) -> Detection | None:
    """The module docstring's detection rule; None when no covering alarm told staff of it."""
    start, end = _window(event)
    best: tuple[float, AlarmEvent] | None = None
    for record in records:
        if not record.covers(event):
            continue
        announced = record.announcements()
        shown = record.shown_at(event.onset_s)
        if (
            shown is not None
            and record.reaches(shown, event)
            and any(start <= t <= event.onset_s for t, _ in announced)
        ):
            candidate: tuple[float, AlarmEvent] | None = (event.onset_s, shown)
        else:
            candidate = next(
                (
                    (t, e)
                    for t, e in announced
                    if event.onset_s < t <= end and record.reaches(e, event)
                ),
                None,
            )
        if candidate is not None and (best is None or candidate[0] < best[0]):
            best = candidate
    if best is None:
        return None
    t_s, shown_event = best
    return Detection(
        latency_s=t_s - event.onset_s, rule=shown_event.rule, priority=shown_event.priority
    )


def is_non_actionable(record: AlarmRecord, truth: Iterable[TruthEvent]) -> bool:
    """The module docstring's rule: active, and in the window of no event it covers."""
    t_s = record.first_active_s
    if t_s is None:
        return False
    for event in truth:
        start, end = _window(event)
        if start <= t_s <= end and record.covers(event):
            return False
    return True


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigurationResult:
    """One scenario under one configuration."""

    detections: Mapping[str, Detection | None]
    alarms: int
    non_actionable: Mapping[str, int]  # by rule id shown when the alarm became active

    @property
    def non_actionable_total(self) -> int:
        """Non-actionable alarms over the whole scenario."""
        return sum(self.non_actionable.values())


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario under both configurations."""

    scenario: ScenarioInput
    profile: ConfigurationResult
    naive: ConfigurationResult

    def rate(self, result: ConfigurationResult) -> float:
        """Non-actionable alarms per participant-hour."""
        return result.non_actionable_total / self.scenario.participant_hours

    @property
    def held_to_false_alarm_target(self) -> bool:
        """Whether the false-alarm target applies to this scenario."""
        return self.scenario.name in FALSE_ALARM_SCENARIOS

    def missed_critical(self) -> list[str]:
        """Critical events the profiles did not detect within the latency target."""
        missed = []
        for event in self.scenario.truth:
            found = self.profile.detections[event.id]
            if event.severity == "critical" and (
                found is None or found.latency_s > TARGET_LATENCY_S
            ):
                missed.append(event.id)
        return missed

    @property
    def false_alarm_target_met(self) -> bool:
        """Met, or not applicable here."""
        return (
            not self.held_to_false_alarm_target
            or self.rate(self.profile) <= TARGET_NON_ACTIONABLE_PER_HOUR
        )


@dataclass(frozen=True, slots=True)
class ScoreReport:
    """Every scored scenario and the verdict."""

    scenarios: tuple[ScenarioResult, ...]

    @property
    def targets_met(self) -> bool:
        """Both targets, on every scenario they apply to."""
        return all(not s.missed_critical() and s.false_alarm_target_met for s in self.scenarios)


def _configuration(
    scenarios: Sequence[ScenarioInput], rules: RuleSet, *, trust_flags: bool
) -> list[ConfigurationResult]:
    rows = {code: index for index, code in enumerate(rules.participants)}
    readings = {
        _key(index, participant.code): participant.readings
        for index, scenario in enumerate(scenarios)
        for participant in scenario.participants
    }
    batch = sample_batch(rows, readings, trust_flags=trust_flags)
    doses = [
        (_ORIGIN_MS + round(at_s * 1000), _key(index, participant.code))
        for index, scenario in enumerate(scenarios)
        for participant in scenario.participants
        for at_s in participant.doses_s
    ]
    end_ms = _ORIGIN_MS + round(max(s.duration_s for s in scenarios) * 1000)
    events = _run(rules, batch, doses, end_ms)
    by_key: dict[str, list[CompiledRule]] = {}
    for row, key in enumerate(rules.participants):
        by_key[key] = [rule for rule in rules.rules[row] if rule is not None]
    per_scenario: dict[int, list[AlarmEvent]] = defaultdict(list)
    for event in events:
        index = int(event.participant.split(".", 1)[0])
        if to_ms(event.occurred_at) - _ORIGIN_MS < scenarios[index].duration_s * 1000:
            per_scenario[index].append(event)
    results = []
    for index, scenario in enumerate(scenarios):
        records = alarm_records(per_scenario[index], by_key)
        truth = [
            dataclasses.replace(event, participant=_key(index, event.participant))
            for event in scenario.truth
        ]
        active = [r for r in records if r.first_active_s is not None]
        non_actionable: Counter[str] = Counter()
        for record in active:
            if is_non_actionable(record, truth):
                first = next(e for _, e in record.events if e.state is AlarmState.ACTIVE)
                non_actionable[first.rule] += 1
        results.append(
            ConfigurationResult(
                detections={event.id: detect(event, records) for event in truth},
                alarms=len(active),
                non_actionable=dict(sorted(non_actionable.items())),
            )
        )
    return results


def score(
    scenarios: Sequence[ScenarioInput], profiles: Mapping[str, ProtocolProfile]
) -> ScoreReport:
    """Score every scenario under the protocol profiles and under the naive configuration.

    All scenarios run in one pipeline per configuration (participants never interact in
    detection): the engine's cost is per tick, not per participant.
    """
    rows = _compile(scenarios, profiles)
    profile_rules = rows.rule_set()
    naive_rows = _Rows(
        rules={key: naive_rules(rules) for key, rules in rows.rules.items()},
        escalation=rows.escalation,
    )
    naive = naive_rows.rule_set(_NO_REJECTION)
    profile_results = _configuration(scenarios, profile_rules, trust_flags=True)
    naive_results = _configuration(scenarios, naive, trust_flags=False)
    return ScoreReport(
        tuple(
            ScenarioResult(scenario, mine, theirs)
            for scenario, mine, theirs in zip(
                scenarios, profile_results, naive_results, strict=True
            )
        )
    )


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def _clock(t_s: float) -> str:
    whole = round(t_s)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _found(detection: Detection | None) -> str:
    if detection is None:
        return "not detected"
    return f"{detection.latency_s:+.0f} s {detection.rule} ({detection.priority})"


def _top(counts: Mapping[str, int], limit: int = 3) -> str:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return ", ".join(f"{rule} {count}" for rule, count in ranked) or "-"


def _rate(result: ScenarioResult, which: ConfigurationResult) -> str:
    return f"{which.non_actionable_total} ({result.rate(which):.2f}/participant-hour)"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


_HEADER: Final = f"""\
monitor score: the protocol profiles against the scenarios' ground truth, next to a naive
configuration (one limit per parameter at the protocol's lowest alarm limit; no delay,
confirmation, hysteresis or artefact rejection). Session time; simulated staff acknowledge every
alarm {ACK_AFTER_S:.0f} s after it sounds.
  latency   first moment a covering alarm tells staff of the event (high priority, or a limit or
            reading at or beyond the event's threshold); +0 s: it already did at onset, having
            been announced at most {LEAD_S / 60:.0f} min before
  non-act.  alarms that became active outside [onset - {LEAD_S / 60:.0f} min, episode end + \
{TAIL_S / 60:.0f} min] of
            every ground-truth event they cover"""


def format_report(report: ScoreReport) -> str:
    """The human-readable report: a table per scenario, then the targets."""
    lines = [_HEADER]
    for result in report.scenarios:
        scenario = result.scenario
        width = max([len(event.id) for event in scenario.truth] + [16])
        lines += [
            "",
            f"{scenario.name}: {len(scenario.participants)} participant(s) x "
            f"{scenario.duration_s / 3600:.1f} h = {scenario.participant_hours:.1f} "
            "participant-hours",
        ]
        if scenario.truth:
            lines.append(f"  {'event':{width}}  {'severity':8}  {'onset':7}  latency")
        else:
            lines.append("  no ground-truth events")
        for event in scenario.truth:
            lines.append(
                f"  {event.id:{width}}  {event.severity:8}  {_clock(event.onset_s):7}  "
                f"profiles {_found(result.profile.detections[event.id])}"
            )
            lines.append(
                f"  {'':{width}}  {'':8}  {'':7}  naive    "
                f"{_found(result.naive.detections[event.id])}"
            )
        target = "  <- target <= 1" if result.held_to_false_alarm_target else ""
        lines += [
            f"  alarms raised:  profiles {result.profile.alarms}, naive {result.naive.alarms}",
            f"  non-actionable: profiles {_rate(result, result.profile)}{target}",
            f"                  naive    {_rate(result, result.naive)}",
            f"  non-actionable by rule: profiles {_top(result.profile.non_actionable)}; "
            f"naive {_top(result.naive.non_actionable)}",
        ]
    lines += ["", "Targets (profiles; naive in brackets)"]
    critical = [
        (result, event)
        for result in report.scenarios
        for event in result.scenario.truth
        if event.severity == "critical"
    ]

    def in_time(detection: Detection | None) -> bool:
        return detection is not None and detection.latency_s <= TARGET_LATENCY_S

    mine = sum(in_time(r.profile.detections[e.id]) for r, e in critical)
    theirs = sum(in_time(r.naive.detections[e.id]) for r, e in critical)
    lines.append(
        f"  critical events detected within {TARGET_LATENCY_S:.0f} s of onset: "
        f"{mine} of {len(critical)} [{theirs}]  {_verdict(mine == len(critical))}"
    )
    held = [result for result in report.scenarios if result.held_to_false_alarm_target]
    lines.append(
        f"  <= {TARGET_NON_ACTIONABLE_PER_HOUR:.0f} non-actionable alarm per participant-hour "
        f"on {', '.join(FALSE_ALARM_SCENARIOS)}:"
        f"  {_verdict(all(r.false_alarm_target_met for r in held))}"
    )
    lines += [
        f"    {r.scenario.name} {r.rate(r.profile):.2f} [{r.rate(r.naive):.2f}]" for r in held
    ]
    if not held:
        lines.append("    none of them scored")
    lines.append(f"targets met: {'yes' if report.targets_met else 'no'}")
    return "\n".join(lines)


def _detection_json(detection: Detection | None) -> dict[str, object]:
    if detection is None:
        return {
            "detected": False,
            "latency_s": None,
            "within_target": False,
            "rule": None,
            "priority": None,
        }
    return {
        "detected": True,
        "latency_s": detection.latency_s,
        "within_target": detection.latency_s <= TARGET_LATENCY_S,
        "rule": detection.rule,
        "priority": str(detection.priority),
    }


def _configuration_json(result: ScenarioResult, which: ConfigurationResult) -> dict[str, object]:
    return {
        "alarms": which.alarms,
        "non_actionable": which.non_actionable_total,
        "non_actionable_per_participant_hour": round(result.rate(which), 4),
        "non_actionable_by_rule": dict(which.non_actionable),
    }


def report_json(report: ScoreReport) -> dict[str, object]:
    """The report as one JSON-ready object."""
    scenarios = []
    for result in report.scenarios:
        scenario = result.scenario
        scenarios.append(
            {
                "name": scenario.name,
                "participants": len(scenario.participants),
                "duration_s": scenario.duration_s,
                "participant_hours": scenario.participant_hours,
                "false_alarm_target_applies": result.held_to_false_alarm_target,
                "false_alarm_target_met": result.false_alarm_target_met,
                "missed_critical": result.missed_critical(),
                "events": [
                    {
                        "id": event.id,
                        "participant": event.participant,
                        "kind": event.kind,
                        "severity": event.severity,
                        "parameter": None if event.parameter is None else str(event.parameter),
                        "onset_s": event.onset_s,
                        "end_s": event.end_s,
                        "profiles": _detection_json(result.profile.detections[event.id]),
                        "naive": _detection_json(result.naive.detections[event.id]),
                    }
                    for event in scenario.truth
                ],
                "profiles": _configuration_json(result, result.profile),
                "naive": _configuration_json(result, result.naive),
            }
        )
    return {
        "targets": {
            "critical_latency_s": TARGET_LATENCY_S,
            "non_actionable_per_participant_hour": TARGET_NON_ACTIONABLE_PER_HOUR,
            "false_alarm_scenarios": list(FALSE_ALARM_SCENARIOS),
        },
        "rules": {
            "lead_s": LEAD_S,
            "tail_s": TAIL_S,
            "acknowledge_after_s": ACK_AFTER_S,
        },
        "scenarios": scenarios,
        "targets_met": report.targets_met,
    }


# ------------------------------------------------------------------------------------------------
# The command, and its one door into simulators/
# ------------------------------------------------------------------------------------------------

_EPISODE_GAP_S: Final = 600.0  # the answer key's episode merge (simulators.scenario)
_EPISODE_STEP_S: Final = 5.0


def run_score(args: argparse.Namespace) -> int:
    """``monitor score``: exit 0 when every target is met, 1 when one is missed, 2 for bad input.

    Scoring is a developer tool, so it may use the simulators; like the rest of the CLI it
    imports them here, lazily, and nowhere else: the functions above see only monitor types.
    """
    from simulators.scenario import ScenarioError, list_scenarios, load_scenario  # noqa: PLC0415

    names = list(args.scenarios) or list_scenarios()
    try:
        scenarios = [load_scenario(name) for name in names]
    except ScenarioError as error:
        sys.stderr.write(f"monitor score: {error}\n")
        return EXIT_BAD_INPUT
    protocols = sorted({str(p.protocol) for s in scenarios for p in s.participants})
    try:
        profiles = {name: load_protocol(PROTOCOLS_DIR / f"{name}.toml") for name in protocols}
    except ConfigError as error:
        sys.stderr.write(f"monitor score: {error}\n")
        return EXIT_BAD_INPUT
    report = score([_scenario_input(scenario) for scenario in scenarios], profiles)
    if args.json:
        sys.stdout.write(json.dumps(report_json(report), indent=2) + "\n")
    else:
        sys.stdout.write(format_report(report) + "\n")
    return EXIT_OK if report.targets_met else EXIT_FAILED


def _scenario_input(scenario: Scenario) -> ScenarioInput:
    """A scenario's wearables computed whole (``simulators.traces``) and its answer key."""
    from simulators.scenario import session_models  # noqa: PLC0415
    from simulators.traces import wearable_traces  # noqa: PLC0415

    models = session_models(scenario)
    participants = tuple(
        ParticipantInput(
            code=spec.code,
            room=spec.room,
            protocol=str(spec.protocol),
            devices=tuple(spec.devices),
            doses_s=tuple(dose.at_s for dose in spec.doses),
            readings=tuple(
                ReadingColumns(trace.kind, trace.t_s, trace.values, trace.quality)
                for trace in wearable_traces(models[spec.code])
            ),
        )
        for spec in scenario.participants
    )
    truth = tuple(_truth_event(event, models[event.participant]) for event in scenario.ground_truth)
    return ScenarioInput(scenario.name, scenario.duration_s, participants, truth)


def _truth_event(event: GroundTruthEvent, model: SessionModel) -> TruthEvent:
    return TruthEvent(
        id=event.id,
        participant=event.participant,
        kind=str(event.kind),
        severity=str(event.severity),
        onset_s=event.onset_s,
        end_s=_episode_end(event, model),
        parameter=event.parameter,
        direction=None if event.direction is None else _direction(str(event.direction)),
        threshold=event.threshold,
        device=event.device,
    )


def _direction(text: str) -> Direction:
    return "above" if text == "above" else "below"


def _episode_end(event: GroundTruthEvent, model: SessionModel) -> float:
    """When the true condition ends: the signal back, or the value back across the threshold
    for good (a return within 10 min continues the episode)."""
    from simulators.physiology import ArtefactKind  # noqa: PLC0415
    from simulators.scenario import PARAMETER_VITAL  # noqa: PLC0415

    if event.device is not None and event.direction is None:
        silent = {ArtefactKind.CONTACT_LOSS, ArtefactKind.BLE_DROPOUT, ArtefactKind.DISCONNECT}
        ends = [
            artefact.end_s
            for artefact in model.artefacts
            if artefact.device is event.device
            and artefact.kind in silent
            and abs(artefact.t_s - event.onset_s) <= _EPISODE_GAP_S / 10
        ]
        return max(ends, default=event.onset_s)
    assert event.parameter is not None
    assert event.threshold is not None
    t_s = np.arange(event.onset_s, model.scenario.duration_s, _EPISODE_STEP_S)
    values = model.vitals_array(t_s).get(PARAMETER_VITAL[event.parameter])
    above = str(event.direction) == "above"
    meets = values >= event.threshold if above else values <= event.threshold
    times = t_s[meets]
    if not times.size:
        return event.onset_s
    gaps = np.flatnonzero(np.diff(times) >= _EPISODE_GAP_S + _EPISODE_STEP_S)
    return float(times[gaps[0]] if gaps.size else times[-1])

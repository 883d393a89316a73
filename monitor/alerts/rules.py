"""Compiled alarm rules: what the engine, the reference and the lifecycle evaluate.

Protocol profiles (``monitor.config``) are the user-facing form; this module is the evaluation
form, independent of TOML and pydantic, and identical for the vectorised engine and the
per-reading reference. Semantics: ``docs/detection.md``.

A :class:`RuleSet` is a table: one row per participant, one column (a *slot*) per rule id. All
participants share the slots; a participant whose protocol lacks a rule has ``None`` there, and
per-participant overrides change the numbers in a row, never a slot's kind or parameter.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from monitor.models import (
    AlarmCategory,
    AlarmPriority,
    ArtefactSettings,
    BaselineSettings,
    Parameter,
)

__all__ = [
    "BaselineSpec",
    "CombinedPart",
    "CombinedSpec",
    "CompiledRule",
    "ConditionStatus",
    "ConditionUpdate",
    "EscalationSettings",
    "LimitSpec",
    "News2Spec",
    "ReportedSpec",
    "RuleSet",
    "RuleSetError",
    "StalenessSpec",
    "TrendSpec",
]


class RuleSetError(ValueError):
    """A rule table that cannot be evaluated consistently."""


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """Fixed limit: breach beyond ``threshold``; clears ``clear_band`` back inside."""

    parameter: Parameter
    high: bool
    threshold: float
    inclusive: bool
    clear_band: float = 0.0


@dataclass(frozen=True, slots=True)
class TrendSpec:
    """Least-squares slope over a window, in units per minute (docs/detection.md section 3)."""

    parameter: Parameter
    rising: bool
    rate_per_min: float
    window_s: int
    resolution_s: int = 30
    min_samples: int = 3
    while_at_least: float | None = None
    while_at_most: float | None = None

    @property
    def capacity(self) -> int:
        """Most samples the window can hold."""
        return math.ceil(self.window_s / self.resolution_s) + 1


@dataclass(frozen=True, slots=True)
class BaselineSpec:
    """Rise (``high``) or fall of ``delta`` from the participant's pre-dose baseline."""

    parameter: Parameter
    high: bool
    delta: float
    clear_band: float = 0.0


@dataclass(frozen=True, slots=True)
class StalenessSpec:
    """Technical: no evidence on a stream for ``stale_after_s``."""

    parameter: Parameter
    stale_after_s: int


@dataclass(frozen=True, slots=True)
class CombinedPart:
    """One limit of a combined rule, on the stream's latest evidence value."""

    parameter: Parameter
    high: bool
    threshold: float
    inclusive: bool


@dataclass(frozen=True, slots=True)
class CombinedSpec:
    """All parts hold at once (e.g. hyperthermia with tachycardia)."""

    parts: tuple[CombinedPart, ...]
    max_age_s: int = 120


@dataclass(frozen=True, slots=True)
class News2Spec:
    """Partial NEWS2 from the parameters the wearables measure (plus staff-entered ACVPU)."""

    max_age_s: int = 900
    alert_low: bool = False


@dataclass(frozen=True, slots=True)
class ReportedSpec:
    """Technical: a condition of the service itself (e.g. records not reaching the database).

    Detection never evaluates it; the service reports it for every participant it affects, so
    the alarm reaches each room's staff and is numbered, persisted and restored like any other.
    """

    label: str  # what is wrong, e.g. "Records waiting for the database"
    unit: str  # of the value the service reports, e.g. "points"


Spec = (
    LimitSpec | TrendSpec | BaselineSpec | StalenessSpec | CombinedSpec | News2Spec | ReportedSpec
)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule of one participant, ready to evaluate."""

    id: str
    spec: Spec
    priority: AlarmPriority
    category: AlarmCategory = AlarmCategory.PHYSIOLOGICAL
    alarm: str = ""  # alarm group; rules sharing it form one alarm (tiers); default: id
    delay_s: int = 0
    confirm: int = 1  # consecutive breaching evidence samples needed

    def __post_init__(self) -> None:
        if not self.alarm:
            object.__setattr__(self, "alarm", self.id)
        if self.confirm < 1:
            msg = f"rule {self.id}: confirm must be at least 1"
            raise RuleSetError(msg)

    @property
    def delay_ms(self) -> int:
        """The alarm condition delay in the engine's time unit."""
        return self.delay_s * 1000

    @property
    def parameter(self) -> Parameter | None:
        """The stream a per-sample rule watches; None for tick rules."""
        if isinstance(self.spec, LimitSpec | TrendSpec | BaselineSpec | StalenessSpec):
            return self.spec.parameter
        return None

    @property
    def per_sample(self) -> bool:
        """Evaluated on each evidence sample (limit, trend, baseline) rather than at ticks."""
        return isinstance(self.spec, LimitSpec | TrendSpec | BaselineSpec)

    @property
    def reported(self) -> bool:
        """Set by the service (:class:`ReportedSpec`), never evaluated by detection."""
        return isinstance(self.spec, ReportedSpec)


@dataclass(frozen=True, slots=True)
class EscalationSettings:
    """Unacknowledged-alarm timers (docs/clinical-basis.md#escalation)."""

    medium_to_high_s: int = 300
    high_to_backup_s: int = 120


class ConditionStatus(enum.IntEnum):
    """A rule's condition for one participant."""

    CLEAR = 0
    PENDING = 1
    MET = 2


class ConditionUpdate(NamedTuple):
    """A change of one rule's condition for one participant; the engine's only output.

    A named tuple, not a frozen dataclass: the engine builds thousands per second and a tuple is
    several times cheaper to create, while staying immutable and comparable by value.
    """

    t_ms: int
    participant: int
    rule: int
    status: ConditionStatus
    priority: AlarmPriority
    value: float | None
    threshold: float | None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Participants x rule slots; ``rules[p][r]`` is participant p's rule in slot r, or None."""

    participants: tuple[str, ...]
    rule_ids: tuple[str, ...]
    rules: tuple[tuple[CompiledRule | None, ...], ...]
    escalation: tuple[EscalationSettings, ...]  # per participant
    artefacts: ArtefactSettings = field(default_factory=ArtefactSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)

    def __post_init__(self) -> None:
        if len(self.rules) != len(self.participants) or len(self.escalation) != len(
            self.participants
        ):
            msg = "one row of rules and one escalation setting per participant"
            raise RuleSetError(msg)
        for row in self.rules:
            if len(row) != len(self.rule_ids):
                msg = "every participant row needs one entry per rule slot"
                raise RuleSetError(msg)
        for slot, rule_id in enumerate(self.rule_ids):
            present = [row[slot] for row in self.rules if row[slot] is not None]
            shapes = {(type(rule.spec), rule.parameter, rule.alarm) for rule in present if rule}
            if any(rule is not None and rule.id != rule_id for rule in present):
                msg = f"slot {slot} holds rules other than {rule_id}"
                raise RuleSetError(msg)
            if len(shapes) > 1:
                msg = f"rule {rule_id} differs in kind, parameter or alarm between participants"
                raise RuleSetError(msg)

    @classmethod
    def build(
        cls,
        participants: Mapping[str, Sequence[CompiledRule]],
        escalation: Mapping[str, EscalationSettings] | None = None,
        *,
        artefacts: ArtefactSettings | None = None,
        baseline: BaselineSettings | None = None,
    ) -> RuleSet:
        """Lay out per-participant rule lists as a table with one slot per rule id."""
        codes = tuple(participants)
        rule_ids: list[str] = []
        for rules in participants.values():
            for rule in rules:
                if rule.id not in rule_ids:
                    rule_ids.append(rule.id)
        rows = []
        for code in codes:
            by_id = {rule.id: rule for rule in participants[code]}
            if len(by_id) != len(participants[code]):
                msg = f"participant {code} has duplicate rule ids"
                raise RuleSetError(msg)
            rows.append(tuple(by_id.get(rule_id) for rule_id in rule_ids))
        escalations = tuple((escalation or {}).get(code, EscalationSettings()) for code in codes)
        return cls(
            participants=codes,
            rule_ids=tuple(rule_ids),
            rules=tuple(rows),
            escalation=escalations,
            artefacts=artefacts or ArtefactSettings(),
            baseline=baseline or BaselineSettings(),
        )

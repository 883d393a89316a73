"""From a site config to the rule table that detection evaluates.

The site config speaks in protocol profiles and per-participant overrides; detection wants one
:class:`~monitor.alerts.rules.RuleSet` per session, one row per participant in config order. This
module is the only place that translates between the two, so the engine, the reference and the
lifecycle never see TOML-shaped models.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import assert_never

from monitor.alerts.rules import (
    BaselineSpec,
    CombinedPart,
    CombinedSpec,
    CompiledRule,
    EscalationSettings,
    LimitSpec,
    News2Spec,
    ReportedSpec,
    RuleSet,
    RuleSetError,
    Spec,
    StalenessSpec,
    TrendSpec,
)
from monitor.config import (
    Artefacts,
    Baseline,
    BaselineRule,
    CombinedRule,
    Escalation,
    LimitDirection,
    LimitRule,
    News2Rule,
    Participant,
    Rule,
    SiteConfig,
    StalenessRule,
    TrendRule,
)
from monitor.models import (
    AlarmCategory,
    AlarmPriority,
    ArtefactSettings,
    BaselineSettings,
    DeviceKind,
    Parameter,
)

__all__ = [
    "SERVICE_RULES",
    "STORAGE_BACKLOG",
    "STORAGE_FAILED",
    "compile_artefacts",
    "compile_baseline",
    "compile_escalation",
    "compile_rule",
    "compile_rules",
    "measured_parameters",
]

_DEVICE_PARAMETERS: Mapping[DeviceKind, frozenset[Parameter]] = MappingProxyType(
    {
        DeviceKind.HEART_RATE: frozenset({Parameter.HEART_RATE}),
        DeviceKind.BLOOD_PRESSURE: frozenset({Parameter.SYSTOLIC_BP, Parameter.DIASTOLIC_BP}),
        DeviceKind.THERMOMETER: frozenset({Parameter.TEMPERATURE}),
        DeviceKind.PULSE_OXIMETER: frozenset({Parameter.SPO2}),
    }
)
"""The detection streams each device kind feeds (docs/detection.md section 1)."""

STORAGE_BACKLOG = CompiledRule(
    id="storage-backlog",
    spec=ReportedSpec(label="Records waiting for the database", unit="points"),
    priority=AlarmPriority.LOW,  # nothing is lost (the spool keeps it); someone must look
    category=AlarmCategory.TECHNICAL,
)
"""Raised while the spool holds more undelivered points than ``[storage] high_water_points``."""

STORAGE_FAILED = CompiledRule(
    id="storage-failed",
    spec=ReportedSpec(label="Records held in memory: the store cannot be written", unit="points"),
    priority=AlarmPriority.HIGH,  # the session is no longer being recorded: act now
    category=AlarmCategory.TECHNICAL,
)
"""Raised while the local store (spool) refuses writes: a full disk, a read-only file system."""

SERVICE_RULES: tuple[CompiledRule, ...] = (STORAGE_BACKLOG, STORAGE_FAILED)
"""Technical conditions of the service itself, in every participant's rules; reserved ids."""


def measured_parameters(participant: Participant) -> frozenset[Parameter]:
    """The detection streams this participant's devices can feed."""
    return frozenset().union(*(_DEVICE_PARAMETERS[device.kind] for device in participant.devices))


def _spec(rule: Rule) -> Spec:
    if isinstance(rule, LimitRule):
        return LimitSpec(
            parameter=rule.parameter,
            high=rule.direction is LimitDirection.HIGH,
            threshold=rule.threshold,
            inclusive=rule.inclusive,
            clear_band=rule.clear_band,
        )
    if isinstance(rule, TrendRule):
        return TrendSpec(
            parameter=rule.parameter,
            rising=rule.direction is LimitDirection.HIGH,
            rate_per_min=rule.rate_per_min,
            window_s=rule.window_s,
            resolution_s=rule.resolution_s,
            min_samples=rule.min_samples,
            while_at_least=rule.while_at_least,
            while_at_most=rule.while_at_most,
        )
    if isinstance(rule, BaselineRule):
        return BaselineSpec(
            parameter=rule.parameter,
            high=rule.direction is LimitDirection.HIGH,
            delta=rule.delta,
            clear_band=rule.clear_band,
        )
    if isinstance(rule, StalenessRule):
        return StalenessSpec(parameter=rule.parameter, stale_after_s=rule.stale_after_s)
    if isinstance(rule, CombinedRule):
        parts = tuple(
            CombinedPart(
                parameter=part.parameter,
                high=part.direction is LimitDirection.HIGH,
                threshold=part.threshold,
                inclusive=part.inclusive,
            )
            for part in rule.all_of
        )
        return CombinedSpec(parts=parts, max_age_s=rule.max_age_s)
    if isinstance(rule, News2Rule):
        return News2Spec(max_age_s=rule.max_age_s, alert_low=rule.alert_low)
    assert_never(rule)


def compile_rule(rule: Rule) -> CompiledRule:
    """One profile rule (overrides already applied) in evaluation form."""
    technical = isinstance(rule, StalenessRule)
    return CompiledRule(
        id=rule.id,
        spec=_spec(rule),
        priority=rule.priority,
        category=AlarmCategory.TECHNICAL if technical else AlarmCategory.PHYSIOLOGICAL,
        alarm=rule.alarm_group,
        delay_s=rule.delay_s,
        confirm=rule.confirm_count,
    )


def compile_escalation(escalation: Escalation) -> EscalationSettings:
    """A profile's escalation timers in evaluation form."""
    return EscalationSettings(
        medium_to_high_s=escalation.unacknowledged_medium_to_high_s,
        high_to_backup_s=escalation.unacknowledged_high_to_backup_s,
    )


def compile_artefacts(artefacts: Artefacts) -> ArtefactSettings:
    """A profile's evidence filter in evaluation form."""
    return ArtefactSettings(
        plausible=MappingProxyType(artefacts.plausible.by_parameter()),
        spike_delta=MappingProxyType(artefacts.spike_delta.by_parameter()),
        spike_max_gap_s=artefacts.spike_max_gap_s,
    )


def compile_baseline(baseline: Baseline) -> BaselineSettings:
    """A profile's baseline settings in evaluation form."""
    return BaselineSettings(
        window_s=baseline.window_s,
        resolution_s=baseline.resolution_s,
        min_samples=baseline.min_samples,
    )


def _applies(rule: Rule, measured: frozenset[Parameter]) -> bool:
    """Staleness of a stream nobody feeds would alarm from registration on: leave it out."""
    return not isinstance(rule, StalenessRule) or rule.parameter in measured


def compile_rules(config: SiteConfig, session_id: str) -> RuleSet:
    """The rule table of one session: its participants in config order, overrides applied.

    A participant's staleness rules cover only the streams their devices feed; every participant
    also has the service's own technical rules (:data:`SERVICE_RULES`). Raises
    ``KeyError`` for an unknown session and :class:`RuleSetError` when the session's protocols
    disagree on the artefact or baseline settings (a rule set has one of each).
    """
    session = config.session(session_id)
    rules: dict[str, list[CompiledRule]] = {}
    escalation: dict[str, EscalationSettings] = {}
    shared: tuple[str, ArtefactSettings, BaselineSettings] | None = None
    for participant in session.participants:
        protocol = session.protocol_of(participant)
        profile = config.protocol_for(session, participant)
        measured = measured_parameters(participant)
        profile_rules = config.rules_for(session, participant)
        reserved = {rule.id for rule in SERVICE_RULES} & {rule.id for rule in profile_rules}
        if reserved:
            msg = f"protocol {protocol!r}: rule id {sorted(reserved)[0]!r} is reserved"
            raise RuleSetError(msg)
        rules[participant.code] = [
            *(compile_rule(rule) for rule in profile_rules if _applies(rule, measured)),
            *SERVICE_RULES,
        ]
        escalation[participant.code] = compile_escalation(profile.escalation)
        artefacts = compile_artefacts(profile.artefacts)
        baseline = compile_baseline(profile.baseline)
        if shared is None:
            shared = (protocol, artefacts, baseline)
            continue
        first_protocol, first_artefacts, first_baseline = shared
        for section, mine, theirs in (
            ("artefacts", artefacts, first_artefacts),
            ("baseline", baseline, first_baseline),
        ):
            if mine != theirs:
                msg = (
                    f"session {session.id}: protocols {first_protocol!r} and {protocol!r} give "
                    f"different [{section}] settings, but a rule set has one; make them equal"
                )
                raise RuleSetError(msg)
    assert shared is not None  # a session has at least one participant
    return RuleSet.build(rules, escalation, artefacts=shared[1], baseline=shared[2])

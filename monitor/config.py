"""Site configuration and protocol profiles: TOML files in, validated frozen models out.

A config mistake in a clinical monitor must be found before the session, not during it, so the
loader reports every problem in a file at once, each with the dotted path the user wrote
(``sessions[1].participants[0].devices[2].kind``), and never a traceback. Loading reads files
synchronously: it runs once at start-up, before the event loop does any work.

Secrets (the MQTT password, the InfluxDB token) never live in these files; :class:`Secrets` reads
them from the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import os
import re
import ssl
import sys
import tomllib
import types
import typing
import urllib.parse
import zoneinfo
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TextIO, TypeGuard

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    Strict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.models import (
    DETECTION_PARAMETERS,
    PARAMETER_UNITS,
    AlarmCategory,
    AlarmPriority,
    ArtefactSettings,
    BaselineSettings,
    DeviceKind,
    Identifier,
    Parameter,
    ParticipantCode,
    StaffMember,
)
from monitor.mqtt.settings import MQTT_PASSWORD_ENV, MQTT_URL_ENV, BrokerSettings
from monitor.storage.settings import (
    INFLUX_API_ENV,
    INFLUX_BUCKET_ENV,
    INFLUX_ORG_ENV,
    INFLUX_TOKEN_ENV,
    INFLUX_URL_ENV,
    InfluxSettings,
)
from monitor.tls import TlsFiles, tls_context

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "ECHO_LIMIT",
    "PLAUSIBLE_RANGES",
    "Artefacts",
    "Baseline",
    "BaselineRule",
    "CombinedCondition",
    "CombinedRule",
    "ConfigError",
    "ConfigProblem",
    "Device",
    "Escalation",
    "InfluxConfig",
    "InfluxTls",
    "LimitDirection",
    "LimitRule",
    "MqttConfig",
    "MqttTls",
    "News2Rule",
    "Participant",
    "PlausibleRanges",
    "ProtocolProfile",
    "Relay",
    "Room",
    "Rule",
    "Secrets",
    "Session",
    "SiteConfig",
    "SiteSection",
    "SpikeDeltas",
    "StalenessRule",
    "StorageConfig",
    "TrendRule",
    "describe_setting_error",
    "load_config",
    "load_config_or_report",
    "load_protocol",
    "redact_url",
    "resolve_influx_config",
    "resolve_mqtt_config",
    "summarize",
    "truncate",
]

# The names of environment variables, not secrets.

DEFAULT_MAX_CONNECTIONS = 7
"""BLE links per adapter: common controllers hold about 7-10 at once (CSR ~5, Broadcom ~7)."""

PLAUSIBLE_RANGES: dict[Parameter, tuple[float, float]] = {
    Parameter.HEART_RATE: (20.0, 250.0),
    Parameter.PULSE_RATE: (20.0, 250.0),
    Parameter.SYSTOLIC_BP: (30.0, 300.0),
    Parameter.DIASTOLIC_BP: (30.0, 300.0),
    Parameter.MEAN_ARTERIAL_BP: (30.0, 300.0),
    Parameter.TEMPERATURE: (30.0, 45.0),
    Parameter.SPO2: (50.0, 100.0),
    Parameter.BATTERY: (0.0, 100.0),
}
"""Thresholds outside these ranges are typos (1600 for 160), not clinical choices."""

_Loc = tuple[str | int, ...]
_CONTEXT_BASE_DIR = "base_dir"
_CONTEXT_DEFER_CROSS_CHECKS = "defer_cross_checks"
_SECRET_KEYS = frozenset({"password", "passwd", "token", "secret", "api_token", "api_key"})
# ``alarm`` is part of a rule slot's shape (every participant's row must agree); ``all_of`` is a
# list, which a flat override table cannot express.
_NON_OVERRIDABLE = frozenset({"id", "kind", "parameter", "direction", "alarm", "all_of"})
_IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # as monitor.models.Identifier
_PATTERN_MEANINGS = {
    _IDENTIFIER_PATTERN: "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
    "or digit",
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$": "must be a pseudonymous code of 1-32 letters, digits, "
    "'.', '_' or '-', starting with a letter or digit",
    r"^hci[0-9]{1,3}$": "must be a BlueZ adapter name such as 'hci0'",
}


ECHO_LIMIT = 80
"""Characters of an input value a message may echo: enough to recognise it, never a flood."""


def truncate(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters with an ellipsis and the full
    length: a 10 MB value must not be printed whole into a terminal or a log."""
    shown = repr(value)
    if len(shown) <= limit:
        return shown
    return f"{shown[: limit - 1]}… ({len(shown)} characters)"


def _is_identifier(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and re.fullmatch(_IDENTIFIER_PATTERN, value) is not None


# --- shared field types ---------------------------------------------------------------------


def _context(info: ValidationInfo) -> Mapping[str, object]:
    return info.context if isinstance(info.context, Mapping) else {}


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Paths in a file are relative to that file's folder, so a config works from any cwd."""
    base = _context(info).get(_CONTEXT_BASE_DIR)
    if isinstance(base, Path) and not value.is_absolute():
        return Path(os.path.normpath(base / value))
    return value


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    """A TLS file that is missing should fail check-config, not the first connection."""
    if _CONTEXT_BASE_DIR in _context(info) and not value.is_file():
        msg = f"no such file: {value}"
        raise ValueError(msg)
    return value


_Whole = Annotated[int, Strict()]
"""Every whole number in a config file (durations, counts): only an integer as written. Lax
parsing would read ``delay_s = true`` as 1 s (a 15-minute rule firing after one second), and
``5.0`` or ``"5"`` as 5; each field adds its bounds."""

_Number = Annotated[float, Strict(), AllowInfNan(False)]
"""Every other number (thresholds, rates, bands): an integer or a float as written, finite;
never ``true`` (read as 1.0), ``inf`` or ``nan``."""

ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
ExistingFile = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(_existing_file)]


def _scalar(value: object) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    msg = "must be a number, true/false or a string"
    raise ValueError(msg)


OverrideValue = Annotated[bool | int | float | str, PlainValidator(_scalar)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- protocol profiles ----------------------------------------------------------------------


class LimitDirection(enum.StrEnum):
    """Which side is the alarm side: above (``high``, a rise) or below (``low``, a fall)."""

    HIGH = "high"
    LOW = "low"


class Escalation(_Strict):
    """How long an unacknowledged alarm waits to escalate (docs/clinical-basis.md#escalation)."""

    unacknowledged_medium_to_high_s: _Whole = Field(gt=0, le=3600)
    unacknowledged_high_to_backup_s: _Whole = Field(gt=0, le=3600)


def _detection_parameter(parameter: Parameter) -> Parameter:
    """A rule on a parameter that forms no detection stream would never fire: refuse it."""
    if parameter is Parameter.CUFF_PRESSURE:
        msg = "cuff pressure while the cuff inflates is never alarm evidence"
        raise ValueError(msg)
    if parameter not in DETECTION_PARAMETERS:
        names = ", ".join(DETECTION_PARAMETERS)
        msg = (
            f"{parameter} is not a detection stream, so no rule can watch it (use one of: {names})"
        )
        raise ValueError(msg)
    return parameter


_StreamParameter = Annotated[Parameter, AfterValidator(_detection_parameter)]


def _check_plausible(parameter: object, value: float, what: str) -> None:
    if isinstance(parameter, Parameter):
        low, high = PLAUSIBLE_RANGES[parameter]
        if not low <= value <= high:
            unit = PARAMETER_UNITS[parameter]
            msg = (
                f"{value:g} is not a plausible {parameter} {what} "
                f"(expected {low:g}-{high:g} {unit})"
            )
            raise ValueError(msg)


def _check_plausible_change(parameter: object, change: float, what: str) -> None:
    """A change wider than the whole plausible range is a typo (a rate of 20 for 2.0)."""
    if isinstance(parameter, Parameter):
        low, high = PLAUSIBLE_RANGES[parameter]
        if change > high - low:
            unit = PARAMETER_UNITS[parameter]
            msg = (
                f"{what} {change:g} {unit}, more than the whole plausible {parameter} range "
                f"{low:g}-{high:g} {unit}"
            )
            raise ValueError(msg)


def _check_clear_value(parameter: object, threshold: float, step: float) -> None:
    if isinstance(parameter, Parameter):
        low, high = PLAUSIBLE_RANGES[parameter]
        if not low <= threshold + step <= high:
            msg = (
                f"the alarm would clear at {threshold + step:g}, outside the plausible "
                f"range {low:g}-{high:g}"
            )
            raise ValueError(msg)


_MAX_CONFIRM = 10


def _confirm_value(value: object) -> bool | int:
    """``true`` keeps its historical meaning (one confirming repeat: 2 readings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and 1 <= value <= _MAX_CONFIRM:
        return value
    msg = (
        f"must be true (2 consecutive readings), false (1) or a number of consecutive "
        f"readings from 1 to {_MAX_CONFIRM} (got {truncate(value)})"
    )
    raise ValueError(msg)


_Confirm = Annotated[bool | int, PlainValidator(_confirm_value)]


class _RuleBase(_Strict):
    """Fields every rule kind has (docs/detection.md sections 3-5)."""

    id: Identifier
    alarm: Identifier | None = None
    priority: AlarmPriority
    delay_s: _Whole = Field(default=0, ge=0, le=3600)
    confirm: _Confirm = False

    @property
    def alarm_group(self) -> str:
        """The alarm this rule raises: tiers of one parameter share one (default: the id)."""
        return self.alarm or self.id

    @property
    def confirm_count(self) -> int:
        """Consecutive breaching evidence samples needed: ``true`` is 2, ``false`` is 1."""
        if isinstance(self.confirm, bool):
            return 2 if self.confirm else 1
        return self.confirm


class _TickRuleBase(_RuleBase):
    """Rules evaluated at ticks, not per reading: there is no reading to confirm."""

    @field_validator("confirm")
    @classmethod
    def _no_confirmation(cls, confirm: bool | int) -> bool | int:
        if confirm is True or (not isinstance(confirm, bool) and confirm != 1):
            msg = "this rule is evaluated at ticks, not per reading: confirm does not apply"
            raise ValueError(msg)
        return confirm


class LimitRule(_RuleBase):
    """A fixed alarm limit on one parameter, with a condition delay and hysteresis."""

    kind: Literal["limit"]
    parameter: _StreamParameter
    direction: LimitDirection
    threshold: _Number
    inclusive: bool
    clear_band: _Number = Field(default=0.0, ge=0)

    @field_validator("threshold")
    @classmethod
    def _plausible_threshold(cls, threshold: float, info: ValidationInfo) -> float:
        _check_plausible(info.data.get("parameter"), threshold, "threshold")
        return threshold

    @field_validator("clear_band")
    @classmethod
    def _plausible_clear_band(cls, clear_band: float, info: ValidationInfo) -> float:
        threshold = info.data.get("threshold")
        if isinstance(threshold, float):
            step = -clear_band if info.data.get("direction") is LimitDirection.HIGH else clear_band
            _check_clear_value(info.data.get("parameter"), threshold, step)
        return clear_band

    def is_breached(self, value: float) -> bool:
        """Whether ``value`` is on the alarm side of the threshold."""
        if self.direction is LimitDirection.HIGH:
            return value >= self.threshold if self.inclusive else value > self.threshold
        return value <= self.threshold if self.inclusive else value < self.threshold

    def is_cleared(self, value: float) -> bool:
        """Whether ``value`` is back by ``clear_band``: hysteresis stops an alarm from flapping."""
        if self.is_breached(value):
            return False
        if self.direction is LimitDirection.HIGH:
            return value <= self.threshold - self.clear_band
        return value >= self.threshold + self.clear_band


class TrendRule(_RuleBase):
    """A least-squares slope over a window: ``high`` alarms on a rise, ``low`` on a fall."""

    kind: Literal["trend"]
    parameter: _StreamParameter
    direction: LimitDirection
    window_s: _Whole = Field(gt=0, le=21600)
    rate_per_min: _Number = Field(gt=0)
    resolution_s: _Whole = Field(default=30, ge=1, le=3600)
    min_samples: _Whole = Field(default=3, ge=2, le=1000)
    while_at_least: _Number | None = None
    while_at_most: _Number | None = None

    @field_validator("rate_per_min")
    @classmethod
    def _plausible_rate(cls, rate_per_min: float, info: ValidationInfo) -> float:
        window_s = info.data.get("window_s")
        if isinstance(window_s, int):
            change = rate_per_min * window_s / 60
            what = f"{rate_per_min:g}/min over {window_s} s changes by"
            _check_plausible_change(info.data.get("parameter"), change, what)
        return rate_per_min

    @field_validator("min_samples")
    @classmethod
    def _reachable(cls, min_samples: int, info: ValidationInfo) -> int:
        window_s = info.data.get("window_s")
        resolution_s = info.data.get("resolution_s")
        if isinstance(window_s, int) and isinstance(resolution_s, int):
            most = window_s // resolution_s + 1
            if min_samples > most:
                msg = (
                    f"a {window_s} s window with samples at least {resolution_s} s apart holds "
                    f"at most {most}, so {min_samples} samples are never reached"
                )
                raise ValueError(msg)
        return min_samples

    @field_validator("while_at_least", "while_at_most")
    @classmethod
    def _plausible_bound(cls, bound: float | None, info: ValidationInfo) -> float | None:
        if bound is not None:
            _check_plausible(info.data.get("parameter"), bound, "bound")
            least = info.data.get("while_at_least")
            if info.field_name == "while_at_most" and isinstance(least, float) and bound < least:
                msg = f"must not be below while_at_least ({least:g}): the rule could never fire"
                raise ValueError(msg)
        return bound


class BaselineRule(_RuleBase):
    """A rise (``high``) or fall of ``delta`` from the participant's pre-dose baseline."""

    kind: Literal["baseline"]
    parameter: _StreamParameter
    direction: LimitDirection
    delta: _Number = Field(gt=0)
    clear_band: _Number = Field(default=0.0, ge=0)

    @field_validator("delta")
    @classmethod
    def _plausible_delta(cls, delta: float, info: ValidationInfo) -> float:
        _check_plausible_change(info.data.get("parameter"), delta, "a delta of")
        return delta

    @field_validator("clear_band")
    @classmethod
    def _within_delta(cls, clear_band: float, info: ValidationInfo) -> float:
        delta = info.data.get("delta")
        if isinstance(delta, float) and clear_band > delta:
            msg = (
                f"must be at most delta ({delta:g}): the alarm would only clear beyond the "
                f"baseline itself"
            )
            raise ValueError(msg)
        return clear_band


class StalenessRule(_TickRuleBase):
    """Technical: no evidence on a stream for ``stale_after_s`` (the sensor is off or silent)."""

    kind: Literal["staleness"]
    parameter: _StreamParameter
    stale_after_s: _Whole = Field(gt=0, le=86400)

    @field_validator("delay_s")
    @classmethod
    def _no_delay(cls, delay_s: int) -> int:
        if delay_s:
            msg = "a staleness rule has no delay: stale_after_s already is its delay"
            raise ValueError(msg)
        return delay_s


class CombinedCondition(_Strict):
    """One limit of a combined rule, tested on its stream's latest evidence value."""

    parameter: _StreamParameter
    direction: LimitDirection
    threshold: _Number
    inclusive: bool

    @field_validator("threshold")
    @classmethod
    def _plausible_threshold(cls, threshold: float, info: ValidationInfo) -> float:
        _check_plausible(info.data.get("parameter"), threshold, "threshold")
        return threshold


class CombinedRule(_TickRuleBase):
    """Every condition holds at once on recent values (hyperthermia with tachycardia)."""

    kind: Literal["combined"]
    all_of: tuple[CombinedCondition, ...] = Field(min_length=2, max_length=8)
    max_age_s: _Whole = Field(default=120, gt=0, le=3600)


class News2Rule(_TickRuleBase):
    """Partial NEWS2: the score's band sets the priority of each alarm update."""

    kind: Literal["news2"]
    priority: AlarmPriority = AlarmPriority.HIGH
    max_age_s: _Whole = Field(default=900, gt=0, le=3600)
    alert_low: bool = False

    @field_validator("priority")
    @classmethod
    def _band_decides(cls, priority: AlarmPriority) -> AlarmPriority:
        if priority is not AlarmPriority.HIGH:
            msg = (
                "the NEWS2 band sets each alarm's priority (aggregate >=7 high, 5-6 or a single "
                "3 medium, 1-4 low with alert_low); leave priority out"
            )
            raise ValueError(msg)
        return priority

    @field_validator("delay_s")
    @classmethod
    def _no_delay(cls, delay_s: int) -> int:
        if delay_s:
            msg = "NEWS2 has no delay: the score is met as soon as its band is not clear"
            raise ValueError(msg)
        return delay_s


Rule = Annotated[
    LimitRule | TrendRule | BaselineRule | StalenessRule | CombinedRule | News2Rule,
    Field(discriminator="kind"),
]
"""One alarm rule of a protocol profile; ``kind`` picks the member."""

_DEFAULT_ARTEFACTS = ArtefactSettings()
_DEFAULT_BASELINE = BaselineSettings()


def _range(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if not math.isfinite(low) or not math.isfinite(high) or not 0 <= low < high:
        msg = f"must be [low, high] with 0 <= low < high (got [{low:g}, {high:g}])"
        raise ValueError(msg)
    return value


def _pair(value: object) -> object:
    if isinstance(value, list | tuple) and len(value) != 2:
        msg = f"must be [low, high], two numbers (got {len(value)})"
        raise ValueError(msg)
    return value


_Range = Annotated[tuple[_Number, _Number], BeforeValidator(_pair), AfterValidator(_range)]


def _spike_delta(value: object) -> float | None:
    """``false`` switches the spike check off (TOML has no null)."""
    if value is False:
        return None
    if isinstance(value, int | float) and value is not True and math.isfinite(value) and value > 0:
        return float(value)
    msg = f"must be a positive number, or false for no spike check (got {truncate(value)})"
    raise ValueError(msg)


_SpikeDelta = Annotated[float | None, PlainValidator(_spike_delta)]


class PlausibleRanges(_Strict):
    """Per stream: values outside ``[low, high]`` are artefacts, never evidence."""

    heart_rate: _Range = _DEFAULT_ARTEFACTS.plausible[Parameter.HEART_RATE]
    systolic_bp: _Range = _DEFAULT_ARTEFACTS.plausible[Parameter.SYSTOLIC_BP]
    diastolic_bp: _Range = _DEFAULT_ARTEFACTS.plausible[Parameter.DIASTOLIC_BP]
    temperature: _Range = _DEFAULT_ARTEFACTS.plausible[Parameter.TEMPERATURE]
    spo2: _Range = _DEFAULT_ARTEFACTS.plausible[Parameter.SPO2]

    def by_parameter(self) -> dict[Parameter, tuple[float, float]]:
        """The ranges keyed by detection parameter."""
        return {
            Parameter.HEART_RATE: self.heart_rate,
            Parameter.SYSTOLIC_BP: self.systolic_bp,
            Parameter.DIASTOLIC_BP: self.diastolic_bp,
            Parameter.TEMPERATURE: self.temperature,
            Parameter.SPO2: self.spo2,
        }


class SpikeDeltas(_Strict):
    """Per stream: the largest believable jump between close samples; None: no spike check."""

    heart_rate: _SpikeDelta = _DEFAULT_ARTEFACTS.spike_delta[Parameter.HEART_RATE]
    systolic_bp: _SpikeDelta = _DEFAULT_ARTEFACTS.spike_delta[Parameter.SYSTOLIC_BP]
    diastolic_bp: _SpikeDelta = _DEFAULT_ARTEFACTS.spike_delta[Parameter.DIASTOLIC_BP]
    temperature: _SpikeDelta = _DEFAULT_ARTEFACTS.spike_delta[Parameter.TEMPERATURE]
    spo2: _SpikeDelta = _DEFAULT_ARTEFACTS.spike_delta[Parameter.SPO2]

    def by_parameter(self) -> dict[Parameter, float | None]:
        """The deltas keyed by detection parameter."""
        return {
            Parameter.HEART_RATE: self.heart_rate,
            Parameter.SYSTOLIC_BP: self.systolic_bp,
            Parameter.DIASTOLIC_BP: self.diastolic_bp,
            Parameter.TEMPERATURE: self.temperature,
            Parameter.SPO2: self.spo2,
        }


class Artefacts(_Strict):
    """The evidence filter (docs/detection.md section 2); omitted keys keep the defaults."""

    plausible: PlausibleRanges = Field(default_factory=PlausibleRanges)
    spike_delta: SpikeDeltas = Field(default_factory=SpikeDeltas)
    spike_max_gap_s: _Whole = Field(default=_DEFAULT_ARTEFACTS.spike_max_gap_s, ge=0, le=3600)


class Baseline(_Strict):
    """How the pre-dose baseline is taken (docs/detection.md section 3)."""

    window_s: _Whole = Field(default=_DEFAULT_BASELINE.window_s, gt=0, le=21600)
    resolution_s: _Whole = Field(default=_DEFAULT_BASELINE.resolution_s, ge=1, le=3600)
    min_samples: _Whole = Field(default=_DEFAULT_BASELINE.min_samples, ge=1)

    @field_validator("min_samples")
    @classmethod
    def _reachable(cls, min_samples: int, info: ValidationInfo) -> int:
        window_s = info.data.get("window_s")
        resolution_s = info.data.get("resolution_s")
        most = _DEFAULT_BASELINE.max_samples
        if isinstance(window_s, int) and isinstance(resolution_s, int):
            most = min(most, window_s // resolution_s + 1)
        if min_samples > most:
            msg = f"at most {most} samples enter the baseline, so {min_samples} are never reached"
            raise ValueError(msg)
        return min_samples


class ProtocolProfile(_Strict):
    """The default alarm rules and escalation timings for one kind of session."""

    name: Identifier
    description: str = Field(default="", max_length=2000)
    escalation: Escalation
    artefacts: Artefacts = Field(default_factory=Artefacts)
    baseline: Baseline = Field(default_factory=Baseline)
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_rule_ids(self, info: ValidationInfo) -> Self:
        if not _context(info).get(_CONTEXT_DEFER_CROSS_CHECKS):
            _raise_if_any(_profile_cross_problems(self.model_dump(mode="python")))
        return self

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id; ``KeyError`` if there is none."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


# --- site -----------------------------------------------------------------------------------


class SiteSection(_Strict):
    """Who runs the monitor, in which time zone, and where its protocol profiles live."""

    code: Identifier
    timezone: str
    protocols_dir: ConfigPath = Path("protocols")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, timezone: str) -> str:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            msg = (
                f"unknown time zone {truncate(timezone)} (use an IANA name such as 'Europe/Zurich')"
            )
            raise ValueError(msg) from None
        return timezone

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The site's time zone, for showing times to staff; storage stays in UTC."""
        return zoneinfo.ZoneInfo(self.timezone)


def redact_url(url: str) -> str:
    """The URL as it may be shown (errors, logs, summaries): any password replaced by ``***``.

    A password is refused in every URL, but the message refusing it, or any other problem with
    the URL, must not print it. Everything between the user name's ``:`` and the last ``@`` goes,
    as :func:`urllib.parse.urlsplit` reads userinfo, so even a malformed URL shows no secret.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not at or not colon:
        return url
    return f"{scheme}{separator}{user}:***@{host}"


def _split_url(url: str) -> urllib.parse.SplitResult:
    """urlsplit, with a bad URL or port reported as a ValueError naming the (redacted) URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port
    except ValueError:
        msg = f"invalid host or port in {truncate(redact_url(url))}"
        raise ValueError(msg) from None
    return parts


def _check_url(
    url: str, schemes: tuple[str, ...], secret_env: str, *, allow_path: bool, allow_user: bool
) -> urllib.parse.SplitResult:
    parts = _split_url(url)
    if parts.scheme not in schemes:
        msg = f"the URL must start with {' or '.join(s + '://' for s in schemes)}"
        raise ValueError(msg)
    if parts.password is not None:
        msg = f"no password in the URL: set the environment variable {secret_env} instead"
        raise ValueError(msg)
    if not allow_user and parts.username is not None:
        msg = f"no credentials in the URL: set the environment variable {secret_env} instead"
        raise ValueError(msg)
    if not parts.hostname:
        msg = "the URL has no host"
        raise ValueError(msg)
    if parts.query or parts.fragment:
        msg = "the URL must not have a query string or fragment"
        raise ValueError(msg)
    if not allow_path and parts.path not in {"", "/"}:
        msg = "the URL must not have a path"
        raise ValueError(msg)
    return parts


class _TlsFiles(_Strict):
    """TLS files, loaded while a config file is checked (what they hold, not only that they
    exist), the same way the connection loads them."""

    @model_validator(mode="after")
    def _usable(self, info: ValidationInfo) -> Self:
        if _CONTEXT_BASE_DIR in _context(info):
            self.context()
        return self

    def context(self) -> ssl.SSLContext:
        """The connection's TLS context (:func:`~monitor.tls.tls_context`); blocking."""
        raise NotImplementedError


class MqttTls(_TlsFiles):
    """Files for a TLS connection to the broker; paths are relative to the config file."""

    ca_file: ExistingFile | None = None
    cert_file: ExistingFile | None = None
    key_file: ExistingFile | None = None

    @field_validator("key_file")
    @classmethod
    def _key_needs_cert(cls, key_file: Path | None, info: ValidationInfo) -> Path | None:
        if key_file is not None and info.data.get("cert_file") is None:
            msg = "key_file needs cert_file (the client certificate it belongs to)"
            raise ValueError(msg)
        return key_file

    def context(self) -> ssl.SSLContext:
        """The link's TLS context (:func:`~monitor.tls.tls_context`); blocking."""
        return self.files().context()

    def files(self) -> TlsFiles:
        """The files as the link's settings carry them."""
        return TlsFiles(self.ca_file, self.cert_file, self.key_file)


class MqttConfig(_Strict):
    """An external MQTT broker for alarms and vitals; absent means the embedded broker."""

    url: str
    topic_root: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    ] = "vitals"
    client_id: Identifier | None = None
    tls: MqttTls | None = None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        _check_url(url, ("mqtt", "mqtts"), MQTT_PASSWORD_ENV, allow_path=False, allow_user=True)
        return url

    @field_validator("tls")
    @classmethod
    def _tls_needs_mqtts(cls, tls: MqttTls | None, info: ValidationInfo) -> MqttTls | None:
        url = info.data.get("url")
        if tls is not None and isinstance(url, str) and not url.startswith("mqtts://"):
            msg = "TLS files are given but the url uses mqtt:// (use mqtts://)"
            raise ValueError(msg)
        return tls

    @property
    def host(self) -> str:
        """The broker's host name or address."""
        return _split_url(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The broker's port: as written, else 8883 for mqtts and 1883 for mqtt."""
        return _split_url(self.url).port or (8883 if self.uses_tls else 1883)

    @property
    def username(self) -> str | None:
        """The user name from the URL; its password comes from ``MONITOR_MQTT_PASSWORD``."""
        return _split_url(self.url).username

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is encrypted (``mqtts://``)."""
        return self.url.startswith("mqtts://")

    def settings(self, secrets: Secrets) -> BrokerSettings:
        """The link's own settings: the MQTT room never reads the site configuration."""
        return BrokerSettings(
            host=self.host,
            port=self.port,
            topic_root=self.topic_root,
            client_id=self.client_id,
            username=self.username,
            password=secrets.mqtt_password,
            tls=self.uses_tls,
            tls_files=None if self.tls is None else self.tls.files(),
        )


class InfluxTls(_TlsFiles):
    """A private CA for the InfluxDB server's certificate."""

    ca_file: ExistingFile

    def context(self) -> ssl.SSLContext:
        """The writer's TLS context (:func:`~monitor.tls.tls_context`); blocking."""
        return tls_context(self.ca_file)


_InfluxName = Annotated[str, StringConstraints(pattern=r"^[^\s\"'\\]{1,255}$")]


class InfluxConfig(_Strict):
    """An InfluxDB server for long-term storage; absent means the local store only."""

    url: str
    api: Literal["v1", "v2"] = "v2"
    bucket: _InfluxName = "vitals"
    org: _InfluxName | None = Field(default=None, validate_default=True)
    tls: InfluxTls | None = None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        _check_url(url, ("http", "https"), INFLUX_TOKEN_ENV, allow_path=True, allow_user=False)
        return url

    @field_validator("org")
    @classmethod
    def _org_for_v2_only(cls, org: str | None, info: ValidationInfo) -> str | None:
        api = info.data.get("api")
        if api == "v2" and org is None:
            msg = 'org is required when api = "v2"'
            raise ValueError(msg)
        if api == "v1" and org is not None:
            msg = 'org is only used when api = "v2"'
            raise ValueError(msg)
        return org

    @field_validator("tls")
    @classmethod
    def _tls_needs_https(cls, tls: InfluxTls | None, info: ValidationInfo) -> InfluxTls | None:
        url = info.data.get("url")
        if tls is not None and isinstance(url, str) and not url.startswith("https://"):
            msg = "a CA file is given but the url uses http:// (use https://)"
            raise ValueError(msg)
        return tls

    def settings(self) -> InfluxSettings:
        """The writer's own settings: the storage room never reads the site configuration."""
        return InfluxSettings(
            url=self.url,
            api=self.api,
            bucket=self.bucket,
            org=self.org,
            ca_file=None if self.tls is None else self.tls.ca_file,
        )


class StorageConfig(_Strict):
    """The local spool (or store) in front of InfluxDB."""

    high_water_points: _Whole = Field(default=100_000, ge=1, le=1_000_000_000)
    """Undelivered points that raise the ``storage-backlog`` technical alarm; it clears below
    nine tenths of the mark."""


class Room(_Strict):
    """A treatment room and the BLE adapter that serves it."""

    id: Identifier
    ble_adapter: Annotated[str, StringConstraints(pattern=r"^hci[0-9]{1,3}$")] | None = None
    max_connections: _Whole = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1, le=20)


def _normalise_address(address: str) -> str:
    if re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", address) or re.fullmatch(
        r"[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}", address
    ):
        return address.upper()
    msg = (
        "must be a MAC address (F0:12:34:56:78:9A) or, on macOS, a CoreBluetooth UUID "
        "(8-4-4-4-12 hex digits)"
    )
    raise ValueError(msg)


class Device(_Strict):
    """One wearable, found by its address or by a glob on its advertised name."""

    id: Identifier
    kind: DeviceKind
    address: Annotated[str, AfterValidator(_normalise_address)] | None = None
    name_pattern: Annotated[str, StringConstraints(min_length=1, max_length=248)] | None = Field(
        default=None, validate_default=True
    )

    @field_validator("name_pattern")
    @classmethod
    def _found_somehow(cls, name_pattern: str | None, info: ValidationInfo) -> str | None:
        if name_pattern is not None and not name_pattern.strip():
            msg = "must not be blank"
            raise ValueError(msg)
        if name_pattern is None and info.data.get("address") is None and "address" in info.data:
            msg = "give address or name_pattern (or both) so the device can be found"
            raise ValueError(msg)
        return name_pattern


class Participant(_Strict):
    """A participant by pseudonymous code, their devices and their own threshold overrides."""

    code: ParticipantCode
    protocol: Identifier | None = None
    overrides: dict[Identifier, dict[str, OverrideValue]] = Field(default_factory=dict)
    devices: tuple[Device, ...] = Field(min_length=1)


class Session(_Strict):
    """One dosing session in one room."""

    id: Identifier
    room: Identifier
    protocol: Identifier
    participants: tuple[Participant, ...] = Field(min_length=1)

    def protocol_of(self, participant: Participant) -> str:
        """The participant's protocol name: their own, else the session's."""
        return participant.protocol or self.protocol


class Relay(_Strict):
    """A broker account that logs staff in itself and relays their commands (a web console):
    it may act as any listed staff member, each with that member's roles."""

    account: Identifier


class SiteConfig(_Strict):
    """A whole site: rooms, sessions, transports, and the protocol profiles the sessions use.

    ``protocols`` is not written in the site file: :func:`load_config` fills it from
    ``site.protocols_dir``. Built directly, the model checks every cross-reference too.
    """

    site: SiteSection
    mqtt: MqttConfig | None = None
    influx: InfluxConfig | None = None
    storage: StorageConfig = Field(default_factory=StorageConfig)
    rooms: tuple[Room, ...] = Field(min_length=1)
    sessions: tuple[Session, ...] = Field(min_length=1)
    staff: tuple[StaffMember, ...] = ()
    relays: tuple[Relay, ...] = ()
    protocols: dict[Identifier, ProtocolProfile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> Self:
        if not _context(info).get(_CONTEXT_DEFER_CROSS_CHECKS):
            data = self.model_dump(mode="python", exclude={"protocols"})
            _raise_if_any(_site_cross_problems(data, self.protocols, _known_protocols_message))
        return self

    def room(self, room_id: str) -> Room:
        """The room with this id; ``KeyError`` if there is none."""
        for room in self.rooms:
            if room.id == room_id:
                return room
        raise KeyError(room_id)

    def session(self, session_id: str) -> Session:
        """The session with this id; ``KeyError`` if there is none."""
        for session in self.sessions:
            if session.id == session_id:
                return session
        raise KeyError(session_id)

    def protocol_for(self, session: Session, participant: Participant) -> ProtocolProfile:
        """The protocol profile that applies to this participant."""
        return self.protocols[session.protocol_of(participant)]

    def rules_for(self, session: Session, participant: Participant) -> tuple[Rule, ...]:
        """The participant's rules: the profile's defaults with their overrides applied."""
        rules = self.protocol_for(session, participant).rules
        return tuple(
            _apply_override(rule, participant.overrides[rule.id])
            if rule.id in participant.overrides
            else rule
            for rule in rules
        )


def _apply_override(rule: Rule, changes: Mapping[str, object]) -> Rule:
    return type(rule).model_validate({**rule.model_dump(mode="python"), **changes})


class Secrets(BaseSettings):
    """Credentials, from the environment only: never from a file, never printed."""

    model_config = SettingsConfigDict(
        env_prefix="MONITOR_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    mqtt_password: SecretStr | None = None
    influx_token: SecretStr | None = None


def resolve_mqtt_config(config: SiteConfig, environ: Mapping[str, str]) -> MqttConfig | None:
    """The site's broker with ``MONITOR_MQTT_URL`` on top; None means none is configured."""
    url = environ.get(MQTT_URL_ENV) or None
    if url is None:
        return config.mqtt
    base = config.mqtt.model_dump() if config.mqtt is not None else {}
    try:
        return MqttConfig.model_validate({**base, "url": url})
    except ValidationError as error:
        raise ValueError(describe_setting_error(error, "mqtt", {"url": MQTT_URL_ENV})) from None


_INFLUX_OVERRIDES = {
    "url": INFLUX_URL_ENV,
    "api": INFLUX_API_ENV,
    "bucket": INFLUX_BUCKET_ENV,
    "org": INFLUX_ORG_ENV,
}


def resolve_influx_config(
    config: InfluxConfig | None, environ: Mapping[str, str] | None = None
) -> InfluxConfig | None:
    """The site file's ``[influx]`` with ``MONITOR_INFLUX_URL/_API/_BUCKET/_ORG`` applied on top.

    The environment wins so one site file can serve a test bench and the clinic; an empty
    variable counts as unset. Without a file section, ``MONITOR_INFLUX_URL`` alone enables
    InfluxDB. The result is validated like the file (``org`` only with v2...); a problem raises
    ``ValueError`` naming the variable or the file key it came from. The token is not read here:
    it stays in :class:`Secrets`.
    """
    env = os.environ if environ is None else environ
    overrides = {field: env[name] for field, name in _INFLUX_OVERRIDES.items() if env.get(name)}
    if config is None and "url" not in overrides:
        return None
    data: dict[str, object] = {}
    if config is not None:
        data = {"url": config.url, "api": config.api, "bucket": config.bucket, "org": config.org}
        data["tls"] = config.tls
    data.update(overrides)
    try:
        return InfluxConfig.model_validate(data)
    except ValidationError as err:
        sources = {field: _INFLUX_OVERRIDES[field] for field in overrides}
        raise ValueError(describe_setting_error(err, "influx", sources)) from None


# --- problems -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with one config file, located as precisely as we know."""

    file: Path
    location: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        if self.location:
            where += f": {self.location}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config file and the protocol profiles it references."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


def _format_location(loc: _Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            if len(part) > ECHO_LIMIT:
                key = truncate(part)
            elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
                key = part
            else:
                key = json.dumps(part)
            text += f".{key}" if text else key
    return text


def _raise_if_any(problems: Sequence[tuple[_Loc, str]]) -> None:
    """Direct construction gets one error listing every cross-reference problem."""
    if problems:
        raise ValueError("; ".join(f"{_format_location(loc)}: {msg}" for loc, msg in problems))


# --- reading files --------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; anything wrong is a single :class:`ConfigError` problem."""

    def fail(message: str, line: int | None = None, column: int | None = None) -> ConfigError:
        return ConfigError([ConfigProblem(path, "", message, line, column)])

    if path.is_dir():
        raise fail("is a directory, not a TOML file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail("no such file") from None
    except PermissionError:
        raise fail("cannot read the file: permission denied") from None
    except OSError as err:
        raise fail(f"cannot read the file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bad_line = raw.count(b"\n", 0, err.start) + 1
        bad_column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        byte = raw[err.start]
        raise fail(f"not UTF-8 text (byte 0x{byte:02x})", bad_line, bad_column) from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: thousands of levels exhaust
        # the stack, and no site file nests more than a few
        raise fail("config nesting too deep (arrays or inline tables inside each other)") from None
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        line: int | None = getattr(err, "lineno", None)
        column: int | None = getattr(err, "colno", None)
        if (match := _TOML_POSITION.search(message)) is not None:
            line, column = int(match[1]), int(match[2])
            message = message[: match.start()]
        elif (end := _TOML_END.search(message)) is not None:
            lines = text.splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
            message = message[: end.start()] + " at the end of the file"
        raise fail(f"TOML syntax error: {message}", line, column) from None


def _strip_secrets(data: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[_Loc, str]]]:
    """Find secret-looking keys anywhere; drop them so they are not also 'unknown key' errors."""
    problems: list[tuple[_Loc, str]] = []

    def env_for(loc: _Loc) -> str:
        section = loc[0] if loc else ""
        if section == "mqtt":
            return f"set the environment variable {MQTT_PASSWORD_ENV} instead"
        if section == "influx":
            return f"set the environment variable {INFLUX_TOKEN_ENV} instead"
        return f"secrets come from {MQTT_PASSWORD_ENV} and {INFLUX_TOKEN_ENV}"

    def walk(node: object, loc: _Loc) -> object:
        if isinstance(node, dict):
            kept: dict[str, object] = {}
            for key, value in node.items():
                lowered = key.lower()
                if lowered in _SECRET_KEYS or lowered.endswith(("_password", "_token")):
                    problems.append(
                        ((*loc, key), f"secrets must not be in the config file: {env_for(loc)}")
                    )
                else:
                    kept[key] = walk(value, (*loc, key))
            return kept
        if isinstance(node, list):
            return [walk(item, (*loc, index)) for index, item in enumerate(node)]
        return node

    cleaned = walk(data, ())
    assert isinstance(cleaned, dict)
    return cleaned, problems


# --- pydantic errors to problems ------------------------------------------------------------


def _child(node: object, part: str | int) -> object:
    if isinstance(part, int):
        return node[part] if isinstance(node, list | tuple) and 0 <= part < len(node) else None
    return node.get(part) if isinstance(node, dict) else None


def _clean_loc(loc: Sequence[str | int], data: object) -> list[str | int]:
    """Pydantic's loc, minus what the user did not write (union tags, ``[key]`` markers)."""
    node = data
    cleaned: list[str | int] = []
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if part == "[key]":
            continue
        if isinstance(part, str):
            is_key = isinstance(node, dict) and part in node
            is_tag = isinstance(node, dict) and node.get("kind") == part and not last
            if is_tag or not (is_key or (last and isinstance(node, dict))):
                continue
        cleaned.append(part)
        node = _child(node, part)
    return cleaned


def _strip_annotated(annotation: object) -> object:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _model_of(annotation: object, node: object) -> type[BaseModel] | None:
    """The model class behind an annotation; for a tagged union, the member ``node`` names."""
    annotation = _strip_annotated(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in {typing.Union, types.UnionType}:
        models = [m for a in typing.get_args(annotation) if (m := _model_of(a, node)) is not None]
        if len(models) == 1:
            return models[0]
        kind = node.get("kind") if isinstance(node, dict) else None
        for model in models:
            field = model.model_fields.get("kind")
            if field is not None and kind in typing.get_args(field.annotation):
                return model
    return None


def _model_at(
    root: type[BaseModel], loc: Sequence[str | int], data: object
) -> type[BaseModel] | None:
    """Which model the table at ``loc`` is, so an unknown key can be matched to its fields."""
    annotation: object = root
    node = data
    for part in loc:
        model = _model_of(annotation, node)
        args = typing.get_args(_strip_annotated(annotation))
        if model is not None and isinstance(part, str):
            field = model.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        elif isinstance(part, int) and args:
            annotation = args[0]
        elif isinstance(part, str) and len(args) == 2:
            annotation = args[1]
        else:
            return None
        node = _child(node, part)
    return _model_of(annotation, node)


def _unknown_key_message(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return "unknown key (typo?)"
    fields = [name for name in model.model_fields if name != "protocols"]
    close = difflib.get_close_matches(key, fields, n=1)
    if close:
        return f"unknown key (typo? did you mean {close[0]!r}?)"
    return f"unknown key (typo?); expected one of: {', '.join(fields)}"


def _plain_message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def describe_setting_error(err: ValidationError, section: str, sources: Mapping[str, str]) -> str:
    """One line for settings merged from the environment and the file (``[section]``): each
    problem named by the variable it came from (``sources``: field -> variable) or the file key.

    Pydantic's own text spans lines and echoes the input, which can be a URL with a password.
    """
    problems = []
    for error in err.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        where = sources.get(field) or ".".join(filter(None, (section, field)))
        problems.append(f"{where}: {_plain_message(error)}")
    return "; ".join(problems)


def _error_message(
    error: Mapping[str, Any], loc: Sequence[str | int], root: type[BaseModel], data: object
) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(str(loc[-1]), _model_at(root, loc[:-1], data))
    if kind == "missing":
        return "required key is missing"
    if kind in {"int_type", "float_type"} and isinstance(error.get("input"), bool):
        wanted = "a whole number" if kind == "int_type" else "a number"
        return f"must be {wanted}, not {str(error['input']).lower()}"
    if kind == "too_short" and isinstance(error.get("input"), list | tuple):
        minimum = error.get("ctx", {}).get("min_length")
        entries = "entry" if minimum == 1 else "entries"
        return f"needs at least {minimum} {entries} (got {len(error['input'])})"
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        ctx = error.get("ctx", {})
        if kind == "union_tag_not_found":
            return "required key is missing (which kind of rule this is, e.g. 'limit')"
        return f"unknown kind {ctx.get('tag')!r} (expected {ctx.get('expected_tags', '')})"
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        if pattern in _PATTERN_MEANINGS:
            return f"{_PATTERN_MEANINGS[pattern]} (got {truncate(error.get('input'))})"
    message = _plain_message(error)
    value = error.get("input")
    if kind != "value_error" and isinstance(value, str | int | float) and str(value) not in message:
        message += f" (got {truncate(value)})"
    return message


def _only_counts_failed_items(error: Mapping[str, Any]) -> bool:
    """Pydantic counts a list's length after dropping invalid items; those items are reported."""
    if error["type"] != "too_short":
        return False
    written = error.get("input")
    minimum = error.get("ctx", {}).get("min_length", 0)
    return isinstance(written, list | tuple) and len(written) >= minimum


def _validation_problems(
    err: ValidationError, root: type[BaseModel], data: object
) -> list[tuple[_Loc, str]]:
    problems: list[tuple[_Loc, str]] = []
    for error in err.errors(include_url=False):
        if _only_counts_failed_items(error):
            continue
        loc = _clean_loc(error["loc"], data)
        if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            loc.append(str(error.get("ctx", {}).get("discriminator", "kind")).strip("'"))
        problems.append((tuple(loc), _error_message(error, loc, root, data)))
    return problems


# --- cross-reference checks, on raw data so they run even when other parts are invalid ------


def _tables(value: object) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                yield index, item


def _first_seen(
    seen: dict[str, _Loc], key: object, loc: _Loc, what: str, problems: list[tuple[_Loc, str]]
) -> None:
    if not isinstance(key, str):
        return
    if key in seen:
        problems.append(
            (
                loc,
                f"duplicate {what} {truncate(key)} (first used at {_format_location(seen[key])})",
            )
        )
    else:
        seen[key] = loc


def _profile_cross_problems(data: Mapping[str, Any]) -> list[tuple[_Loc, str]]:
    problems: list[tuple[_Loc, str]] = []
    seen: dict[str, _Loc] = {}
    groups: dict[str, tuple[AlarmCategory, _Loc]] = {}
    for index, rule in _tables(data.get("rules")):
        _first_seen(seen, rule.get("id"), ("rules", index, "id"), "rule id", problems)
        group = rule.get("alarm") or rule.get("id")
        if not _is_identifier(group):
            continue
        technical = rule.get("kind") == "staleness"
        category = AlarmCategory.TECHNICAL if technical else AlarmCategory.PHYSIOLOGICAL
        loc: _Loc = ("rules", index, "alarm" if rule.get("alarm") else "id")
        first_category, first_loc = groups.setdefault(group, (category, loc))
        if category is not first_category:
            problems.append(
                (
                    loc,
                    f"alarm {group!r} would mix {category} and {first_category} rules "
                    f"(first at {_format_location(first_loc)}); technical alarms are never "
                    f"paused, so give them their own alarm",
                )
            )
    return problems


def _rule_shape(rule: Rule) -> tuple[str, Parameter | None, str]:
    """What every participant's copy of a rule must share: one slot of the rule table."""
    return rule.kind, getattr(rule, "parameter", None), rule.alarm_group


def _session_setting_problems(
    session: Mapping[str, Any],
    s_loc: _Loc,
    profiles: Mapping[str, ProtocolProfile | None],
) -> list[tuple[_Loc, str]]:
    """One session is one rule table: one evidence filter, one baseline setting, one rule per id."""
    problems: list[tuple[_Loc, str]] = []
    first: tuple[str, ProtocolProfile] | None = None
    shapes: dict[str, tuple[tuple[str, Parameter | None, str], str]] = {}
    for p_index, participant in _tables(session.get("participants")):
        name = participant.get("protocol")
        loc: _Loc = (*s_loc, "participants", p_index, "protocol")
        if name is None:
            name, loc = session.get("protocol"), (*s_loc, "protocol")
        if not isinstance(name, str):
            continue
        profile = profiles.get(name)
        if profile is None:
            continue
        for rule in profile.rules:
            shape, owner = shapes.setdefault(rule.id, (_rule_shape(rule), name))
            if shape != _rule_shape(rule):
                problems.append(
                    (
                        loc,
                        f"rule {rule.id!r} of protocol {name!r} differs from the one of "
                        f"{owner!r} in kind, parameter or alarm; in one session a rule id is one "
                        f"rule, so rename one of them",
                    )
                )
        if first is None:
            first = (name, profile)
            continue
        first_name, first_profile = first
        differ = [
            f"[{section}]"
            for section in ("artefacts", "baseline")
            if getattr(profile, section) != getattr(first_profile, section)
        ]
        if differ:
            problems.append(
                (
                    loc,
                    f"protocol {name!r} has other {' and '.join(differ)} settings than "
                    f"{first_name!r} in the same session; a session has one of each, so make "
                    f"them equal",
                )
            )
    return problems


def _known_protocols_message(name: str, known: Sequence[str]) -> str:
    listed = ", ".join(sorted(known)) or "none"
    return f"no protocol profile {name!r} (known: {listed})"


def _override_problems(
    overrides: object, profile: ProtocolProfile, protocol: str, loc: _Loc
) -> list[tuple[_Loc, str]]:
    problems: list[tuple[_Loc, str]] = []
    if not isinstance(overrides, dict):
        return problems
    rules = {rule.id: rule for rule in profile.rules}
    for rule_id, changes in overrides.items():
        rule_loc = (*loc, rule_id)
        if not _is_identifier(rule_id):
            continue
        if rule_id not in rules:
            close = difflib.get_close_matches(rule_id, list(rules), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((rule_loc, f"protocol {protocol!r} has no rule {rule_id!r}{hint}"))
            continue
        if not isinstance(changes, dict):
            continue
        rule = rules[rule_id]
        fields = list(type(rule).model_fields)
        overridable = [name for name in fields if name not in _NON_OVERRIDABLE]
        usable: dict[str, object] = {}
        for field_name, value in changes.items():
            if not isinstance(value, bool | int | float | str):
                continue  # reported by the Participant model already
            if field_name in _NON_OVERRIDABLE:
                problems.append(
                    (
                        (*rule_loc, field_name),
                        f"{field_name} cannot be overridden (can: {', '.join(overridable)})",
                    )
                )
            elif field_name not in fields:
                close = difflib.get_close_matches(field_name, overridable, n=1)
                hint = f" (typo? did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    (
                        (*rule_loc, field_name),
                        f"a {rule.kind} rule has no field {truncate(field_name)}{hint}",
                    )
                )
            else:
                usable[field_name] = value
        try:
            _apply_override(rule, usable)
        except ValidationError as err:
            merged = {**rule.model_dump(mode="python"), **usable}
            for sub_loc, message in _validation_problems(err, type(rule), merged):
                if sub_loc and sub_loc[0] in usable:
                    problems.append(((*rule_loc, *sub_loc), message))
                else:
                    where = _format_location(sub_loc)
                    problems.append((rule_loc, f"with this override, {where}: {message}"))
    return problems


def _site_cross_problems(
    data: Mapping[str, Any],
    profiles: Mapping[str, ProtocolProfile | None],
    unknown_protocol: Callable[[str, Sequence[str]], str],
) -> list[tuple[_Loc, str]]:
    """Cross-references and uniqueness; a ``None`` profile failed to load and was reported."""
    problems: list[tuple[_Loc, str]] = []
    known_profiles = [name for name in profiles if profiles[name] is not None]
    rooms: dict[str, _Loc] = {}
    capacity: dict[str, object] = {}
    for index, room in _tables(data.get("rooms")):
        room_id = room.get("id")
        if isinstance(room_id, str) and room_id not in rooms:
            capacity[room_id] = room.get("max_connections", DEFAULT_MAX_CONNECTIONS)
        _first_seen(rooms, room_id, ("rooms", index, "id"), "room id", problems)

    sessions: dict[str, _Loc] = {}
    codes: dict[str, _Loc] = {}
    device_ids: dict[str, _Loc] = {}
    addresses: dict[str, _Loc] = {}
    patterns: dict[str, _Loc] = {}
    for s_index, session in _tables(data.get("sessions")):
        s_loc: _Loc = ("sessions", s_index)
        _first_seen(sessions, session.get("id"), (*s_loc, "id"), "session id", problems)
        room_id = session.get("room")
        if _is_identifier(room_id) and room_id not in rooms:
            listed = ", ".join(rooms) or "none"
            problems.append(((*s_loc, "room"), f"no room {room_id!r} (rooms: {listed})"))
        session_protocol = session.get("protocol")
        device_count = 0
        for p_index, participant in _tables(session.get("participants")):
            p_loc: _Loc = (*s_loc, "participants", p_index)
            _first_seen(codes, participant.get("code"), (*p_loc, "code"), "participant", problems)
            if participant.get("protocol") is not None:
                protocol, protocol_loc = participant["protocol"], (*p_loc, "protocol")
            else:
                protocol, protocol_loc = session_protocol, (*s_loc, "protocol")
            if _is_identifier(protocol):
                if protocol not in profiles:
                    problems.append((protocol_loc, unknown_protocol(protocol, known_profiles)))
                elif (profile := profiles[protocol]) is not None:
                    problems += _override_problems(
                        participant.get("overrides"), profile, protocol, (*p_loc, "overrides")
                    )
            kinds: dict[str, _Loc] = {}
            devices = list(_tables(participant.get("devices")))
            device_count += len(devices)
            for d_index, device in devices:
                d_loc: _Loc = (*p_loc, "devices", d_index)
                _first_seen(device_ids, device.get("id"), (*d_loc, "id"), "device id", problems)
                kind = device.get("kind")
                if isinstance(kind, str) and kind in kinds:
                    first = _format_location(kinds[kind])
                    problems.append(
                        ((*d_loc, "kind"), f"a second {kind} device for this participant ({first})")
                    )
                elif isinstance(kind, str):
                    kinds[kind] = (*d_loc, "kind")
                address = device.get("address")
                if isinstance(address, str):
                    _first_seen(
                        addresses, address.upper(), (*d_loc, "address"), "device address", problems
                    )
                else:
                    pattern = device.get("name_pattern")
                    where = (*d_loc, "name_pattern")
                    _first_seen(patterns, pattern, where, "name_pattern", problems)
        problems += _session_setting_problems(session, s_loc, profiles)
        limit = capacity.get(room_id) if isinstance(room_id, str) else None
        if isinstance(limit, int) and device_count > limit:
            problems.append(
                (
                    s_loc,
                    f"needs {device_count} BLE connections but room {room_id!r} allows "
                    f"max_connections = {limit}",
                )
            )
    problems += _staff_problems(data)
    return list(dict.fromkeys(problems))


def _staff_problems(data: Mapping[str, Any]) -> list[tuple[_Loc, str]]:
    """Staff codes are unique, and a relay account is not also one member's own account (it
    acts as every member already: listing it under one would suggest a limit that is not)."""
    problems: list[tuple[_Loc, str]] = []
    relays: dict[str, _Loc] = {}
    for index, relay in _tables(data.get("relays")):
        _first_seen(relays, relay.get("account"), ("relays", index, "account"), "relay", problems)
    staff: dict[str, _Loc] = {}
    for index, member in _tables(data.get("staff")):
        _first_seen(staff, member.get("id"), ("staff", index, "id"), "staff id", problems)
        accounts = member.get("accounts")
        for a_index, account in enumerate(accounts if isinstance(accounts, list | tuple) else ()):
            if isinstance(account, str) and account in relays:
                problems.append(
                    (
                        ("staff", index, "accounts", a_index),
                        f"{account!r} is a relay account ({_format_location(relays[account])}); "
                        "it may act as every staff member already",
                    )
                )
    return problems


# --- loading --------------------------------------------------------------------------------


def _display_path(path: Path) -> Path:
    """Lexically tidied (``a/../b`` -> ``b``) so messages show what the user would type."""
    return Path(os.path.normpath(path))


def _to_problems(file: Path, problems: Sequence[tuple[_Loc, str]]) -> list[ConfigProblem]:
    unique = dict.fromkeys(problems)
    return [ConfigProblem(file, _format_location(loc), message) for loc, message in unique]


def _protocol_problems(path: Path) -> tuple[ProtocolProfile | None, list[ConfigProblem]]:
    try:
        data = _read_toml(path)
    except ConfigError as err:
        return None, err.problems
    found: list[tuple[_Loc, str]] = []
    try:
        ProtocolProfile.model_validate(data, context={_CONTEXT_DEFER_CROSS_CHECKS: True})
    except ValidationError as err:
        found += _validation_problems(err, ProtocolProfile, data)
    found += _profile_cross_problems(data)
    name = data.get("name")
    if isinstance(name, str) and name != path.stem:
        found.append((("name",), f"must match the file name {path.stem!r}"))
    if found:
        return None, _to_problems(path, found)
    return ProtocolProfile.model_validate(data), []


def load_protocol(path: Path) -> ProtocolProfile:
    """Load one protocol profile; every problem in it is raised at once as :class:`ConfigError`."""
    profile, problems = _protocol_problems(path)
    if profile is None:
        raise ConfigError(problems)
    return profile


def _referenced_protocols(data: Mapping[str, Any]) -> list[str]:
    names: list[object] = []
    for _, session in _tables(data.get("sessions")):
        names.append(session.get("protocol"))
        names += [p.get("protocol") for _, p in _tables(session.get("participants"))]
    return [name for name in dict.fromkeys(names) if _is_identifier(name)]


def _load_profiles(
    site_file: Path, data: Mapping[str, Any]
) -> tuple[dict[str, ProtocolProfile | None], list[tuple[_Loc, str]], list[ConfigProblem]]:
    """Load every referenced profile: (profiles, problems in the site file, in profile files).

    A profile that exists but is broken maps to ``None``: its own file's problems say why, so
    the site file's references to it are not reported a second time.
    """
    names = _referenced_protocols(data)
    site = data.get("site")
    written = site.get("protocols_dir", "protocols") if isinstance(site, dict) else "protocols"
    if not isinstance(written, str):
        return dict.fromkeys(names), [], []
    directory = _display_path(site_file.parent / written)
    if not directory.is_dir():
        problem = (("site", "protocols_dir"), f"no such folder: {directory}")
        return dict.fromkeys(names), [problem] if names else [], []
    profiles: dict[str, ProtocolProfile | None] = {}
    file_problems: list[ConfigProblem] = []
    for name in names:
        file = directory / f"{name}.toml"
        if file.is_file():
            profiles[name], problems = _protocol_problems(file)
            file_problems += problems

    def missing(name: str, _known: Sequence[str]) -> str:
        found = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) or "none"
        expected = directory / f"{name}.toml"
        return f"no protocol profile {name!r}: {expected} does not exist (found: {found})"

    return profiles, _site_cross_problems(data, profiles, missing), file_problems


def load_config(path: Path) -> SiteConfig:
    """Load a site file and the protocol profiles it names; raise every problem at once."""
    data = _read_toml(path)
    data, site_problems = _strip_secrets(data)
    if "protocols" in data:
        del data["protocols"]
        site_problems.append(
            (("protocols",), "unknown key (typo?); protocol profiles are files in protocols_dir")
        )
    base_dir = path.parent.absolute()
    try:
        SiteConfig.model_validate(
            data, context={_CONTEXT_BASE_DIR: base_dir, _CONTEXT_DEFER_CROSS_CHECKS: True}
        )
    except ValidationError as err:
        site_problems += _validation_problems(err, SiteConfig, data)
    profiles, cross_problems, profile_problems = _load_profiles(path, data)
    problems = _to_problems(path, site_problems + cross_problems) + profile_problems
    if problems:
        raise ConfigError(problems)
    loaded = {name: profile for name, profile in profiles.items() if profile is not None}
    try:
        return SiteConfig.model_validate(
            {**data, "protocols": loaded}, context={_CONTEXT_BASE_DIR: base_dir}
        )
    except ValidationError as err:  # the checks above should have caught it; still no traceback
        raise ConfigError(_to_problems(path, _validation_problems(err, SiteConfig, data))) from None


def load_config_or_report(path: Path, err: TextIO | None = None) -> SiteConfig | None:
    """The site file, or None after listing every problem on ``err`` (standard error).

    Every command that reads a site file reports its problems this one way.
    """
    stream = sys.stderr if err is None else err
    try:
        return load_config(path)
    except ConfigError as error:
        stream.write(f"{path}: invalid configuration ({len(error.problems)} problem(s)):\n")
        stream.writelines(f"  {problem}\n" for problem in error.problems)
        return None


# --- summary --------------------------------------------------------------------------------


def summarize(config: SiteConfig) -> str:
    """A short overview for ``monitor check-config``: what will be monitored, never secrets."""
    lines = [f"Site {config.site.code} ({config.site.timezone})"]
    if config.mqtt is None:
        lines.append("MQTT: not configured (embedded broker)")
    else:
        mqtt = config.mqtt
        user = f"{mqtt.username}@" if mqtt.username else ""
        tls = "TLS" if mqtt.uses_tls else "no TLS"
        lines.append(f"MQTT: {user}{mqtt.host}:{mqtt.port} ({tls}), topic root {mqtt.topic_root!r}")
    if config.influx is None:
        lines.append("InfluxDB: not configured (local store only)")
    else:
        influx = config.influx
        target = f"bucket {influx.bucket!r}" + (f", org {influx.org!r}" if influx.org else "")
        lines.append(f"InfluxDB: {influx.url} (API {influx.api}), {target}")
    lines.append(f"Rooms ({len(config.rooms)}):")
    for room in config.rooms:
        adapter = room.ble_adapter or "default adapter"
        lines.append(f"  {room.id}: {adapter}, up to {room.max_connections} BLE connections")
    lines.append(f"Sessions ({len(config.sessions)}):")
    for session in config.sessions:
        lines.append(f"  {session.id} in {session.room}, protocol {session.protocol}")
        for participant in session.participants:
            details = [", ".join(device.kind.value for device in participant.devices)]
            if participant.protocol and participant.protocol != session.protocol:
                details.append(f"protocol {participant.protocol}")
            if participant.overrides:
                details.append(f"{len(participant.overrides)} override(s)")
            lines.append(f"    {participant.code}: {'; '.join(details)}")
    lines.append(
        f"Staff ({len(config.staff)}), who may send commands"
        + ("; none: every command is refused" if not config.staff else ":")
    )
    for member in config.staff:
        accounts = ", ".join(member.accounts) or "relays only"
        lines.append(f"  {member.id}: {', '.join(member.roles)} (accounts: {accounts})")
    if config.relays:
        lines.append(f"Relays: {', '.join(relay.account for relay in config.relays)}")
    devices = [d.kind for s in config.sessions for p in s.participants for d in p.devices]
    counts = ", ".join(
        f"{kind.value} {devices.count(kind)}" for kind in DeviceKind if kind in devices
    )
    lines.append(f"Devices ({len(devices)}): {counts}")
    lines.append(f"Protocols ({len(config.protocols)}):")
    for name, profile in sorted(config.protocols.items()):
        escalation = profile.escalation
        kinds = [rule.kind for rule in profile.rules]
        counts = ", ".join(f"{kinds.count(kind)} {kind}" for kind in dict.fromkeys(kinds))
        lines.append(
            f"  {name}: {len(profile.rules)} rules ({counts}); unacknowledged medium -> high after "
            f"{escalation.unacknowledged_medium_to_high_s:g} s, high -> backup after "
            f"{escalation.unacknowledged_high_to_backup_s:g} s"
        )
    return "\n".join(lines)

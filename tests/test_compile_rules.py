"""Compiling a site config into the rule table that detection evaluates."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.alerts.compile import (
    SERVICE_RULES,
    compile_rule,
    compile_rules,
    measured_parameters,
)
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
    StalenessSpec,
    TrendSpec,
)
from monitor.config import Artefacts, Baseline, load_config, load_protocol
from monitor.models import (
    DETECTION_PARAMETERS,
    AlarmCategory,
    AlarmPriority,
    ArtefactSettings,
    BaselineSettings,
    Parameter,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
PROTOCOLS = CONFIG / "protocols"
DEMO_SESSION = "DEMO-MDMA-1"
SERVICE_RULE_IDS = tuple(rule.id for rule in SERVICE_RULES)
MDMA_ONLY = ("sbp-rise-low", "temp-baseline-medium", "temp-rise-high", "hyperthermia-tachycardia")


def demo_site(tmp_path: Path, *, after_p002: str = "") -> Path:
    """The demo site file, with its profiles found from tmp_path and text added for P-002."""
    text = (CONFIG / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('protocols_dir = "protocols"', f"protocols_dir = '{PROTOCOLS}'")
    text = text.replace('code = "P-002"\n', f'code = "P-002"\n{after_p002}')
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def row(rule_set: RuleSet, code: str) -> dict[str, CompiledRule | None]:
    return dict(
        zip(rule_set.rule_ids, rule_set.rules[rule_set.participants.index(code)], strict=True)
    )


def present(rule: CompiledRule | None) -> CompiledRule:
    assert rule is not None
    return rule


def test_the_demo_config_compiles_to_one_row_per_participant() -> None:
    config = load_config(CONFIG / "demo.toml")
    rule_set = compile_rules(config, DEMO_SESSION)
    profile = load_protocol(PROTOCOLS / "mdma.toml")
    assert rule_set.participants == ("P-001", "P-002")
    assert rule_set.rule_ids == (*(rule.id for rule in profile.rules), *SERVICE_RULE_IDS)
    assert rule_set.rules[0] == rule_set.rules[1]
    assert all(rule is not None for rule in rule_set.rules[0])
    assert rule_set.escalation == (EscalationSettings(300, 120), EscalationSettings(300, 120))
    assert rule_set.artefacts == ArtefactSettings()
    assert rule_set.baseline == BaselineSettings()
    for rule in rule_set.rules[0]:
        assert present(rule).parameter in (None, *DETECTION_PARAMETERS)


def test_every_kind_is_compiled_with_its_numbers() -> None:
    rules = row(compile_rules(load_config(CONFIG / "demo.toml"), DEMO_SESSION), "P-001")
    sbp = present(rules["sbp-high-low"])
    assert sbp.spec == LimitSpec(Parameter.SYSTOLIC_BP, True, 160.0, False, 5.0)
    assert (sbp.priority, sbp.alarm, sbp.delay_s, sbp.confirm) == (
        AlarmPriority.LOW,
        "sbp-high",
        0,
        2,
    )
    assert present(rules["sbp-high-high-persistent"]).delay_ms == 900_000
    assert present(rules["hr-low-high"]).spec == LimitSpec(
        Parameter.HEART_RATE, False, 40.0, False, 5.0
    )
    rise = present(rules["temp-rise-high"])
    assert rise.spec == TrendSpec(
        parameter=Parameter.TEMPERATURE,
        rising=True,
        rate_per_min=0.0166,
        window_s=1800,
        resolution_s=30,
        min_samples=3,
        while_at_least=38.0,
    )
    assert (rise.priority, rise.alarm, rise.confirm) == (AlarmPriority.HIGH, "temp-high", 1)
    sbp_rise = present(rules["sbp-rise-low"])
    assert sbp_rise.spec == TrendSpec(Parameter.SYSTOLIC_BP, True, 2.0, 900, 60, 2)
    assert (sbp_rise.priority, sbp_rise.alarm, sbp_rise.confirm) == (
        AlarmPriority.LOW,
        "sbp-rise",
        2,
    )
    baseline = present(rules["temp-baseline-medium"])
    assert baseline.spec == BaselineSpec(Parameter.TEMPERATURE, True, 1.0, 0.2)
    assert (baseline.priority, baseline.delay_s, baseline.alarm) == (
        AlarmPriority.MEDIUM,
        300,
        "temp-high",
    )
    combined = present(rules["hyperthermia-tachycardia"])
    assert combined.spec == CombinedSpec(
        parts=(
            CombinedPart(Parameter.TEMPERATURE, True, 38.5, True),
            CombinedPart(Parameter.HEART_RATE, True, 120.0, True),
        ),
        max_age_s=120,
    )
    assert (combined.priority, combined.delay_s, combined.parameter) == (
        AlarmPriority.HIGH,
        120,
        None,
    )
    news2 = present(rules["news2"])
    assert news2.spec == News2Spec(max_age_s=900, alert_low=False)
    assert (news2.priority, news2.category, news2.per_sample) == (
        AlarmPriority.HIGH,
        AlarmCategory.PHYSIOLOGICAL,
        False,
    )
    stale = {
        rule.spec.parameter: (rule.spec.stale_after_s, rule.alarm)
        for rule in map(present, rules.values())
        if isinstance(rule.spec, StalenessSpec)
    }
    assert stale == {
        Parameter.HEART_RATE: (60, "hr-stale"),
        Parameter.SPO2: (60, "spo2-stale"),
        Parameter.TEMPERATURE: (300, "temp-stale"),
        Parameter.SYSTOLIC_BP: (1800, "bp-stale"),
        Parameter.DIASTOLIC_BP: (1800, "bp-stale"),
    }
    for rule in map(present, rules.values()):
        technical = isinstance(rule.spec, StalenessSpec | ReportedSpec)
        expected = AlarmCategory.TECHNICAL if technical else AlarmCategory.PHYSIOLOGICAL
        assert rule.category is expected


def test_an_override_changes_only_that_participants_row(tmp_path: Path) -> None:
    overrides = (
        '[sessions.participants.overrides."hr-high-medium"]\nthreshold = 125\n'
        '[sessions.participants.overrides."temp-rise-high"]\nrate_per_min = 0.02\n'
        '[sessions.participants.overrides."hr-stale"]\nstale_after_s = 90\n'
        '[sessions.participants.overrides."sbp-high-low"]\nconfirm = 3\n'
    )
    config = load_config(demo_site(tmp_path, after_p002=overrides))
    rule_set = compile_rules(config, DEMO_SESSION)
    default = compile_rules(load_config(CONFIG / "demo.toml"), DEMO_SESSION)
    assert rule_set.rule_ids == default.rule_ids
    assert rule_set.rules[0] == default.rules[0]
    mine, before = row(rule_set, "P-002"), row(default, "P-002")
    changed = {rule_id for rule_id in rule_set.rule_ids if mine[rule_id] != before[rule_id]}
    assert changed == {"hr-high-medium", "temp-rise-high", "hr-stale", "sbp-high-low"}
    hr = present(mine["hr-high-medium"])
    assert isinstance(hr.spec, LimitSpec)
    assert hr.spec.threshold == 125
    trend = present(mine["temp-rise-high"])
    assert isinstance(trend.spec, TrendSpec)
    assert (trend.spec.rate_per_min, trend.spec.window_s) == (0.02, 1800)
    stale = present(mine["hr-stale"])
    assert isinstance(stale.spec, StalenessSpec)
    assert stale.spec.stale_after_s == 90
    assert present(mine["sbp-high-low"]).confirm == 3


def test_mixed_protocols_leave_empty_slots(tmp_path: Path) -> None:
    config = load_config(demo_site(tmp_path, after_p002='protocol = "psilocybin"\n'))
    rule_set = compile_rules(config, DEMO_SESSION)
    mdma = load_protocol(PROTOCOLS / "mdma.toml")
    assert rule_set.rule_ids == (*(rule.id for rule in mdma.rules), *SERVICE_RULE_IDS)
    assert all(rule is not None for rule in rule_set.rules[0])
    psilocybin = row(rule_set, "P-002")
    assert {rule_id for rule_id, rule in psilocybin.items() if rule is None} == set(MDMA_ONLY)
    assert present(psilocybin["news2"]).spec == present(row(rule_set, "P-001")["news2"]).spec


def test_slots_follow_the_first_participant_that_has_the_rule(tmp_path: Path) -> None:
    text = (CONFIG / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('protocols_dir = "protocols"', f"protocols_dir = '{PROTOCOLS}'")
    text = text.replace('code = "P-001"\n', 'code = "P-001"\nprotocol = "psilocybin"\n')
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    rule_set = compile_rules(load_config(path), DEMO_SESSION)
    psilocybin = load_protocol(PROTOCOLS / "psilocybin.toml")
    ids = tuple(rule.id for rule in psilocybin.rules)
    assert rule_set.rule_ids == (*ids, *SERVICE_RULE_IDS, *MDMA_ONLY)


def test_staleness_only_for_the_streams_a_participant_is_wearing() -> None:
    config = load_config(CONFIG / "example.toml")
    rule_set = compile_rules(config, "S-2026-11-26-A")
    assert rule_set.participants == ("P-014", "P-015")
    wears_all, strap_and_cuff = row(rule_set, "P-014"), row(rule_set, "P-015")
    assert all(rule is not None for rule in wears_all.values())
    missing = {rule_id for rule_id, rule in strap_and_cuff.items() if rule is None}
    assert missing == {"spo2-stale", "temp-stale"}
    session = config.session("S-2026-11-26-A")
    assert measured_parameters(session.participants[1]) == {
        Parameter.HEART_RATE,
        Parameter.SYSTOLIC_BP,
        Parameter.DIASTOLIC_BP,
    }
    psilocybin = compile_rules(config, "S-2026-11-26-B")
    assert psilocybin.participants == ("P-021",)
    # no participant of that session wears a thermometer or a cuff: no slot at all
    assert {"temp-stale", "sbp-stale", "dbp-stale"}.isdisjoint(psilocybin.rule_ids)
    assert {"hr-stale", "spo2-stale", "news2"} <= set(psilocybin.rule_ids)


def test_artefact_and_baseline_settings_are_compiled() -> None:
    config = load_config(CONFIG / "demo.toml")
    mdma = config.protocols["mdma"]
    custom = mdma.model_copy(
        update={
            "artefacts": Artefacts.model_validate(
                {
                    "spike_max_gap_s": 20,
                    "plausible": {"heart_rate": [25, 240]},
                    "spike_delta": {"spo2": False, "systolic_bp": 40},
                }
            ),
            "baseline": Baseline(window_s=1200, resolution_s=20, min_samples=5),
        }
    )
    changed = config.model_copy(update={"protocols": {"mdma": custom}})
    rule_set = compile_rules(changed, DEMO_SESSION)
    assert rule_set.artefacts.spike_max_gap_s == 20
    assert rule_set.artefacts.plausible[Parameter.HEART_RATE] == (25.0, 240.0)
    assert rule_set.artefacts.plausible[Parameter.SPO2] == (50.0, 100.0)
    assert rule_set.artefacts.spike_delta[Parameter.SPO2] is None
    assert rule_set.artefacts.spike_delta[Parameter.SYSTOLIC_BP] == 40.0
    assert rule_set.artefacts.spike_delta[Parameter.HEART_RATE] == 30.0
    assert rule_set.baseline == BaselineSettings(window_s=1200, resolution_s=20, min_samples=5)


@pytest.mark.parametrize(
    ("section", "value"),
    [("artefacts", Artefacts(spike_max_gap_s=10)), ("baseline", Baseline(window_s=600))],
)
def test_conflicting_settings_in_one_session_are_an_error(
    tmp_path: Path, section: str, value: Artefacts | Baseline
) -> None:
    config = load_config(demo_site(tmp_path, after_p002='protocol = "psilocybin"\n'))
    # load_config refuses such a file; a config changed in code must still not compile.
    other = config.protocols["psilocybin"].model_copy(update={section: value})
    changed = config.model_copy(update={"protocols": {**config.protocols, "psilocybin": other}})
    with pytest.raises(
        RuleSetError, match=rf"'mdma' and 'psilocybin' give different \[{section}\]"
    ):
        compile_rules(changed, DEMO_SESSION)


def test_an_unknown_session_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        compile_rules(load_config(CONFIG / "demo.toml"), "NO-SUCH-SESSION")


def test_compile_rule_keeps_the_falling_direction() -> None:
    profile = load_protocol(PROTOCOLS / "mdma.toml")
    spo2 = compile_rule(profile.rule("spo2-low-high-immediate"))
    assert spo2.spec == LimitSpec(Parameter.SPO2, False, 88.0, True, 1.0)
    assert (spo2.delay_s, spo2.alarm, spo2.confirm) == (0, "spo2-low", 1)


def test_compiling_is_deterministic() -> None:
    config = load_config(CONFIG / "demo.toml")
    assert compile_rules(config, DEMO_SESSION) == compile_rules(config, DEMO_SESSION)


def test_the_service_rules_are_in_every_row_and_their_ids_are_reserved(tmp_path: Path) -> None:
    rule_set = compile_rules(load_config(CONFIG / "demo.toml"), DEMO_SESSION)
    for code in rule_set.participants:
        assert [present(row(rule_set, code)[rule.id]) for rule in SERVICE_RULES] == list(
            SERVICE_RULES
        )
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    for profile in PROTOCOLS.glob("*.toml"):
        text = profile.read_text(encoding="utf-8")
        (protocols / profile.name).write_text(
            text.replace('id = "hr-stale"', 'id = "storage-backlog"'), encoding="utf-8"
        )
    site = (CONFIG / "demo.toml").read_text(encoding="utf-8")
    (tmp_path / "site.toml").write_text(
        site.replace('protocols_dir = "protocols"', f"protocols_dir = '{protocols}'"),
        encoding="utf-8",
    )
    config = load_config(tmp_path / "site.toml")
    with pytest.raises(RuleSetError, match="rule id 'storage-backlog' is reserved"):
        compile_rules(config, DEMO_SESSION)

"""Configuration: the shipped files load, and every kind of mistake is reported where it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from monitor.config import (
    ConfigError,
    ConfigProblem,
    LimitDirection,
    LimitRule,
    Secrets,
    SiteConfig,
    load_config,
    load_protocol,
    summarize,
)
from monitor.models import AlarmPriority, DeviceKind, Parameter

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
PROTOCOLS = CONFIG / "protocols"

SITE = f"""\
[site]
code = "SITE-1"
timezone = "Europe/Zurich"
protocols_dir = '{PROTOCOLS}'

[[rooms]]
id = "room-a"

[[sessions]]
id = "S-1"
room = "room-a"
protocol = "mdma"

[[sessions.participants]]
code = "P-001"

[[sessions.participants.devices]]
id = "hr-1"
kind = "heart_rate"
address = "F0:12:34:56:78:9A"

[[sessions.participants.devices]]
id = "bp-1"
kind = "blood_pressure"
name_pattern = "BP-*"
"""

SECOND_PARTICIPANT = """
[[sessions.participants]]
code = "P-002"

[[sessions.participants.devices]]
id = "hr-2"
kind = "heart_rate"
name_pattern = "HR-2"
"""

RULE = """\
[[rules]]
id = "hr-high"
kind = "limit"
parameter = "heart_rate"
direction = "high"
threshold = 120.0
inclusive = false
priority = "medium"
delay_s = 120
clear_band = 5.0
"""

PROFILE = f"""\
name = "custom"
[escalation]
unacknowledged_medium_to_high_s = 300
unacknowledged_high_to_backup_s = 120

{RULE}"""


def write(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, *, protocol: bool = False) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        if protocol:
            load_protocol(path)
        else:
            load_config(path)
    return caught.value.problems


def locations(path: Path) -> dict[str, str]:
    """Location -> message, for the site file's own problems."""
    return {p.location: p.message for p in problems_of(path) if p.file == path}


# --- the shipped files ------------------------------------------------------------------------


def test_example_config_loads_with_both_protocols_and_the_override() -> None:
    config = load_config(CONFIG / "example.toml")
    assert [room.id for room in config.rooms] == ["room-a", "room-b"]
    assert set(config.protocols) == {"mdma", "psilocybin"}
    kinds = {d.kind for s in config.sessions for p in s.participants for d in p.devices}
    assert kinds == set(DeviceKind)
    session = config.sessions[0]
    participant = session.participants[0]
    rules = {rule.id: rule for rule in config.rules_for(session, participant)}
    assert rules["hr-high-medium"].threshold == 125
    default = config.protocol_for(session, participant).rule("hr-high-medium")
    assert default.threshold == 120
    assert config.mqtt is not None
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.username) == (
        "broker.clinic.example",
        8883,
        "detector",
    )
    assert config.mqtt.uses_tls


def test_demo_config_has_two_simulated_participants_with_every_device_kind() -> None:
    config = load_config(CONFIG / "demo.toml")
    assert config.mqtt is None
    assert config.influx is None
    (session,) = config.sessions
    assert session.protocol == "mdma"
    assert [p.code for p in session.participants] == ["P-001", "P-002"]
    for participant in session.participants:
        assert {d.kind for d in participant.devices} == set(DeviceKind)
        for device in participant.devices:
            assert device.address is None
            assert device.name_pattern is not None
            assert device.name_pattern.startswith("SIM-")
            assert device.name_pattern.endswith(participant.code)


def test_paths_are_resolved_against_the_config_file_not_the_cwd() -> None:
    config = load_config(CONFIG / "demo.toml")
    assert config.site.protocols_dir == PROTOCOLS


@pytest.mark.parametrize("name", ["mdma", "psilocybin"])
def test_protocol_profiles_cover_every_vital_sign(name: str) -> None:
    profile = load_protocol(PROTOCOLS / f"{name}.toml")
    assert profile.name == name
    assert profile.escalation.unacknowledged_medium_to_high_s == 300
    assert profile.escalation.unacknowledged_high_to_backup_s == 120
    tiers = {(r.parameter, r.direction, r.priority) for r in profile.rules}
    for parameter in (Parameter.SYSTOLIC_BP, Parameter.DIASTOLIC_BP, Parameter.HEART_RATE):
        for priority in AlarmPriority:
            assert (parameter, LimitDirection.HIGH, priority) in tiers
    for priority in AlarmPriority:
        assert (Parameter.TEMPERATURE, LimitDirection.HIGH, priority) in tiers
        assert (Parameter.SPO2, LimitDirection.LOW, priority) in tiers
    bradycardia = profile.rule("hr-low-high")
    assert (bradycardia.threshold, bradycardia.priority) == (40, AlarmPriority.HIGH)
    sbp_low = profile.rule("sbp-high-low")
    assert (sbp_low.threshold, sbp_low.inclusive, sbp_low.confirm) == (160, False, True)
    assert profile.rule("spo2-low-high-immediate").delay_s == 0
    assert profile.rule("hr-high-low").delay_s == 120


@pytest.mark.parametrize("name", ["mdma", "psilocybin"])
def test_every_threshold_and_delay_cites_its_source(name: str) -> None:
    text = (PROTOCOLS / f"{name}.toml").read_text(encoding="utf-8")
    numbered = [line for line in text.splitlines() if re.match(r"(threshold|delay_s) =", line)]
    assert numbered
    for line in numbered:
        assert re.search(r"#.*\b\d\.\d\b", line), f"no source section cited: {line}"


def test_summary_names_codes_kinds_and_protocols() -> None:
    summary = summarize(load_config(CONFIG / "example.toml"))
    for expected in ("SITE-1", "room-a", "S-2026-11-26-B", "P-014", "P-021", "pulse_oximeter"):
        assert expected in summary
    assert "mdma: 18 rules" in summary
    assert "MQTT: detector@broker.clinic.example:8883" in summary
    assert "org 'clinic'" in summary
    demo = summarize(load_config(CONFIG / "demo.toml"))
    assert "MQTT: not configured" in demo
    assert "InfluxDB: not configured" in demo


def test_the_committed_three_mistakes_file_reports_exactly_three_paths() -> None:
    path = ROOT / "tests" / "data" / "config" / "three-mistakes.toml"
    problems = problems_of(path)
    assert [p.location for p in problems] == [
        "rooms[0].max_conections",
        "sessions[0].participants[0].devices[0].kind",
        "sessions[0].room",
    ]


# --- validation errors, reported with the path the user wrote ---------------------------------


def test_three_independent_mistakes_are_all_reported(tmp_path: Path) -> None:
    text = (
        (SITE + SECOND_PARTICIPANT)
        .replace('timezone = "Europe/Zurich"', 'timezone = "Europe/Zurich"\ncolour = "blue"')
        .replace(
            'kind = "heart_rate"\nname_pattern = "HR-2"',
            'kind = "heartrate"\nname_pattern = "HR-2"',
        )
        .replace('room = "room-a"', 'room = "room-z"')
    )
    found = locations(write(tmp_path, text))
    assert set(found) == {
        "site.colour",
        "sessions[0].participants[1].devices[0].kind",
        "sessions[0].room",
    }
    assert "heartrate" in found["sessions[0].participants[1].devices[0].kind"]
    assert "'heart_rate'" in found["sessions[0].participants[1].devices[0].kind"]


def test_problem_and_error_text(tmp_path: Path) -> None:
    path = write(tmp_path, SITE.replace('kind = "blood_pressure"', 'kind = "bp"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert str(problem).startswith(
        f"{path}: sessions[0].participants[0].devices[1].kind: Input should be 'heart_rate'"
    )
    assert str(caught.value) == str(problem)
    two = ConfigError([problem, ConfigProblem(path, "", "whole file", line=3, column=7)])
    assert str(two).splitlines() == [str(problem), f"{path}:3:7: whole file"]


def test_missing_required_keys(tmp_path: Path) -> None:
    text = SITE.replace('timezone = "Europe/Zurich"\n', "").replace('id = "hr-1"\n', "")
    found = locations(write(tmp_path, text))
    assert found == {
        "site.timezone": "required key is missing",
        "sessions[0].participants[0].devices[0].id": "required key is missing",
    }


def test_missing_sections(tmp_path: Path) -> None:
    found = locations(write(tmp_path, '[site]\ncode = "S"\ntimezone = "UTC"\n'))
    assert found == {"rooms": "required key is missing", "sessions": "required key is missing"}


@pytest.mark.parametrize(
    ("old", "new", "location", "hint"),
    [
        ('code = "SITE-1"', 'code = "SITE-1"\ncolor = 1', "site.color", "unknown key"),
        (
            'id = "room-a"',
            'id = "room-a"\nmax_conections = 7',
            "rooms[0].max_conections",
            "max_connections",
        ),
        ('id = "S-1"', 'id = "S-1"\nroom_id = "x"', "sessions[0].room_id", "unknown key"),
        (
            'address = "F0:12:34:56:78:9A"',
            'adress = "F0:12:34:56:78:9A"',
            "sessions[0].participants[0].devices[0].adress",
            "did you mean 'address'",
        ),
    ],
)
def test_unknown_keys_at_every_depth(
    tmp_path: Path, old: str, new: str, location: str, hint: str
) -> None:
    found = locations(write(tmp_path, SITE.replace(old, new, 1)))
    assert location in found
    assert hint in found[location]
    assert "unknown key" in found[location]


def test_unknown_key_in_nested_optional_tables(tmp_path: Path) -> None:
    ca = write(tmp_path, "not really a certificate", "ca.pem")
    text = (
        SITE
        + f"""
[mqtt]
url = "mqtts://detector@127.0.0.1:8883"
[mqtt.tls]
ca_file = "{ca.name}"
ca = "x"
"""
    )
    assert "mqtt.tls.ca" in locations(write(tmp_path, text))


@pytest.mark.parametrize(
    ("old", "new", "location", "message"),
    [
        ('room = "room-a"', 'room = "room-b"', "sessions[0].room", "no room 'room-b'"),
        (
            'protocol = "mdma"',
            'protocol = "mdmaa"',
            "sessions[0].protocol",
            "no protocol profile 'mdmaa'",
        ),
        (
            'code = "P-001"',
            'code = "P-001"\nprotocol = "lsd"',
            "sessions[0].participants[0].protocol",
            "no protocol profile 'lsd'",
        ),
    ],
)
def test_bad_references(tmp_path: Path, old: str, new: str, location: str, message: str) -> None:
    found = locations(write(tmp_path, SITE.replace(old, new, 1)))
    assert location in found
    assert message in found[location]


def test_unknown_protocol_lists_the_profiles_found(tmp_path: Path) -> None:
    found = locations(write(tmp_path, SITE.replace('protocol = "mdma"', 'protocol = "mdmaa"')))
    assert "found: mdma, psilocybin" in found["sessions[0].protocol"]


def test_duplicate_ids(tmp_path: Path) -> None:
    text = (
        SITE.replace("[[sessions]]", '[[rooms]]\nid = "room-a"\n\n[[sessions]]')
        + SECOND_PARTICIPANT.replace("P-002", "P-001").replace('"hr-2"', '"hr-1"')
        + SITE[SITE.index("[[sessions]]") :]
        .replace('"bp-1"', '"bp-2"')
        .replace('"BP-*"', '"BP2-*"')
        .replace('"P-001"', '"P-003"')
        .replace('"hr-1"', '"hr-3"')
        .replace("9A", "9a")
    )
    found = locations(write(tmp_path, text))
    assert "duplicate room id 'room-a'" in found["rooms[1].id"]
    assert "duplicate session id 'S-1'" in found["sessions[1].id"]
    assert "duplicate participant 'P-001'" in found["sessions[0].participants[1].code"]
    assert "duplicate device id 'hr-1'" in found["sessions[0].participants[1].devices[0].id"]
    address = found["sessions[1].participants[0].devices[0].address"]
    assert "duplicate device address 'F0:12:34:56:78:9A'" in address
    assert "first used at sessions[0].participants[0].devices[0].address" in address


def test_participant_codes_are_unique_across_sessions(tmp_path: Path) -> None:
    second_session = SITE[SITE.index("[[sessions]]") :].replace("S-1", "S-2")
    second_session = second_session.replace('"hr-1"', '"hr-9"').replace('"bp-1"', '"bp-9"')
    second_session = second_session.replace("F0:12", "F0:99").replace("BP-*", "BP9-*")
    found = locations(write(tmp_path, SITE + second_session))
    assert list(found) == ["sessions[1].participants[0].code"]


def test_one_device_per_kind_per_participant(tmp_path: Path) -> None:
    text = SITE.replace('kind = "blood_pressure"', 'kind = "heart_rate"')
    found = locations(write(tmp_path, text))
    assert "a second heart_rate device" in found["sessions[0].participants[0].devices[1].kind"]


def test_a_device_needs_an_address_or_a_name_pattern(tmp_path: Path) -> None:
    found = locations(write(tmp_path, SITE.replace('name_pattern = "BP-*"\n', "")))
    assert "address or name_pattern" in found["sessions[0].participants[0].devices[1].name_pattern"]


def test_bad_address(tmp_path: Path) -> None:
    found = locations(write(tmp_path, SITE.replace("F0:12:34:56:78:9A", "F0-12-34")))
    assert "MAC address" in found["sessions[0].participants[0].devices[0].address"]


def test_addresses_are_normalised_to_upper_case(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SITE.replace("F0:12:34:56:78:9A", "f0:12:34:56:78:9a")))
    assert config.sessions[0].participants[0].devices[0].address == "F0:12:34:56:78:9A"


def test_pseudonymous_codes_only(tmp_path: Path) -> None:
    found = locations(write(tmp_path, SITE.replace('"P-001"', '"Jane Doe"')))
    assert "pseudonymous" in found["sessions[0].participants[0].code"]


def test_bad_time_zone(tmp_path: Path) -> None:
    found = locations(write(tmp_path, SITE.replace("Europe/Zurich", "Europe/Zurch")))
    assert "unknown time zone" in found["site.timezone"]


def test_more_devices_than_the_room_can_hold(tmp_path: Path) -> None:
    text = SITE.replace('id = "room-a"', 'id = "room-a"\nmax_connections = 2') + SECOND_PARTICIPANT
    found = locations(write(tmp_path, text))
    assert "needs 3 BLE connections" in found["sessions[0]"]


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "location", "variable"),
    [
        (
            '[mqtt]\nurl = "mqtt://u@127.0.0.1"',
            "password",
            "mqtt.password",
            "MONITOR_MQTT_PASSWORD",
        ),
        (
            '[influx]\nurl = "http://127.0.0.1:8086"\napi = "v1"',
            "token",
            "influx.token",
            "MONITOR_INFLUX_TOKEN",
        ),
        ("", "token", "token", "MONITOR_INFLUX_TOKEN"),
    ],
)
def test_secret_in_the_file_names_the_environment_variable(
    tmp_path: Path, section: str, key: str, location: str, variable: str
) -> None:
    text = (
        f'{key} = "s3cret"\n' + SITE if not section else SITE + f'\n{section}\n{key} = "s3cret"\n'
    )
    problems = problems_of(write(tmp_path, text))
    assert [p.location for p in problems] == [location]
    assert variable in problems[0].message
    assert "s3cret" not in str(problems[0])


def test_password_in_the_mqtt_url(tmp_path: Path) -> None:
    text = SITE + '\n[mqtt]\nurl = "mqtt://detector:s3cret@127.0.0.1:1883"\n'
    found = locations(write(tmp_path, text))
    assert "MONITOR_MQTT_PASSWORD" in found["mqtt.url"]
    assert "s3cret" not in found["mqtt.url"]


@pytest.mark.parametrize("userinfo", ["admin:s3cret@", "admin@"])
def test_credentials_in_the_influx_url(tmp_path: Path, userinfo: str) -> None:
    text = SITE + f'\n[influx]\nurl = "http://{userinfo}127.0.0.1:8086"\napi = "v1"\n'
    found = locations(write(tmp_path, text))
    assert "MONITOR_INFLUX_TOKEN" in found["influx.url"]
    assert "s3cret" not in found["influx.url"]


def test_secrets_come_from_the_environment_and_are_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MONITOR_MQTT_PASSWORD", "mqtt-hunter2")
    monkeypatch.setenv("MONITOR_INFLUX_TOKEN", "influx-hunter2")
    secrets = Secrets()
    assert isinstance(secrets.mqtt_password, SecretStr)
    assert secrets.mqtt_password.get_secret_value() == "mqtt-hunter2"
    assert secrets.influx_token is not None
    assert secrets.influx_token.get_secret_value() == "influx-hunter2"
    for text in (repr(secrets), str(secrets), secrets.model_dump_json()):
        assert "hunter2" not in text
    assert "hunter2" not in summarize(load_config(CONFIG / "example.toml"))


def test_secrets_are_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONITOR_MQTT_PASSWORD", raising=False)
    monkeypatch.setenv("MONITOR_INFLUX_TOKEN", "")
    secrets = Secrets()
    assert secrets.mqtt_password is None
    assert secrets.influx_token is None


# --- transports -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1883", "mqtt://"),
        ("mqtt://:1883", "no host"),
        ("mqtt://127.0.0.1:99999", "port"),
        ("mqtt://127.0.0.1/topic", "path"),
    ],
)
def test_bad_mqtt_url(tmp_path: Path, url: str, message: str) -> None:
    found = locations(write(tmp_path, SITE + f'\n[mqtt]\nurl = "{url}"\n'))
    assert message in found["mqtt.url"]


def test_mqtt_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SITE + '\n[mqtt]\nurl = "mqtt://127.0.0.1"\n'))
    assert config.mqtt is not None
    assert (config.mqtt.port, config.mqtt.username, config.mqtt.topic_root) == (
        1883,
        None,
        "vitals",
    )


def test_tls_files_must_exist_and_need_mqtts(tmp_path: Path) -> None:
    text = SITE + '\n[mqtt]\nurl = "mqtt://127.0.0.1"\n[mqtt.tls]\nca_file = "missing.pem"\n'
    found = locations(write(tmp_path, text))
    assert "no such file" in found["mqtt.tls.ca_file"]
    ca = write(tmp_path, "x", "ca.pem")
    found = locations(write(tmp_path, text.replace("missing.pem", ca.name)))
    assert "mqtts://" in found["mqtt.tls"]


def test_tls_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    ca = write(tmp_path, "x", "ca.pem")
    text = SITE + '\n[mqtt]\nurl = "mqtts://127.0.0.1"\n[mqtt.tls]\nca_file = "ca.pem"\n'
    config = load_config(write(tmp_path, text))
    assert config.mqtt is not None
    assert config.mqtt.tls is not None
    assert config.mqtt.tls.ca_file == ca


def test_influx_org_belongs_to_api_v2(tmp_path: Path) -> None:
    v2 = SITE + '\n[influx]\nurl = "http://127.0.0.1:8086"\napi = "v2"\n'
    assert "required" in locations(write(tmp_path, v2))["influx.org"]
    v1 = SITE + '\n[influx]\nurl = "http://127.0.0.1:8086"\napi = "v1"\norg = "clinic"\n'
    assert "only used" in locations(write(tmp_path, v1))["influx.org"]
    config = load_config(write(tmp_path, v1.replace('org = "clinic"\n', "")))
    assert config.influx is not None
    assert (config.influx.api, config.influx.bucket) == ("v1", "vitals")


# --- files that cannot be read or parsed ------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "site.toml"
    (problem,) = problems_of(path)
    assert (problem.file, problem.location, problem.message) == (path, "", "no such file")
    assert str(problem) == f"{path}: no such file"


def test_directory(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path)
    assert problem.file == tmp_path
    assert "directory" in problem.message


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[site]\ncode = "SITE-1"\ntimezone = \n')
    (problem,) = problems_of(path)
    assert (problem.line, problem.column) == (3, 12)
    assert "TOML syntax error" in problem.message
    assert "(at line" not in problem.message
    assert str(problem).startswith(f"{path}:3:12: TOML syntax error")


def test_unterminated_toml_at_the_end_of_the_file(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, '[site]\ncode = "SITE-1'))
    assert problem.line == 2
    assert problem.column is not None


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b'[site]\ncode = "Z\xfcrich"\n')
    (problem,) = problems_of(path)
    assert "UTF-8" in problem.message
    assert (problem.line, problem.column) == (2, 10)


def test_empty_file_reports_the_missing_sections(tmp_path: Path) -> None:
    found = locations(write(tmp_path, ""))
    assert set(found) == {"site", "rooms", "sessions"}


# --- protocol profiles ------------------------------------------------------------------------


def test_custom_profile_loads(tmp_path: Path) -> None:
    profile = load_protocol(write(tmp_path, PROFILE, "custom.toml"))
    (rule,) = profile.rules
    assert isinstance(rule, LimitRule)
    assert (rule.parameter, rule.direction, rule.priority) == (
        Parameter.HEART_RATE,
        LimitDirection.HIGH,
        AlarmPriority.MEDIUM,
    )


def test_errors_in_a_protocol_file_are_reported_against_that_file(tmp_path: Path) -> None:
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    profile = write(protocols, PROFILE.replace('name = "custom"', 'name = "mdma"'), "mdma.toml")
    profile.write_text(profile.read_text().replace('priority = "medium"', 'priority = "urgent"'))
    site = write(tmp_path, SITE.replace(f"'{PROTOCOLS}'", '"protocols"'))
    problems = problems_of(site)
    assert [(p.file, p.location) for p in problems] == [(profile, "rules[0].priority")]
    assert "urgent" in problems[0].message


def test_protocol_file_mistakes_all_at_once(tmp_path: Path) -> None:
    text = PROFILE.replace('name = "custom"', 'name = "other"').replace(
        "unacknowledged_high_to_backup_s = 120\n", ""
    ).replace("threshold = 120.0", "threshold = 1200.0").replace(
        "clear_band = 5.0", "clear_band = 5.0\nlimit = 3"
    ) + RULE.replace('kind = "limit"', 'kind = "trend"')
    problems = problems_of(write(tmp_path, text, "custom.toml"), protocol=True)
    found = {p.location: p.message for p in problems}
    assert set(found) == {
        "name",
        "escalation.unacknowledged_high_to_backup_s",
        "rules[0].threshold",
        "rules[0].limit",
        "rules[1].kind",
        "rules[1].id",
    }
    assert (
        "1200 is not a plausible heart_rate threshold (expected 20-250 bpm)"
        in (found["rules[0].threshold"])
    )
    assert "unknown kind 'trend'" in found["rules[1].kind"]
    assert "duplicate rule id 'hr-high'" in found["rules[1].id"]
    assert "custom" in found["name"]


@pytest.mark.parametrize(
    ("parameter", "threshold"),
    [("systolic_bp", 1600), ("temperature", 385), ("spo2", 9.5), ("heart_rate", 10)],
)
def test_implausible_thresholds(tmp_path: Path, parameter: str, threshold: float) -> None:
    text = PROFILE.replace('"heart_rate"', f'"{parameter}"').replace("120.0", str(threshold))
    problems = problems_of(write(tmp_path, text, "custom.toml"), protocol=True)
    assert [p.location for p in problems] == ["rules[0].threshold"]
    assert "not a plausible" in problems[0].message


def test_cuff_pressure_is_never_alarm_evidence(tmp_path: Path) -> None:
    text = PROFILE.replace('"heart_rate"', '"cuff_pressure"')
    problems = problems_of(write(tmp_path, text, "custom.toml"), protocol=True)
    assert problems[0].location == "rules[0].parameter"


def test_clear_band_cannot_leave_the_plausible_range(tmp_path: Path) -> None:
    text = PROFILE.replace('"heart_rate"', '"spo2"').replace('"high"', '"low"')
    text = text.replace("120.0", "95.0").replace("clear_band = 5.0", "clear_band = 10.0")
    problems = problems_of(write(tmp_path, text, "custom.toml"), protocol=True)
    assert [p.location for p in problems] == ["rules[0].clear_band"]


# --- overrides --------------------------------------------------------------------------------


def override(body: str) -> str:
    return SITE.replace(
        'code = "P-001"\n', f'code = "P-001"\n[sessions.participants.overrides.{body}\n'
    )


def test_override_of_an_unknown_rule(tmp_path: Path) -> None:
    found = locations(write(tmp_path, override('"hr-high-mediun"]\nthreshold = 125')))
    message = found["sessions[0].participants[0].overrides.hr-high-mediun"]
    assert "protocol 'mdma' has no rule 'hr-high-mediun'" in message
    assert "did you mean 'hr-high-medium'" in message


def test_override_of_an_unknown_or_fixed_field(tmp_path: Path) -> None:
    text = override('"hr-high-medium"]\nthresold = 125\nparameter = "spo2"')
    found = locations(write(tmp_path, text))
    base = "sessions[0].participants[0].overrides.hr-high-medium"
    assert "did you mean 'threshold'" in found[f"{base}.thresold"]
    assert "cannot be overridden" in found[f"{base}.parameter"]


def test_override_value_of_the_wrong_shape_is_reported_once(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, override('"hr-high-medium"]\nthreshold = [125]')))
    assert [p.location for p in problems] == [
        "sessions[0].participants[0].overrides.hr-high-medium.threshold"
    ]


def test_override_is_validated_like_the_rule(tmp_path: Path) -> None:
    text = override('"hr-high-medium"]\nthreshold = 1250\npriority = "urgent"')
    found = locations(write(tmp_path, text))
    base = "sessions[0].participants[0].overrides.hr-high-medium"
    assert "not a plausible heart_rate threshold" in found[f"{base}.threshold"]
    assert "urgent" in found[f"{base}.priority"]


# --- models built in code ---------------------------------------------------------------------


def test_direct_construction_checks_references_too() -> None:
    config = load_config(CONFIG / "demo.toml")
    data = config.model_dump(mode="python", exclude={"protocols"})
    with pytest.raises(ValidationError, match="no protocol profile 'mdma'"):
        SiteConfig.model_validate(data)
    rebuilt = SiteConfig.model_validate({**data, "protocols": config.protocols})
    assert rebuilt == config


def test_limit_rule_breach_and_hysteresis() -> None:
    rule = load_protocol(PROTOCOLS / "mdma.toml").rule("sbp-high-low")
    assert not rule.is_breached(160)
    assert rule.is_breached(161)
    assert not rule.is_cleared(156)
    assert rule.is_cleared(155)
    spo2 = load_protocol(PROTOCOLS / "mdma.toml").rule("spo2-low-high-immediate")
    assert spo2.is_breached(88)
    assert not spo2.is_breached(89)
    assert spo2.is_cleared(89)


def test_models_are_frozen() -> None:
    config = load_config(CONFIG / "demo.toml")
    with pytest.raises(ValidationError):
        config.site.code = "OTHER"  # type: ignore[misc]


def test_devices_found_only_by_name_need_distinct_patterns(tmp_path: Path) -> None:
    text = SITE + SECOND_PARTICIPANT.replace('"HR-2"', '"BP-*"').replace(
        "heart_rate", "thermometer"
    )
    found = locations(write(tmp_path, text))
    assert (
        "duplicate name_pattern 'BP-*'"
        in found["sessions[0].participants[1].devices[0].name_pattern"]
    )

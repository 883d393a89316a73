"""Configuration: the shipped files load, and every kind of mistake is reported where it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from monitor.config import (
    Artefacts,
    Baseline,
    BaselineRule,
    CombinedRule,
    ConfigError,
    ConfigProblem,
    InfluxConfig,
    LimitDirection,
    LimitRule,
    MqttConfig,
    News2Rule,
    Secrets,
    SiteConfig,
    StalenessRule,
    TrendRule,
    load_config,
    load_protocol,
    summarize,
)
from monitor.models import AlarmPriority, DeviceKind, Parameter, StaffRole
from monitor.storage.settings import InfluxSettings
from tests.test_mqtt_link import certificates

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
    overridden = rules["hr-high-medium"]
    assert isinstance(overridden, LimitRule)
    assert overridden.threshold == 125
    default = config.protocol_for(session, participant).rule("hr-high-medium")
    assert isinstance(default, LimitRule)
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
    limits = [rule for rule in profile.rules if isinstance(rule, LimitRule)]
    tiers = {(r.parameter, r.direction, r.priority) for r in limits}
    for parameter in (Parameter.SYSTOLIC_BP, Parameter.DIASTOLIC_BP, Parameter.HEART_RATE):
        for priority in AlarmPriority:
            assert (parameter, LimitDirection.HIGH, priority) in tiers
    for priority in AlarmPriority:
        assert (Parameter.TEMPERATURE, LimitDirection.HIGH, priority) in tiers
        assert (Parameter.SPO2, LimitDirection.LOW, priority) in tiers
    bradycardia = profile.rule("hr-low-high")
    assert isinstance(bradycardia, LimitRule)
    assert (bradycardia.threshold, bradycardia.priority) == (40, AlarmPriority.HIGH)
    sbp_low = profile.rule("sbp-high-low")
    assert isinstance(sbp_low, LimitRule)
    assert (sbp_low.threshold, sbp_low.inclusive, sbp_low.confirm) == (160, False, True)
    assert sbp_low.confirm_count == 2
    assert profile.rule("spo2-low-high-immediate").delay_s == 0
    assert profile.rule("hr-high-low").delay_s == 120


@pytest.mark.parametrize("name", ["mdma", "psilocybin"])
def test_every_threshold_and_delay_cites_its_source(name: str) -> None:
    text = (PROTOCOLS / f"{name}.toml").read_text(encoding="utf-8")
    sourced = r"(threshold|delay_s|window_s|rate_per_min|delta|while_at_least|stale_after_s) ="
    numbered = [line for line in text.splitlines() if re.match(sourced, line)]
    assert numbered
    for line in numbered:
        comment = line.partition("#")[2]
        cites = re.search(r"#[a-z][a-z0-9-]+|\bprinciple \d\b", comment)  # docs/clinical-basis.md
        assert cites, f"no source section cited: {line}"


def test_summary_names_codes_kinds_and_protocols() -> None:
    summary = summarize(load_config(CONFIG / "example.toml"))
    for expected in ("SITE-1", "room-a", "S-2026-11-26-B", "P-014", "P-021", "pulse_oximeter"):
        assert expected in summary
    assert "mdma: 29 rules (19 limit, 2 trend, 1 baseline, 1 combined, 1 news2, 5 staleness)" in (
        summary
    )
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


STAFF = """
[[staff]]
id = "RN-07"
roles = ["room-staff"]
accounts = ["dashboard"]

[[staff]]
id = "MD-01"
roles = ["medical-monitor", "room-staff"]

[[relays]]
account = "console"
"""


def test_staff_name_their_accounts_and_roles(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SITE + STAFF))
    assert [(m.id, m.roles, m.accounts) for m in config.staff] == [
        ("RN-07", (StaffRole.ROOM_STAFF,), ("dashboard",)),
        ("MD-01", (StaffRole.MEDICAL_MONITOR, StaffRole.ROOM_STAFF), ()),
    ]
    assert [relay.account for relay in config.relays] == ["console"]
    assert "MD-01: medical-monitor, room-staff (accounts: relays only)" in summarize(config)
    assert "every command is refused" in summarize(load_config(write(tmp_path, SITE)))


def test_staff_mistakes_are_named(tmp_path: Path) -> None:
    text = SITE + STAFF.replace('"MD-01"', '"RN-07"').replace(
        'roles = ["room-staff"]', 'roles = ["nurse"]\naccounts = ["console", "dash board"]'
    )
    text = text.replace('accounts = ["dashboard"]\n', "") + '[[relays]]\naccount = "console"\n'
    found = locations(write(tmp_path, text))
    assert "duplicate staff id 'RN-07'" in found["staff[1].id"]
    assert "'room-staff'" in found["staff[0].roles[0]"]
    assert "must be 1-64 letters" in found["staff[0].accounts[1]"]
    assert "duplicate relay 'console'" in found["relays[1].account"]
    demo = load_config(CONFIG / "demo.toml")
    assert {account for member in demo.staff for account in member.accounts} == {"local"}
    relayed = SITE + STAFF.replace('accounts = ["dashboard"]', 'accounts = ["console"]')
    found = locations(write(tmp_path, relayed))
    assert "'console' is a relay account" in found["staff[0].accounts[0]"]


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


def test_the_config_builds_the_settings_mqtt_and_storage_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MONITOR_MQTT_PASSWORD", "mqtt-hunter2")
    mqtt = MqttConfig(url="mqtts://detector@broker.example:8884", client_id="det-1")
    broker = mqtt.settings(Secrets())
    assert (broker.host, broker.port, broker.username, broker.client_id, broker.tls) == (
        "broker.example",
        8884,
        "detector",
        "det-1",
        True,
    )
    assert broker.password is not None
    assert broker.password.get_secret_value() == "mqtt-hunter2"
    assert "hunter2" not in repr(broker)
    influx = InfluxConfig(url="https://db:8086", api="v2", bucket="b", org="clinic")
    assert influx.settings() == InfluxSettings(
        url="https://db:8086", api="v2", bucket="b", org="clinic", ca_file=None
    )


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
    found = locations(write(tmp_path, text.replace('ca_file = "missing.pem"\n', "")))
    assert "mqtts://" in found["mqtt.tls"]


def test_tls_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    made = certificates(tmp_path / "certs")
    ca = write(tmp_path, made["ca"].read_text(), "ca.pem")
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
    ) + RULE.replace('kind = "limit"', 'kind = "trendline"')
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
    assert "unknown kind 'trendline'" in found["rules[1].kind"]
    assert "'news2'" in found["rules[1].kind"]
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
    assert isinstance(rule, LimitRule)
    assert not rule.is_breached(160)
    assert rule.is_breached(161)
    assert not rule.is_cleared(156)
    assert rule.is_cleared(155)
    spo2 = load_protocol(PROTOCOLS / "mdma.toml").rule("spo2-low-high-immediate")
    assert isinstance(spo2, LimitRule)
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


# --- the other rule kinds ---------------------------------------------------------------------

TREND = """\
[[rules]]
id = "temp-rise"
kind = "trend"
alarm = "temp"
parameter = "temperature"
direction = "high"
window_s = 1800
rate_per_min = 0.0166
resolution_s = 30
min_samples = 4
while_at_least = 38.0
priority = "high"
"""

BASELINE = """\
[[rules]]
id = "temp-baseline"
kind = "baseline"
alarm = "temp"
parameter = "temperature"
direction = "high"
delta = 1.0
clear_band = 0.2
priority = "medium"
delay_s = 300
"""

STALENESS = """\
[[rules]]
id = "hr-stale"
kind = "staleness"
parameter = "heart_rate"
stale_after_s = 60
priority = "medium"
"""

COMBINED = """\
[[rules]]
id = "hot-and-fast"
kind = "combined"
priority = "high"
delay_s = 120
max_age_s = 90

[[rules.all_of]]
parameter = "temperature"
direction = "high"
threshold = 38.5
inclusive = true

[[rules.all_of]]
parameter = "heart_rate"
direction = "high"
threshold = 120.0
inclusive = true
"""

NEWS2 = """\
[[rules]]
id = "news2"
kind = "news2"
alert_low = true
"""

ALL_KINDS = PROFILE + "\n" + "\n".join((TREND, BASELINE, STALENESS, COMBINED, NEWS2))


def test_every_rule_kind_parses(tmp_path: Path) -> None:
    profile = load_protocol(write(tmp_path, ALL_KINDS, "custom.toml"))
    assert [rule.kind for rule in profile.rules] == [
        "limit",
        "trend",
        "baseline",
        "staleness",
        "combined",
        "news2",
    ]
    trend = profile.rule("temp-rise")
    assert isinstance(trend, TrendRule)
    assert (trend.parameter, trend.direction, trend.rate_per_min) == (
        Parameter.TEMPERATURE,
        LimitDirection.HIGH,
        0.0166,
    )
    assert (trend.window_s, trend.resolution_s, trend.min_samples) == (1800, 30, 4)
    assert (trend.while_at_least, trend.while_at_most) == (38.0, None)
    assert trend.alarm_group == "temp"
    baseline = profile.rule("temp-baseline")
    assert isinstance(baseline, BaselineRule)
    assert (baseline.delta, baseline.clear_band, baseline.delay_s) == (1.0, 0.2, 300)
    stale = profile.rule("hr-stale")
    assert isinstance(stale, StalenessRule)
    assert (stale.stale_after_s, stale.alarm_group, stale.confirm_count) == (60, "hr-stale", 1)
    combined = profile.rule("hot-and-fast")
    assert isinstance(combined, CombinedRule)
    assert [(c.parameter, c.threshold, c.inclusive) for c in combined.all_of] == [
        (Parameter.TEMPERATURE, 38.5, True),
        (Parameter.HEART_RATE, 120.0, True),
    ]
    assert (combined.max_age_s, combined.delay_s) == (90, 120)
    news2 = profile.rule("news2")
    assert isinstance(news2, News2Rule)
    assert (news2.priority, news2.max_age_s, news2.alert_low) == (AlarmPriority.HIGH, 900, True)


def test_trend_defaults(tmp_path: Path) -> None:
    text = TREND.replace("resolution_s = 30\nmin_samples = 4\nwhile_at_least = 38.0\n", "")
    profile = load_protocol(write(tmp_path, PROFILE + "\n" + text, "custom.toml"))
    trend = profile.rule("temp-rise")
    assert isinstance(trend, TrendRule)
    assert (trend.resolution_s, trend.min_samples, trend.while_at_least, trend.delay_s) == (
        30,
        3,
        None,
        0,
    )


@pytest.mark.parametrize(
    ("confirm", "count"), [("false", 1), ("true", 2), ("1", 1), ("2", 2), ("3", 3)]
)
def test_confirm_is_a_flag_or_a_count(tmp_path: Path, confirm: str, count: int) -> None:
    text = PROFILE.replace("clear_band = 5.0", f"clear_band = 5.0\nconfirm = {confirm}")
    (rule,) = load_protocol(write(tmp_path, text, "custom.toml")).rules
    assert rule.confirm_count == count


def test_protocol_profiles_use_every_rule_kind() -> None:
    mdma = load_protocol(PROTOCOLS / "mdma.toml")
    assert {rule.kind for rule in mdma.rules} == {
        "limit",
        "trend",
        "baseline",
        "staleness",
        "combined",
        "news2",
    }
    groups: dict[str, set[str]] = {}
    for rule in mdma.rules:
        groups.setdefault(rule.alarm_group, set()).add(rule.id)
    assert groups["sbp-high"] == {
        "sbp-high-unconfirmed",
        "sbp-high-low",
        "sbp-high-medium",
        "sbp-high-high-persistent",
        "sbp-high-high",
    }
    assert groups["temp-high"] >= {"temp-baseline-medium", "temp-rise-high", "temp-high-high"}
    assert groups["bp-stale"] == {"sbp-stale", "dbp-stale"}
    rise = mdma.rule("temp-rise-high")
    assert isinstance(rise, TrendRule)
    assert (rise.window_s, rise.while_at_least, rise.priority) == (1800, 38.0, AlarmPriority.HIGH)
    assert rise.rate_per_min * 30 == pytest.approx(0.5, abs=0.005)
    sbp_rise = mdma.rule("sbp-rise-low")
    assert isinstance(sbp_rise, TrendRule)
    assert sbp_rise.rate_per_min * sbp_rise.window_s / 60 == 30
    stale = {
        rule.parameter: rule.stale_after_s for rule in mdma.rules if isinstance(rule, StalenessRule)
    }
    assert stale == {
        Parameter.HEART_RATE: 60,
        Parameter.SPO2: 60,
        Parameter.TEMPERATURE: 300,
        Parameter.SYSTOLIC_BP: 1800,
        Parameter.DIASTOLIC_BP: 1800,
    }
    psilocybin = load_protocol(PROTOCOLS / "psilocybin.toml")
    assert {rule.kind for rule in psilocybin.rules} == {"limit", "staleness", "news2"}
    shared = {rule.id for rule in psilocybin.rules}
    assert shared <= {rule.id for rule in mdma.rules}
    for rule in psilocybin.rules:
        assert rule.alarm_group == mdma.rule(rule.id).alarm_group


@pytest.mark.parametrize(
    ("rule", "old", "new", "location", "message"),
    [
        (
            TREND,
            "rate_per_min = 0.0166",
            "rate_per_min = 1.66",
            "rate_per_min",
            "more than the whole plausible",
        ),
        (TREND, "rate_per_min = 0.0166", "rate_per_min = -1", "rate_per_min", "greater than 0"),
        (TREND, "window_s = 1800", "window_s = 0", "window_s", "greater than 0"),
        (TREND, "window_s = 1800", "window_s = 1800.5", "window_s", "integer"),
        (TREND, "min_samples = 4", "min_samples = 70", "min_samples", "never reached"),
        (TREND, "while_at_least = 38.0", "while_at_least = 380", "while_at_least", "plausible"),
        (
            TREND,
            "while_at_least = 38.0",
            "while_at_least = 38.0\nwhile_at_most = 37.0",
            "while_at_most",
            "never fire",
        ),
        (TREND, 'direction = "high"', 'direction = "rising"', "direction", "'high' or 'low'"),
        (TREND, 'alarm = "temp"', 'alarm = "temp high"', "alarm", "letters, digits"),
        (TREND, 'parameter = "temperature"', 'parameter = "battery"', "parameter", "detection"),
        (TREND, "resolution_s = 30", "resolution = 30", "resolution", "resolution_s"),
        (BASELINE, "delta = 1.0", "delta = 20.0", "delta", "more than the whole plausible"),
        (BASELINE, "delta = 1.0", "delta = 0", "delta", "greater than 0"),
        (BASELINE, "clear_band = 0.2", "clear_band = 1.5", "clear_band", "at most delta"),
        (BASELINE, "delay_s = 300", "delay_s = 7200", "delay_s", "less than or equal"),
        (BASELINE, "delay_s = 300", "confirm = 0", "confirm", "number of consecutive readings"),
        (STALENESS, "stale_after_s = 60", "stale_after_s = 0", "stale_after_s", "greater"),
        (STALENESS, "stale_after_s = 60", "stale_after_s = 60\ndelay_s = 30", "delay_s", "delay"),
        (STALENESS, "stale_after_s = 60", "stale_after_s = 60\nconfirm = true", "confirm", "ticks"),
        (STALENESS, "stale_after_s = 60", "stale_after = 60", "stale_after", "stale_after_s"),
        (COMBINED, "threshold = 120.0", "threshold = 1200.0", "all_of[1].threshold", "plausible"),
        (
            COMBINED,
            'parameter = "heart_rate"',
            'parametr = "heart_rate"',
            "all_of[1].parametr",
            "did you mean 'parameter'",
        ),
        (
            COMBINED,
            "inclusive = true\n\n[[rules.all_of]]",
            "\n[[rules.all_of]]",
            "all_of[0].inclusive",
            "required",
        ),
        (COMBINED, "max_age_s = 90", "max_age_s = 90\nconfirm = 2", "confirm", "ticks"),
        (NEWS2, "alert_low = true", 'alert_low = true\npriority = "medium"', "priority", "band"),
        (NEWS2, "alert_low = true", "alert_low = true\ndelay_s = 60", "delay_s", "no delay"),
        (NEWS2, "alert_low = true", "alert_lo = true", "alert_lo", "did you mean 'alert_low'"),
        (NEWS2, "alert_low = true", "max_age_s = 0", "max_age_s", "greater than 0"),
    ],
)
def test_bad_fields_of_the_other_kinds_are_reported_where_they_are(
    tmp_path: Path, rule: str, old: str, new: str, location: str, message: str
) -> None:
    assert old in rule
    text = PROFILE + "\n" + rule.replace(old, new, 1)
    problems = problems_of(write(tmp_path, text, "custom.toml"), protocol=True)
    found = {p.location: p.message for p in problems}
    assert message in found.pop(f"rules[1].{location}")
    # a misspelt required key is also missing under its right name
    assert set(found.values()) <= {"required key is missing"}


def test_a_combined_rule_needs_two_conditions(tmp_path: Path) -> None:
    one = COMBINED[: COMBINED.rindex("[[rules.all_of]]")]
    problems = problems_of(write(tmp_path, PROFILE + "\n" + one, "custom.toml"), protocol=True)
    assert [p.location for p in problems] == ["rules[1].all_of"]
    assert "needs at least 2 entries (got 1)" in problems[0].message


def test_only_detection_streams_can_be_watched(tmp_path: Path) -> None:
    text = PROFILE.replace('"heart_rate"', '"pulse_rate"')
    problems = problems_of(write(tmp_path, text, "custom.toml"), protocol=True)
    assert [p.location for p in problems] == ["rules[0].parameter"]
    assert "not a detection stream" in problems[0].message
    assert "heart_rate" in problems[0].message


def test_an_alarm_does_not_mix_technical_and_physiological_rules(tmp_path: Path) -> None:
    text = (
        PROFILE
        + "\n"
        + STALENESS.replace('kind = "staleness"', 'kind = "staleness"\nalarm = "hr-high"')
    )
    problems = problems_of(write(tmp_path, text, "custom.toml"), protocol=True)
    assert [p.location for p in problems] == ["rules[1].alarm"]
    assert "technical" in problems[0].message
    assert "rules[0].id" in problems[0].message


def test_artefact_and_baseline_sections(tmp_path: Path) -> None:
    profile = load_protocol(write(tmp_path, PROFILE, "custom.toml"))
    assert profile.artefacts == Artefacts()
    assert profile.baseline == Baseline()
    text = PROFILE.replace(
        "[[rules]]",
        """[artefacts]
spike_max_gap_s = 20
[artefacts.plausible]
heart_rate = [25, 240]
[artefacts.spike_delta]
heart_rate = 40
spo2 = false
systolic_bp = 50

[baseline]
window_s = 1200
resolution_s = 20
min_samples = 5

[[rules]]""",
    )
    profile = load_protocol(write(tmp_path, text, "custom.toml"))
    assert profile.artefacts.spike_max_gap_s == 20
    plausible = profile.artefacts.plausible.by_parameter()
    assert plausible[Parameter.HEART_RATE] == (25.0, 240.0)
    assert plausible[Parameter.SPO2] == (50.0, 100.0)
    deltas = profile.artefacts.spike_delta.by_parameter()
    assert deltas[Parameter.HEART_RATE] == 40.0
    assert deltas[Parameter.SPO2] is None
    assert deltas[Parameter.SYSTOLIC_BP] == 50.0
    assert deltas[Parameter.DIASTOLIC_BP] is None
    assert deltas[Parameter.TEMPERATURE] == 1.0
    assert (profile.baseline.window_s, profile.baseline.resolution_s) == (1200, 20)
    assert profile.baseline.min_samples == 5


@pytest.mark.parametrize(
    ("section", "location", "message"),
    [
        (
            "[artefacts.plausible]\nheart_rate = [250, 20]",
            "artefacts.plausible.heart_rate",
            "low < high",
        ),
        (
            "[artefacts.plausible]\nheart_rate = [20]",
            "artefacts.plausible.heart_rate",
            "two numbers",
        ),
        (
            "[artefacts.plausible]\npulse_rate = [20, 250]",
            "artefacts.plausible.pulse_rate",
            "unknown key",
        ),
        ("[artefacts.spike_delta]\nspo2 = -6", "artefacts.spike_delta.spo2", "false for no spike"),
        (
            "[artefacts.spike_delta]\nspo2 = true",
            "artefacts.spike_delta.spo2",
            "false for no spike",
        ),
        ("[artefacts]\nspike_max_gap = 30", "artefacts.spike_max_gap", "spike_max_gap_s"),
        ("[baseline]\nwindow_s = 0", "baseline.window_s", "greater than 0"),
        ("[baseline]\nwindow_s = 60\nmin_samples = 10", "baseline.min_samples", "never reached"),
        (
            "[baseline]\nwindow_s = 7200\nmin_samples = 300",
            "baseline.min_samples",
            "at most 256",
        ),
    ],
)
def test_bad_artefact_and_baseline_settings(
    tmp_path: Path, section: str, location: str, message: str
) -> None:
    text = PROFILE.replace("[[rules]]", f"{section}\n\n[[rules]]")
    problems = problems_of(write(tmp_path, text, "custom.toml"), protocol=True)
    assert [p.location for p in problems] == [location]
    assert message in problems[0].message


def mixed_site(tmp_path: Path, psilocybin_extra: str = "") -> Path:
    """A session of P-001 (mdma) and P-002 (psilocybin), with copies of the shipped profiles."""
    protocols = tmp_path / "protocols"
    protocols.mkdir(exist_ok=True)
    for name in ("mdma", "psilocybin"):
        text = (PROTOCOLS / f"{name}.toml").read_text(encoding="utf-8")
        if name == "psilocybin" and psilocybin_extra:
            text = text.replace("[escalation]", f"{psilocybin_extra}\n\n[escalation]", 1)
        write(protocols, text, f"{name}.toml")
    second = SECOND_PARTICIPANT.replace('code = "P-002"', 'code = "P-002"\nprotocol = "psilocybin"')
    return write(tmp_path, SITE.replace(f"'{PROTOCOLS}'", '"protocols"') + second)


def test_one_session_has_one_artefact_and_baseline_setting(tmp_path: Path) -> None:
    config = load_config(mixed_site(tmp_path))
    assert set(config.protocols) == {"mdma", "psilocybin"}
    site = mixed_site(tmp_path, "[artefacts]\nspike_max_gap_s = 10\n[baseline]\nwindow_s = 600")
    found = locations(site)
    assert list(found) == ["sessions[0].participants[1].protocol"]
    message = found["sessions[0].participants[1].protocol"]
    assert "'psilocybin' has other [artefacts] and [baseline] settings than 'mdma'" in message
    equal = mixed_site(tmp_path, "[baseline]\nwindow_s = 1800\nresolution_s = 10")
    assert load_config(equal).protocols["psilocybin"].baseline == Baseline()


def test_one_rule_id_is_one_rule_in_a_session(tmp_path: Path) -> None:
    site = mixed_site(tmp_path)
    psilocybin = tmp_path / "protocols" / "psilocybin.toml"
    text = psilocybin.read_text(encoding="utf-8")
    psilocybin.write_text(text.replace('alarm = "hr-high"', 'alarm = "pulse"', 1))
    found = locations(site)
    assert list(found) == ["sessions[0].participants[1].protocol"]
    message = found["sessions[0].participants[1].protocol"]
    assert "rule 'hr-high-low' of protocol 'psilocybin' differs from the one of 'mdma'" in message


def test_overrides_work_on_every_kind(tmp_path: Path) -> None:
    text = override(
        '"temp-rise-high"]\nrate_per_min = 0.02\nwhile_at_least = 38.5\n'
        '[sessions.participants.overrides."temp-baseline-medium"]\ndelta = 1.5\n'
        '[sessions.participants.overrides."hr-stale"]\nstale_after_s = 120\n'
        '[sessions.participants.overrides."hyperthermia-tachycardia"]\nmax_age_s = 60\n'
        "[sessions.participants.overrides.news2]\nalert_low = false\n"
        '[sessions.participants.overrides."sbp-high-low"]\nconfirm = 3'
    )
    config = load_config(write(tmp_path, text))
    session = config.sessions[0]
    rules = {rule.id: rule for rule in config.rules_for(session, session.participants[0])}
    trend = rules["temp-rise-high"]
    assert isinstance(trend, TrendRule)
    assert (trend.rate_per_min, trend.while_at_least, trend.window_s) == (0.02, 38.5, 1800)
    baseline = rules["temp-baseline-medium"]
    assert isinstance(baseline, BaselineRule)
    assert baseline.delta == 1.5
    stale = rules["hr-stale"]
    assert isinstance(stale, StalenessRule)
    assert stale.stale_after_s == 120
    combined = rules["hyperthermia-tachycardia"]
    assert isinstance(combined, CombinedRule)
    assert (combined.max_age_s, len(combined.all_of)) == (60, 2)
    news2 = rules["news2"]
    assert isinstance(news2, News2Rule)
    assert not news2.alert_low
    assert rules["sbp-high-low"].confirm_count == 3


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ('"temp-rise-high"]\nalarm = "mine"', "alarm", "cannot be overridden"),
        ('"hyperthermia-tachycardia"]\nall_of = "x"', "all_of", "cannot be overridden"),
        ('"temp-rise-high"]\nrate_per_min = 5.0', "rate_per_min", "more than the whole plausible"),
        ('"temp-rise-high"]\nthreshold = 38.0', "threshold", "a trend rule has no field"),
        ('"temp-baseline-medium"]\nclear_band = 2.0', "clear_band", "at most delta"),
        ('"hr-stale"]\ndelay_s = 30', "delay_s", "no delay"),
        ('"hr-stale"]\nconfirm = true', "confirm", "ticks"),
        ('news2]\npriority = "low"', "priority", "band"),
        ('"hyperthermia-tachycardia"]\nmax_age = 60', "max_age", "did you mean 'max_age_s'"),
    ],
)
def test_overrides_of_the_other_kinds_are_validated(
    tmp_path: Path, body: str, field: str, message: str
) -> None:
    found = locations(write(tmp_path, override(body)))
    rule_id = body.split("]", maxsplit=1)[0].strip('"')
    location = f"sessions[0].participants[0].overrides.{rule_id}.{field}"
    assert list(found) == [location]
    assert message in found[location]

"""The command line as a user meets it: a real process, its exit status and what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor import __version__
from tests.test_mqtt_link import certificates

ROOT = Path(__file__).resolve().parent.parent


def run_monitor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def site_file(
    folder: Path,
    sections: str = "",
    *,
    participant: str = "",
    protocols: Path = ROOT / "config" / "protocols",
) -> Path:
    """A small valid site file with ``sections`` added at the top and ``participant`` lines in
    its one participant's table."""
    path = folder / "site.toml"
    path.write_text(
        f"{sections}\n"
        f'[site]\ncode = "SITE-1"\ntimezone = "Europe/Zurich"\nprotocols_dir = "{protocols}"\n'
        '[[rooms]]\nid = "room-a"\n'
        '[[sessions]]\nid = "S-1"\nroom = "room-a"\nprotocol = "mdma"\n'
        f'[[sessions.participants]]\ncode = "P-001"\n{participant}\n'
        '[[sessions.participants.devices]]\nid = "hr-1"\nkind = "heart_rate"\n'
        'name_pattern = "HR-1"\n',
        encoding="utf-8",
    )
    return path


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_lists_the_commands_and_the_disclaimer() -> None:
    result = run_monitor("--help")
    assert result.returncode == 0
    assert "check-config" in result.stdout
    assert "not a certified medical device" in result.stdout


def test_version() -> None:
    result = run_monitor("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"monitor {__version__}"


def test_missing_command_is_a_usage_error() -> None:
    result = run_monitor()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


@pytest.mark.parametrize("config", ["config/example.toml", "config/demo.toml"])
def test_check_config_accepts_the_shipped_configs(config: str) -> None:
    result = run_monitor("check-config", config)
    assert result.returncode == 0, result.stderr
    assert "P-0" in result.stdout


def test_check_config_names_every_mistake() -> None:
    result = run_monitor("check-config", "tests/data/config/three-mistakes.toml")
    assert result.returncode == 2
    assert "3 problem(s)" in result.stderr
    for path in (
        "rooms[0].max_conections",
        "sessions[0].participants[0].devices[0].kind",
        "sessions[0].room",
    ):
        assert f"three-mistakes.toml: {path}:" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_config_on_a_missing_file() -> None:
    result = run_monitor("check-config", "no/such/site.toml")
    assert result.returncode == 2
    assert "no/such/site.toml" in result.stderr
    assert "Traceback" not in result.stderr


# --- a password in a URL is never printed (issue 9 item 7) ----------------------------------

SECRET = "hunter2-s3cret"
URLS_WITH_A_PASSWORD = [
    pytest.param(f"mqtt://detector:{SECRET}@broker.example", id="refused-password"),
    pytest.param(f"mqtt://detector:{SECRET}@broker.example:99999", id="bad-port"),
    pytest.param(f"mqtt://detector:{SECRET}@[broker.example", id="bad-host"),
    pytest.param(f"http://detector:{SECRET}@broker.example", id="bad-scheme"),
]


@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD)
def test_check_config_never_prints_a_password_in_the_broker_url(tmp_path: Path, url: str) -> None:
    result = run_monitor("check-config", str(site_file(tmp_path, f'[mqtt]\nurl = "{url}"')))
    assert result.returncode == 2
    assert SECRET not in result.stderr + result.stdout
    assert "mqtt.url: " in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD)
def test_a_password_in_monitor_mqtt_url_is_never_printed(tmp_path: Path, url: str) -> None:
    result = run_monitor(
        *("detect", "--config", "config/demo.toml", "--duration", "1", "--no-live"),
        *("--store", str(tmp_path / "store.sqlite")),
        env={"MONITOR_MQTT_URL": url, "MONITOR_INFLUX_URL": ""},
    )
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("error: MONITOR_MQTT_URL: "), line
    assert SECRET not in result.stderr + result.stdout
    if "99999" in url:
        assert "'mqtt://detector:***@broker.example:99999'" in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MONITOR_MQTT_URL", "ftp://x"),
        ("MONITOR_INFLUX_URL", "ftp://y"),
        *(
            pytest.param("MONITOR_MQTT_URL", url.values[0], id=f"password-{url.id}")
            for url in URLS_WITH_A_PASSWORD
        ),
    ],
)
def test_check_config_checks_the_settings_the_environment_overrides(
    variable: str, value: str
) -> None:
    """It used to say "embedded broker" and exit 0; then ``run`` refused the same variable."""
    result = run_monitor("check-config", "config/demo.toml", env={variable: value})
    assert result.returncode == 2, result.stdout
    assert f"  {variable}: " in result.stderr, result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_check_config_summarises_the_site_as_the_environment_makes_it() -> None:
    result = run_monitor(
        "check-config",
        "config/demo.toml",
        env={"MONITOR_MQTT_URL": "mqtts://broker.example:8883", "MONITOR_INFLUX_URL": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "MQTT: broker.example:8883" in result.stdout


# --- numbers, nesting, long values, TLS files (issue 9 item 8) ------------------------------


def problems_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The problem lines ``check-config`` printed; it must have refused the file cleanly."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return [line.strip() for line in result.stderr.splitlines()[1:]]


@pytest.mark.parametrize(
    ("sections", "participant", "expected"),
    [
        ("[storage]\nhigh_water_points = true", "", "storage.high_water_points: must be a whole"),
        ("[storage]\nhigh_water_points = 1e3", "", "storage.high_water_points: Input should be"),
        (
            "",
            'overrides = {"hr-high-medium" = {delay_s = true}}',
            "overrides.hr-high-medium.delay_s: must be a whole number, not true",
        ),
        (
            "",
            'overrides = {"hr-high-medium" = {threshold = nan}}',
            "overrides.hr-high-medium.threshold: Input should be a finite number",
        ),
        (
            "",
            'overrides = {"hr-high-medium" = {threshold = false}}',
            "overrides.hr-high-medium.threshold: must be a number, not false",
        ),
    ],
    ids=["true-count", "float-count", "true-delay", "nan-threshold", "false-threshold"],
)
def test_config_numbers_are_strict_in_the_site_file(
    tmp_path: Path, sections: str, participant: str, expected: str
) -> None:
    """``true`` is no number (lax parsing read it as 1), ``nan`` and ``inf`` are no threshold."""
    result = run_monitor(
        "check-config", str(site_file(tmp_path, sections, participant=participant))
    )
    assert any(expected in line for line in problems_of(result)), result.stderr


@pytest.mark.parametrize(
    ("written", "wrong", "expected"),
    [
        ("delay_s = 900 ", "delay_s = true", "rules[3].delay_s: must be a whole number, not true"),
        ("threshold = 200.0 ", "threshold = inf", "rules[4].threshold: Input should be a finite"),
        (
            "unacknowledged_medium_to_high_s = ",
            "unacknowledged_medium_to_high_s = true #",
            "escalation.unacknowledged_medium_to_high_s: must be a whole number, not true",
        ),
    ],
    ids=["true-delay", "inf-threshold", "true-escalation"],
)
def test_config_numbers_are_strict_in_protocol_profiles(
    tmp_path: Path, written: str, wrong: str, expected: str
) -> None:
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    shipped = (ROOT / "config" / "protocols" / "mdma.toml").read_text(encoding="utf-8")
    assert written in shipped
    (protocols / "mdma.toml").write_text(shipped.replace(written, wrong, 1), encoding="utf-8")
    result = run_monitor("check-config", str(site_file(tmp_path, protocols=protocols)))
    assert [line for line in problems_of(result) if expected in line], result.stderr


@pytest.mark.parametrize(
    "nested",
    [
        pytest.param("a = " + "[" * 100_000 + "]" * 100_000, id="arrays"),
        pytest.param("a = " + "{a = " * 100_000 + "1" + "}" * 100_000, id="inline-tables"),
    ],
)
def test_deeply_nested_toml_is_one_clear_problem(tmp_path: Path, nested: str) -> None:
    result = run_monitor("check-config", str(site_file(tmp_path, nested)))
    assert problems_of(result) == [
        f"{tmp_path / 'site.toml'}: config nesting too deep "
        + "(arrays or inline tables inside each other)"
    ]


@pytest.mark.parametrize(
    "sections",
    [
        pytest.param('[storage]\nhigh_water_points = "' + "9" * 10_000_000 + '"', id="value"),
        pytest.param('"' + "k" * 10_000_000 + '" = 1', id="key"),
    ],
)
def test_a_huge_invalid_value_is_not_echoed_whole(tmp_path: Path, sections: str) -> None:
    result = run_monitor("check-config", str(site_file(tmp_path, sections)))
    problems = problems_of(result)
    assert len(problems) == 1, result.stderr[:2000]
    assert len(problems[0]) < 400, problems[0][:2000]
    assert "… (10000002 characters)" in problems[0]


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    [
        ("run", "--speed", "1e308", "must be at most 10,000"),
        ("detect", "--speed", "1e308", "must be at most 10,000"),
        ("run", "--speed", "nan", "must be a finite number"),
        ("detect", "--duration", "inf", "must be a finite number"),
        ("run", "--start", "nan", "must be a finite number"),
    ],
)
def test_out_of_range_options_are_refused_by_the_parser(
    command: str, option: str, value: str, message: str
) -> None:
    simulate = ("--simulate", "mdma-typical") if command == "run" else ()
    result = run_monitor(command, "--config", "config/demo.toml", *simulate, option, value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: argument {option}: {message}" in result.stderr


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return certificates(tmp_path_factory.mktemp("tls") / "certs")


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        pytest.param(
            {"ca_file": "ca-key"}, "ca_file {ca-key}: holds no CA certificate", id="ca-is-a-key"
        ),
        pytest.param(
            {"cert_file": "client-key"},
            "cert_file {client-key}: holds no certificate",
            id="cert-is-a-key",
        ),
        pytest.param(
            {"cert_file": "client"},
            "cert_file {client}: holds no unencrypted private key",
            id="no-key",
        ),
        pytest.param(
            {"cert_file": "client", "key_file": "broker-key"},
            "key_file {broker-key}: holds no unencrypted private key",
            id="another-key",
        ),
    ],
)
def test_check_config_loads_the_tls_files(
    tmp_path: Path, tls_files: dict[str, Path], tls: dict[str, str], expected: str
) -> None:
    """A file that exists but holds the wrong thing fails the check, not the first connection."""
    keys = "\n".join(f'{key} = "{tls_files[name]}"' for key, name in tls.items())
    sections = f'[mqtt]\nurl = "mqtts://127.0.0.1:8883"\n[mqtt.tls]\n{keys}'
    config = str(site_file(tmp_path, sections))
    expected = f"{config}: mqtt.tls: " + expected.format_map(tls_files)
    for command in (("check-config", config), ("detect", "--config", config, "--no-live")):
        problems = problems_of(run_monitor(*command))
        assert len(problems) == 1, problems
        assert problems[0].startswith(expected), problems


def test_check_config_loads_the_influx_ca_file(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    sections = (
        '[influx]\nurl = "https://127.0.0.1:8086"\napi = "v1"\n'
        f'[influx.tls]\nca_file = "{tls_files["ca-key"]}"'
    )
    config = str(site_file(tmp_path, sections))
    problems = problems_of(run_monitor("check-config", config))
    assert len(problems) == 1
    assert problems[0].startswith(f"{config}: influx.tls: ca_file {tls_files['ca-key']}: ")


def test_check_config_accepts_good_tls_files(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    keys = {"ca_file": "ca", "cert_file": "client", "key_file": "client-key"}
    lines = "\n".join(f'{key} = "{tls_files[name]}"' for key, name in keys.items())
    sections = f'[mqtt]\nurl = "mqtts://127.0.0.1:8883"\n[mqtt.tls]\n{lines}'
    result = run_monitor("check-config", str(site_file(tmp_path, sections)))
    assert result.returncode == 0, result.stderr

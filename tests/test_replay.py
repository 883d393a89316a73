"""``monitor replay``: recorded readings through detection, as a user runs it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from monitor.alerts.compile import compile_rules
from monitor.alerts.pipeline import DetectionPipeline
from monitor.config import load_config
from monitor.jsonl import JsonlWriter
from monitor.models import (
    AlarmEvent,
    AlarmPriority,
    DoseMarker,
    Parameter,
    QualityFlag,
    Reading,
    ReadingKind,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "demo.toml"
SESSION = "DEMO-MDMA-1"
START = dt.datetime(2025, 3, 1, 8, 0, 0, 250_000, tzinfo=dt.UTC)  # not on a whole second
SUMMARY_KEYS = {
    "files",
    "readings",
    "bad_lines",
    "readings_per_session",
    "session_origins",
    "marker_files",
    "dose_markers_per_session",
    "unused_markers",
    "markers_after_readings",
    "unordered_files",
    "late_samples",
    "out_of_order",
    "future",
    "alarm_events",
    "alarms",
    "alarm_events_by_rule",
    "alarm_events_by_priority",
    "first_reading",
    "last_reading",
    "span_s",
    "alarms_file",
}


def monitor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def reading(
    participant: str,
    kind: ReadingKind,
    values: dict[Parameter, float | None],
    seconds: float,
    *,
    session: str = SESSION,
    quality: frozenset[QualityFlag] = frozenset(),
) -> Reading:
    return Reading(
        session=session,
        participant=participant,
        device=f"{kind.value.replace('_', '-')}-{participant.lower()}",
        kind=kind,
        values=values,
        received_at=START + dt.timedelta(seconds=seconds),
        quality=quality,
    )


def heart_rate(seconds: float, participant: str) -> float:
    """P-001 climbs from 80 to 140 bpm, holds for 5 min and settles; P-002 stays at 80."""
    if participant != "P-001":
        return 80.0
    if seconds < 300:
        return 80.0
    if seconds < 420:
        return 80.0 + (seconds - 300) / 2  # +0.5 bpm/s: never a spike
    if seconds < 720:
        return 140.0
    if seconds < 840:
        return 140.0 - (seconds - 720) / 2
    return 80.0


def session_readings(
    duration_s: int = 1200, temperature: float | None = None, *, dose_at_s: int = 0
) -> list[Reading]:
    """A deterministic session of the demo's two participants, every stream fed.

    With ``temperature``, P-001's temperature steps up to it at ``dose_at_s + 300`` (a rise the
    baseline rule sees only when a marker fixed the baseline first).
    """
    readings: list[Reading] = []
    for second in range(duration_s):
        for code in ("P-001", "P-002"):
            readings.append(
                reading(
                    code,
                    ReadingKind.HEART_RATE,
                    {Parameter.HEART_RATE: heart_rate(second, code)},
                    second,
                )
            )
            readings.append(
                reading(
                    code,
                    ReadingKind.SPO2,
                    {Parameter.SPO2: 98.0, Parameter.PULSE_RATE: 80.0},
                    second + 0.5,
                )
            )
            if second % 30 == 0:
                degrees = 36.6
                if temperature is not None and code == "P-001" and second >= dose_at_s + 300:
                    degrees = temperature
                readings.append(
                    reading(
                        code,
                        ReadingKind.TEMPERATURE,
                        {Parameter.TEMPERATURE: degrees},
                        second + 0.25,
                    )
                )
            if second % 300 == 0:
                readings.append(
                    reading(
                        code,
                        ReadingKind.BLOOD_PRESSURE,
                        {
                            Parameter.SYSTOLIC_BP: 122.0,
                            Parameter.DIASTOLIC_BP: 78.0,
                            Parameter.MEAN_ARTERIAL_BP: 93.0,
                        },
                        second + 0.75,
                    )
                )
    return sorted(readings, key=lambda r: r.received_at)


def write_jsonl(path: Path, models: Iterable[Reading | DoseMarker]) -> None:
    """Through the writer ``monitor record`` uses, so the files are the real format."""

    async def main() -> None:
        async with JsonlWriter(path) as writer:
            for model in models:
                writer.put(model)

    asyncio.run(main())


def in_process(
    readings: Sequence[Reading], markers: Sequence[DoseMarker] = (), *, config: Path = DEMO
) -> list[AlarmEvent]:
    """What the pipeline makes of the readings, fed directly (the acceptance check's other side)."""
    ordered = sorted(readings, key=lambda r: r.received_at)
    origin = ordered[0].received_at.replace(microsecond=0)
    pipeline = DetectionPipeline(
        compile_rules(load_config(config), SESSION), session=SESSION, origin=origin
    )
    events: list[AlarmEvent] = []
    doses = sorted(markers, key=lambda m: m.given_at)
    for marker in doses:
        before = [r for r in ordered if r.received_at <= marker.given_at]
        ordered = ordered[len(before) :]
        events += pipeline.feed(before)
        events += pipeline.mark_dose(marker.participant, marker.given_at)
    events += pipeline.feed(ordered)
    events += pipeline.advance(max(readings, key=lambda r: r.received_at).received_at)
    return events


def alarms_in(folder: Path) -> list[AlarmEvent]:
    text = (folder / "alarms.jsonl").read_text(encoding="utf-8")
    return [AlarmEvent.model_validate_json(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def readings() -> list[Reading]:
    return session_readings()


@pytest.mark.timeout(120)
def test_replay_emits_the_alarm_events_of_the_pipeline(
    tmp_path: Path, readings: list[Reading]
) -> None:
    """Two files (one per participant, interleaved in time), one of them shuffled."""
    capture = tmp_path / "capture"
    p001 = [r for r in readings if r.participant == "P-001"]
    p002 = [r for r in readings if r.participant == "P-002"]
    random.Random(4).shuffle(p002)
    write_jsonl(capture / "p001.jsonl", p001)
    write_jsonl(capture / "p002.jsonl", p002)
    out = tmp_path / "out"
    result = monitor(
        "replay", str(capture / "p001.jsonl"), str(capture / "p002.jsonl"), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    expected = in_process(readings)
    assert alarms_in(out) == expected
    rules = {event.rule for event in expected}
    assert "hr-high-high" in rules  # the synthetic course must reach the high tier
    assert {e.priority for e in expected if e.rule == "hr-high-high"} == {AlarmPriority.HIGH}
    assert [e.sequence for e in expected] == list(range(1, len(expected) + 1))
    assert "no dose markers, so no baseline" in result.stdout
    assert f"readings: {len(readings)} from 2 file(s)" in result.stdout
    assert f"alarm events: {len(expected)}" in result.stdout
    unordered = [line for line in result.stdout.splitlines() if "sorted in memory" in line]
    assert len(unordered) == 1 and unordered[0].endswith("p002.jsonl")


@pytest.mark.timeout(120)
def test_dose_markers_beside_the_readings_fix_a_baseline(tmp_path: Path) -> None:
    dose_s = 900
    readings = session_readings(2400, temperature=37.7, dose_at_s=dose_s)
    marker = DoseMarker(
        session=SESSION, participant="P-001", given_at=START + dt.timedelta(seconds=dose_s)
    )
    without, with_markers = tmp_path / "without", tmp_path / "with"
    write_jsonl(without / "readings.jsonl", readings)
    write_jsonl(with_markers / "readings.jsonl", readings)
    write_jsonl(with_markers / "markers.jsonl", [marker])

    plain = monitor("replay", str(without / "readings.jsonl"), "--out", str(without), "--json")
    dosed = monitor("replay", str(with_markers / "readings.jsonl"), "--out", str(with_markers))
    assert plain.returncode == 0, plain.stderr
    assert dosed.returncode == 0, dosed.stderr
    assert "temp-baseline-medium" not in json.loads(plain.stdout)["alarm_events_by_rule"]
    events = alarms_in(with_markers)
    assert events == in_process(readings, [marker])
    assert any(e.rule == "temp-baseline-medium" for e in events)
    assert "1 dose marker(s)" in dosed.stdout


@pytest.mark.timeout(60)
def test_bad_lines_are_reported_with_their_line_numbers_and_skipped(tmp_path: Path) -> None:
    good = [
        reading("P-001", ReadingKind.HEART_RATE, {Parameter.HEART_RATE: 70.0 + i}, i)
        for i in range(3)
    ]
    stranger = reading("P-099", ReadingKind.HEART_RATE, {Parameter.HEART_RATE: 70.0}, 4)
    elsewhere = reading(
        "P-001", ReadingKind.HEART_RATE, {Parameter.HEART_RATE: 70.0}, 5, session="OTHER-1"
    )
    lines = [
        good[0].model_dump_json(),
        "this is not json",
        good[1].model_dump_json(),
        json.dumps({"session": SESSION, "participant": "P-001"}),
        stranger.model_dump_json(),
        "",
        elsewhere.model_dump_json(),
        good[2].model_dump_json(),
    ]
    path = tmp_path / "readings.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = monitor("replay", str(path), "--json")
    assert result.returncode == 0, result.stderr
    for number, reason in (
        (2, "not JSON"),
        (4, "not a reading"),
        (5, "participant P-099 is not in session DEMO-MDMA-1"),
        (6, "empty line"),
        (7, "session OTHER-1 is not in the config"),
    ):
        assert f"{path}:{number}: {reason}" in result.stderr
    assert f"{path}:1:" not in result.stderr
    assert "device: Field required" in result.stderr  # the schema problem is named
    summary = json.loads(result.stdout)
    assert summary["bad_lines"] == 5
    assert summary["readings"] == 3
    assert summary["readings_per_session"] == {SESSION: 3}


@pytest.mark.timeout(30)  # the whole replay ran past two minutes following the 2030 line
def test_a_line_dated_years_ahead_is_refused_and_costs_nothing(tmp_path: Path) -> None:
    """Replay has no wall clock: a session lasts at most 24 h from its origin, and input
    later than that is counted and refused, never followed (docs/detection.md section 1)."""
    course = session_readings(400, temperature=40.0)  # hot from 300 s: alarms that escalate
    stray = course[-1].model_copy(update={"received_at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)})
    path = tmp_path / "readings.jsonl"
    write_jsonl(path, [*course, stray])
    out = tmp_path / "out"
    result = monitor("replay", str(path), "--json", "--out", str(out), timeout=25)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["future"] == 1
    assert summary["readings"] == len(course) + 1
    expected = in_process(course)
    assert expected, "the course must raise alarms for the comparison to mean something"
    assert alarms_in(out) == expected  # as if the stray line were not there


@pytest.mark.timeout(60)
def test_json_summary_has_every_key(tmp_path: Path, readings: list[Reading]) -> None:
    path = tmp_path / "readings.jsonl"
    write_jsonl(path, readings[:600])
    result = monitor("replay", str(path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # one JSON object and nothing else on stdout
    assert set(summary) == SUMMARY_KEYS
    assert summary["readings"] == 600
    assert summary["files"] == [str(path)]
    assert summary["alarms_file"] is None
    assert summary["session_origins"] == {SESSION: "2025-03-01T08:00:00+00:00"}
    assert summary["first_reading"] == START.isoformat()
    assert set(summary["alarm_events_by_priority"]) == {"high", "medium", "low"}
    assert sum(summary["alarm_events_by_rule"].values()) == summary["alarm_events"]
    assert summary["span_s"] == pytest.approx((readings[599].received_at - START).total_seconds())


@pytest.mark.timeout(60)
def test_a_broken_config_is_reported_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "readings.jsonl"
    write_jsonl(path, session_readings(10))
    result = monitor("replay", str(path), "--config", "tests/data/config/three-mistakes.toml")
    assert result.returncode == 2
    assert "3 problem(s)" in result.stderr
    assert result.stdout == ""


@pytest.mark.timeout(60)
def test_a_missing_file_exits_2_and_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "readings.jsonl"
    result = monitor("replay", str(missing), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"{missing}: no such file" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(60)
def test_a_file_without_any_valid_reading_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "readings.jsonl"
    path.write_text("garbage\n", encoding="utf-8")
    result = monitor("replay", str(path))
    assert result.returncode == 2
    assert f"{path}:1: not JSON" in result.stderr
    assert "nothing to replay" in result.stderr


@pytest.mark.ble
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_replay_of_a_real_recording_matches_the_pipeline(tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    recorded = monitor(
        "record",
        "--config",
        "config/demo.toml",
        "--simulate",
        "mdma-typical",
        "--speed",
        "60",
        "--duration",
        "20",
        "--out",
        str(capture),
        timeout=150,
    )
    assert recorded.returncode == 0, recorded.stderr
    lines = (capture / "readings.jsonl").read_text(encoding="utf-8").splitlines()
    readings = [Reading.model_validate_json(line) for line in lines]
    result = monitor("replay", str(capture / "readings.jsonl"), "--out", str(capture), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["readings"] == len(readings)
    assert summary["bad_lines"] == 0
    # 20 s at x60 ends before the dose at 30 min: record's markers are after the readings.
    assert summary["markers_after_readings"] == 2
    assert alarms_in(capture) == in_process(readings)

    # The first simulated minutes are calm; a touchy P-001 makes the comparison non-trivial.
    touchy = tmp_path / "touchy"
    touchy.mkdir()
    (touchy / "readings.jsonl").write_bytes((capture / "readings.jsonl").read_bytes())
    start = min(r.received_at for r in readings)
    markers = [
        DoseMarker(session=SESSION, participant=code, given_at=start + dt.timedelta(minutes=10))
        for code in ("P-001", "P-002")
    ]
    write_jsonl(touchy / "markers.jsonl", markers)
    site = touchy / "site.toml"
    site.write_text(
        DEMO.read_text(encoding="utf-8")
        .replace('protocols_dir = "protocols"', f"protocols_dir = '{DEMO.parent / 'protocols'}'")
        .replace(
            'code = "P-001"\n',
            'code = "P-001"\n\n[sessions.participants.overrides."hr-high-low"]\n'
            "threshold = 60.0\ndelay_s = 30\n\n"
            '[sessions.participants.overrides."spo2-low-low"]\nthreshold = 99.0\n',
        ),
        encoding="utf-8",
    )
    result = monitor(
        "replay", str(touchy / "readings.jsonl"), "--config", str(site), "--out", str(touchy)
    )
    assert result.returncode == 0, result.stderr
    events = alarms_in(touchy)
    assert events, "the lowered limits must raise alarms on the recorded vitals"
    assert events == in_process(readings, markers, config=site)

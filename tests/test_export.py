"""``monitor export``: the stored lines exactly, or CSV whose cells are the models' own values."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.cli import main
from monitor.export import LineProtocolError, ParsedPoint, parse_line, parse_time, rfc3339_ns
from monitor.models import (
    AlarmCategory,
    AlarmEvent,
    AlarmPriority,
    AlarmState,
    DeviceEvent,
    DeviceEventType,
    DeviceKind,
    DeviceState,
    Parameter,
    QualityFlag,
    Reading,
    ReadingKind,
)
from monitor.storage import PointKey, Spool, SpoolPoint, export_points
from monitor.storage.influx import make_point, to_point

pytestmark = pytest.mark.timeout(60)

SITE = "clinic-a"
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
T0_NS = 1_767_603_600_000_000_000
MESSAGE = 'Heart rate 151 bpm above 140 ("high"), see C:\\notes = now'
DETAIL = "flags announce RR intervals, but none follow"


def blood_pressure() -> Reading:
    return Reading(
        session="S-1",
        participant="P-001",
        device="bp-1",
        kind=ReadingKind.BLOOD_PRESSURE,
        values={
            Parameter.SYSTOLIC_BP: 128.0,
            Parameter.DIASTOLIC_BP: 84.5,
            Parameter.MEAN_ARTERIAL_BP: None,
            Parameter.PULSE_RATE: 71.0,
        },
        measured_at=T0 - dt.timedelta(seconds=2),
        received_at=T0,
        quality=frozenset({QualityFlag.VALUE_UNUSABLE, QualityFlag.IRREGULAR_PULSE}),
    )


def heart_rate(seconds: float) -> Reading:
    return Reading(
        session="S-1",
        participant="P-002",
        device="hr-P-002",
        kind=ReadingKind.HEART_RATE,
        values={Parameter.HEART_RATE: 72.25},
        received_at=T0 + dt.timedelta(seconds=seconds),
    )


def alarm() -> AlarmEvent:
    return AlarmEvent(
        alarm_id=uuid.UUID("00000000-0000-4000-8000-000000000007"),
        session="S-1",
        participant="P-001",
        rule="hr-high",
        parameter=Parameter.HEART_RATE,
        priority=AlarmPriority.HIGH,
        category=AlarmCategory.PHYSIOLOGICAL,
        state=AlarmState.ACKNOWLEDGED,
        value=151.0,
        threshold=140.0,
        message=MESSAGE,
        raised_at=T0,
        occurred_at=T0 + dt.timedelta(seconds=30),
        acknowledged_by="RN-07",
        acknowledged_at=T0 + dt.timedelta(seconds=30),
        escalation_level=1,
        sequence=4,
        paused=True,
    )


def malformed_payload() -> DeviceEvent:
    return DeviceEvent(
        session="S-1",
        participant="P-001",
        device="hr-P-001",
        device_kind=DeviceKind.HEART_RATE,
        event=DeviceEventType.MALFORMED_PAYLOAD,
        state=DeviceState.CONNECTED,
        occurred_at=T0 + dt.timedelta(seconds=5),
        detail=DETAIL,
        characteristic="0x2A37",
        payload_hex="1048",
        count=3,
    )


RECORDS = (blood_pressure(), malformed_payload(), alarm(), heart_rate(60.000001))


def build_store(path: Path, points: Sequence[SpoolPoint]) -> None:
    async def fill() -> None:
        async with Spool(path, forward=False) as spool:
            await spool.accept(points)

    asyncio.run(fill())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    build_store(path, [to_point(record, site=SITE) for record in RECORDS])
    return path


def export(store: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["export", "--store", str(store), *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# --- line protocol ---------------------------------------------------------------------------


def test_line_protocol_is_exactly_the_stored_lines_in_spool_order(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = [to_point(record, site=SITE).line for record in RECORDS]
    assert [point.line for point in export_points(store)] == stored

    status, out, err = export(store, capsys=capsys)
    assert status == 0
    assert out == "".join(line + "\n" for line in stored)
    assert err == (
        f"exported 4 points (alarm_events 1, device_status 1, vitals 2) from {store} as lp\n"
    )

    target = tmp_path / "out" / "points.lp"
    target.parent.mkdir()
    status, out, _ = export(store, "--format", "lp", "--out", str(target), capsys=capsys)
    assert (status, out) == (0, "")
    assert target.read_text(encoding="utf-8") == "".join(line + "\n" for line in stored)
    assert sorted(p.name for p in target.parent.iterdir()) == ["points.lp"]  # no part file left


def test_the_console_script_writes_line_protocol_to_stdout(store: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "export", "--store", str(store)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [to_point(r, site=SITE).line for r in RECORDS]
    assert done.stderr.startswith("exported 4 points")


def test_a_reader_that_stops_early_is_not_an_error(store: Path) -> None:
    """``monitor export | head``: the pipe closes before the export is written."""
    export = subprocess.Popen(
        [sys.executable, "-m", "monitor", "export", "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    export.stdout.close()
    status = export.wait(timeout=30)
    errors = export.stderr.read().decode()
    export.stderr.close()
    assert status == 0, errors
    assert "BrokenPipeError" not in errors


@pytest.mark.asyncio
async def test_export_reads_a_store_the_service_holds_open(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    async with Spool(path, forward=False) as spool:
        await spool.accept([to_point(alarm(), site=SITE)])
        target = tmp_path / "alarms.lp"
        status = await asyncio.to_thread(
            main, ["export", "--store", str(path), "--out", str(target)]
        )
        assert status == 0
        await spool.accept([to_point(blood_pressure(), site=SITE)])  # still the spool's file
    assert target.read_text(encoding="utf-8") == to_point(alarm(), site=SITE).line + "\n"


# --- CSV -------------------------------------------------------------------------------------


def test_csv_cells_are_the_models_values(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = export(store, "--format", "csv", capsys=capsys)
    assert status == 0
    assert err.endswith("as csv\n")
    header = out.splitlines()[0].split(",")
    assert header[:3] == ["measurement", "time", "time_ns"]
    tags = [column for column in header if column.startswith("tag_")]
    fields = header[3 + len(tags) :]
    assert tags == sorted(tags)
    assert fields == sorted(fields)
    assert {"tag_site", "tag_state", "tag_device_kind", "message", "usable", "count"} <= set(header)

    reading, device, event, later = csv_rows(out)
    assert reading["measurement"] == "vitals"
    assert reading["time"] == "2026-01-05T09:00:00.000000000Z"
    assert int(reading["time_ns"]) == T0_NS
    assert (reading["tag_site"], reading["tag_participant"], reading["tag_kind"]) == (
        SITE,
        "P-001",
        "blood_pressure",
    )
    assert float(reading["systolic_bp"]) == 128.0
    assert float(reading["diastolic_bp"]) == 84.5
    assert reading["pulse_rate"] == "71.0"  # stored as "71": still a float
    assert "mean_arterial_bp" not in reading  # missing in every point: no column
    assert reading["quality"] == "irregular_pulse,value_unusable"
    assert reading["usable"] == "false"
    assert dt.datetime.fromisoformat(reading["measured_at"]) == blood_pressure().measured_at
    assert reading["message"] == reading["tag_rule"] == ""  # other measurements' columns

    original = alarm()
    assert event["measurement"] == "alarm_events"
    assert event["message"] == MESSAGE
    assert event["alarm_id"] == str(original.alarm_id)
    assert (event["sequence"], event["escalation_level"]) == ("4", "1")
    assert (event["paused"], event["condition_cleared"]) == ("true", "false")
    assert float(event["value"]) == original.value
    assert (event["tag_state"], event["tag_seq"], event["tag_priority"]) == (
        "acknowledged",
        "4",
        "high",
    )
    assert event["time"] == "2026-01-05T09:00:30.000000000Z"

    assert device["detail"] == DETAIL
    assert (device["count"], device["payload_hex"], device["characteristic"]) == (
        "3",
        "1048",
        "0x2A37",
    )
    assert device["tag_event"] == "malformed_payload"

    assert later["time"] == "2026-01-05T09:01:00.000001000Z"
    assert int(later["time_ns"]) == T0_NS + 60_000_001_000
    assert float(later["heart_rate"]) == 72.25


def test_control_characters_in_strings_survive_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.sqlite"
    note = 'carriage\rreturn\ttab, "quoted" \\ end'
    build_store(path, [make_point("m", {"k": "a b"}, {"note": note, "n": 2}, 1)])
    (row,) = csv_rows(export(path, "--format", "csv", capsys=capsys)[1])
    assert row == {
        "measurement": "m",
        "time": "1970-01-01T00:00:00.000000001Z",
        "time_ns": "1",
        "tag_k": "a b",
        "n": "2",
        "note": note,
    }


def test_a_stored_line_that_is_not_line_protocol_stops_a_csv_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.sqlite"
    build_store(path, [SpoolPoint(PointKey.of("m", [], 1), "m v=nan 1")])
    target = tmp_path / "out.csv"
    target.write_text("an earlier export\n", encoding="utf-8")
    status, _, err = export(path, "--format", "csv", "--out", str(target), capsys=capsys)
    assert status == 2
    assert "stored point 1 is not valid line protocol" in err
    assert "'nan'" in err
    assert target.read_text(encoding="utf-8") == "an earlier export\n"  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir() if "out.csv" in p.name) == ["out.csv"]
    assert export(path, capsys=capsys)[:2] == (0, "m v=nan 1\n")  # lines are not judged


def test_a_field_that_would_pass_for_another_column_stops_a_csv_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.sqlite"
    build_store(path, [make_point("m", {"a": "x"}, {"tag_a": 1.0, "time": "now"}, 1)])
    status, out, err = export(path, "--format", "csv", capsys=capsys)
    assert (status, out) == (2, "")
    assert "tag_a, time would clash" in err


# --- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--measurement", "vitals"], [0, 3]),
        (["--measurement", "alarm_events", "device_status"], [1, 2]),
        (["--measurement", "alarm_events", "--measurement", "vitals"], [0, 2, 3]),
        (["--measurement", "nothing"], []),
        (["--since", "2026-01-05T09:00:05Z"], [1, 2, 3]),
        (["--until", "2026-01-05T09:00:05Z"], [0]),  # exclusive
        (
            ["--since", "2026-01-05T10:00:05+01:00", "--until", "2026-01-05T09:00:30.000000001Z"],
            [1, 2],
        ),
        (["--since", "2026-01-05T09:01:00.000001Z"], [3]),  # inclusive, to the microsecond
        (["--since", "2026-01-05T09:01:00.000001001Z"], []),  # and to the nanosecond
        (["--measurement", "vitals", "--since", "2026-01-05T09:00:00.000000001Z"], [3]),
        (["--state", "stored"], [0, 1, 2, 3]),
        (["--state", "pending", "quarantined"], []),
    ],
)
def test_filters(
    store: Path, args: list[str], expected: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [to_point(record, site=SITE).line for record in RECORDS]
    status, out, err = export(store, *args, capsys=capsys)
    assert status == 0
    assert out.splitlines() == [lines[n] for n in expected]
    assert err.startswith(f"exported {len(expected)} point")


def test_every_state_by_default_and_state_narrows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spool.sqlite"
    points = [to_point(heart_rate(n), site=SITE) for n in range(3)]

    async def fill() -> None:
        async with Spool(path, keep_delivered=True) as spool:
            await spool.accept(points)
            await spool.quarantine(await spool.next_batch(1), "field type conflict")
            await spool.mark_delivered(await spool.next_batch(1))

    asyncio.run(fill())
    lines = [point.line for point in points]
    assert export(path, capsys=capsys)[1].splitlines() == lines
    assert export(path, "--state", "pending", capsys=capsys)[1].splitlines() == lines[2:]
    narrowed = export(path, "--state", "delivered", "--state", "quarantined", capsys=capsys)
    assert narrowed[1].splitlines() == lines[:2]
    rows = csv_rows(export(path, "--format", "csv", "--state", "quarantined", capsys=capsys)[1])
    assert [float(row["heart_rate"]) for row in rows] == [72.25]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: not an ISO 8601 time: 'yesterday'"),
        (["--until", "2026-01-05T09:00:00"], "--until: '2026-01-05T09:00:00' has no UTC offset"),
        (["--until", "2026-01-05"], "has no UTC offset"),
        (["--since", "2026-01-05T09:00:00.1234567891Z"], "more than nine fraction digits"),
        (
            ["--since", "2026-01-05T09:00:00Z", "--until", "2026-01-05T09:00:00Z"],
            "--since must be earlier than --until",
        ),
    ],
)
def test_bad_times_are_named(
    store: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = export(store, *args, capsys=capsys)
    assert (status, out) == (2, "")
    assert err.startswith("error: ")
    assert message in err


@pytest.mark.parametrize("args", [["--format", "json"], ["--state", "lost"]])
def test_unknown_choices_are_refused_by_the_parser(
    store: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--store", str(store), *args])
    assert exit_info.value.code == 2
    assert f"invalid choice: '{args[1]}'" in capsys.readouterr().err


def test_a_missing_or_unreadable_store_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.sqlite"
    status, out, err = export(missing, capsys=capsys)
    assert (status, out) == (2, "")
    assert err == f"error: {missing}: no such store file (monitor run --store FILE writes one)\n"

    assert export(tmp_path, capsys=capsys)[2] == f"error: {tmp_path}: not a file\n"

    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database, just text\n" * 100, encoding="utf-8")
    status, out, err = export(garbage, "--format", "csv", capsys=capsys)
    assert (status, out) == (2, "")
    assert err == f"error: {garbage}: cannot read the store: file is not a database\n"

    other = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE readings (x)")
    assert export(other, capsys=capsys)[2] == (
        f"error: {other}: cannot read the store: no such table: points\n"
    )


def test_bad_outputs_are_named(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = export(store, "--out", str(store), capsys=capsys)
    assert (status, err) == (2, f"error: --out {store} is the store itself\n")
    assert len(list(export_points(store))) == 4

    nowhere = tmp_path / "missing" / "points.lp"
    status, _, err = export(store, "--out", str(nowhere), capsys=capsys)
    assert status == 2
    assert err == f"error: --out {nowhere}: cannot write: No such file or directory\n"


# --- the pure parts ----------------------------------------------------------------------------


def test_a_serialised_reading_parses_back() -> None:
    line = to_point(blood_pressure(), site=SITE).line
    assert parse_line(line) == ParsedPoint(
        measurement="vitals",
        tags={
            "device": "bp-1",
            "kind": "blood_pressure",
            "participant": "P-001",
            "session": "S-1",
            "site": SITE,
        },
        fields={
            "diastolic_bp": 84.5,
            "measured_at": "2026-01-05T08:59:58+00:00",
            "pulse_rate": 71.0,
            "quality": "irregular_pulse,value_unusable",
            "systolic_bp": 128.0,
            "usable": False,
        },
        time_ns=T0_NS,
    )


def test_escapes_are_undone() -> None:
    line = r'a\ b\,c=d,k\ \,\=ey=v\ \,\=al\ue f\=\ \,="q\"u\\o,t e\",x=1i" 5'
    assert parse_line(line) == ParsedPoint(
        measurement="a b,c=d",
        tags={"k ,=ey": r"v ,=al\ue"},
        fields={"f= ,": r'q"u\o,t e",x=1i'},
        time_ns=5,
    )
    assert parse_line('m u=7u,i=-7i,f=-1.5e-3,g=.5,t=T,F=FALSE,e=""') == ParsedPoint(
        "m", {}, {"u": 7, "i": -7, "f": -0.0015, "g": 0.5, "t": True, "F": False, "e": ""}, None
    )
    assert parse_line("m v=1 -5").time_ns == -5


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("", "column 1: empty measurement"),
        ("m", "column 2: expected ' ' after the measurement and tags, got the end of the line"),
        ("m,k v=1", "expected '=' after tag key 'k'"),
        ("m,k= v=1", "empty value of tag 'k'"),
        ("m v", "expected '=' after field key 'v'"),
        ("m =1", "empty field key"),
        ("m v=", "not a field value: ''"),
        ("m v=1.5i", "not a field value: '1.5i'"),
        ("m v=-1u", "not a field value: '-1u'"),
        ("m v=nan", "not a field value: 'nan'"),
        ("m v=yes", "not a field value: 'yes'"),
        ('m v="open', "column 5: string field value has no closing quote"),
        ('m v="a"b', "expected ' ' after the fields, got 'b'"),
        ("m v=1 12x", "column 7: not a timestamp: '12x'"),
        ("m v=1  12", "not a timestamp"),
        ("m v=1,", "empty field key"),
    ],
)
def test_bad_lines_are_refused_with_the_column(line: str, problem: str) -> None:
    with pytest.raises(LineProtocolError) as error:
        parse_line(line)
    assert problem in str(error.value)


_SPECIAL = st.sampled_from(list(' ,="\\=#\t\r'))
_TEXT = st.text(st.one_of(_SPECIAL, st.characters(codec="utf-8")), max_size=12)
# What InfluxDB itself cannot read back is left out of names: a trailing backslash (it would
# escape the separator after it) and control characters, which the client writes as "\n", "\t",
# "\r" but InfluxDB reads as a backslash and a letter. A line holds no newline at all.
_NAME = _TEXT.map(lambda s: s.translate({ord(c): None for c in "\n\r\t"})).filter(
    lambda s: bool(s) and not s.endswith("\\")
)
_FIELD = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT.map(lambda s: s.replace("\n", "")),
)


@settings(max_examples=300, deadline=None)
@given(
    measurement=_NAME.filter(lambda s: not s.startswith("#")),
    tags=st.dictionaries(_NAME, _NAME, max_size=4),
    fields=st.dictionaries(_NAME, _FIELD, min_size=1, max_size=5),
    time_ns=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_whatever_influxdb_client_serialises_parses_back_to_the_same_values(
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, bool | int | float | str],
    time_ns: int,
) -> None:
    parsed = parse_line(make_point(measurement, tags, fields, time_ns).line)
    assert (parsed.measurement, dict(parsed.tags), parsed.time_ns) == (measurement, tags, time_ns)
    assert {key: (type(v), v) for key, v in parsed.fields.items()} == {
        key: (float if isinstance(v, float) else type(v), v) for key, v in fields.items()
    }


@given(st.integers(min_value=-(10**18), max_value=2**63 - 1))
def test_exported_times_select_exactly_their_point(time_ns: int) -> None:
    assert parse_time(rfc3339_ns(time_ns)) == time_ns


def test_times_keep_their_offset_and_nanoseconds() -> None:
    assert parse_time("2026-01-05T10:00:00+01:00") == T0_NS
    assert parse_time("2026-01-05T09:00:00.5Z") == T0_NS + 500_000_000
    assert parse_time("2026-01-05T09:00:00,000000007+00:00") == T0_NS + 7
    assert parse_time("2026-01-05 09:00Z") == T0_NS
    assert rfc3339_ns(T0_NS + 7) == "2026-01-05T09:00:00.000000007Z"
    assert rfc3339_ns(-1) == "1969-12-31T23:59:59.999999999Z"

"""``monitor export``: the local store (or a spool) written out as line protocol or CSV.

With no InfluxDB configured, the SQLite store is the only copy of a session, so it has to leave
the machine in a form other tools load: line protocol for InfluxDB (``influx -import``, or
``curl --data-binary @FILE .../write?precision=ns``), CSV for a spreadsheet or pandas. The file is
read through :func:`~monitor.storage.export_points`, read-only on its own connection, so an
export can run while the service is writing and never changes what it will deliver.

Line protocol is exactly the stored lines (serialised by influxdb-client when the point was
accepted), one per line, in spool order: nothing is re-encoded, so what InfluxDB loads is what
the service would have sent.

CSV has one row per point. Columns: ``measurement``, ``time`` (RFC 3339 UTC with nine fraction
digits), ``time_ns`` (integer nanoseconds since the epoch), then one ``tag_<key>`` column per tag
key and one ``<key>`` column per field key that occurs among the exported points, each group
sorted. Tags get the prefix because the schema reuses words (``state`` is a tag of two
measurements) and a field must never be mistaken for a tag; a field named ``measurement``,
``time``, ``time_ns`` or ``tag_...`` stops a CSV export (use line protocol) rather than being
renamed silently. None of the documented measurements has one. Values are unescaped:
strings as they were, integers without the ``i`` suffix, floats in Python's ``repr`` (``71.0``,
so an integer and a float stay distinguishable), booleans as ``true``/``false``. An empty cell is
a tag or field the point does not have (or an empty string field).

Points in every state are exported unless ``--state`` narrows them: a local store holds
``stored`` points, a spool ``pending`` ones (and ``delivered`` with ``keep_delivered``), and
``quarantined`` points are ones InfluxDB rejected, kept so nothing is lost (loading them into
InfluxDB again will fail again). Time filters are half-open, ``--since`` inclusive and
``--until`` exclusive, so consecutive exports with a shared boundary neither overlap nor leave a
gap. Times need a UTC offset (``Z``, ``+01:00``): without one the zone would be a guess.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import datetime as dt
import os
import re
import sqlite3
import sys
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from monitor.exits import EXIT_BAD_INPUT, EXIT_OK
from monitor.storage import PointState, SpoolError, StoredPoint, export_points

__all__ = [
    "CSV_FIXED_COLUMNS",
    "FORMATS",
    "STATES",
    "TAG_PREFIX",
    "ExportError",
    "FieldValue",
    "LineProtocolError",
    "ParsedPoint",
    "csv_columns",
    "csv_row",
    "export",
    "format_value",
    "parse_line",
    "parse_time",
    "rfc3339_ns",
    "run_export",
    "select",
    "summary",
]

FORMATS = ("lp", "csv")
STATES: Mapping[str, PointState] = {state.name.lower(): state for state in PointState}
"""``--state`` names: ``pending``, ``delivered``, ``quarantined``, ``stored``."""

CSV_FIXED_COLUMNS = ("measurement", "time", "time_ns")
TAG_PREFIX = "tag_"

FieldValue = float | int | bool | str

_MEASUREMENT_ESCAPES = frozenset(", ")
_KEY_ESCAPES = frozenset(",= ")
_STRING_ESCAPES = frozenset('"\\')
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+i")
_UNSIGNED = re.compile(r"\d+u")
_TIMESTAMP = re.compile(r"-?\d+")
_FRACTION = re.compile(r"(?<=\d\d:\d\d:\d\d)[.,](\d+)")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NS = 1_000_000_000
_MEMORY_BYTES = 32 * 1024 * 1024
"""CSV holds the selected lines this far in memory, then in a temporary file (_write_csv)."""


class LineProtocolError(ValueError):
    """A line that is not valid line protocol; the message names the column."""


class ExportError(Exception):
    """The export cannot run or finish (a bad argument, an unreadable store): exit 2."""


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedPoint:
    """One line of line protocol with every escape undone; ``time_ns`` is None when omitted."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int | None


# --- line protocol -------------------------------------------------------------------------


def _read_name(
    line: str, pos: int, stops: str, escapes: frozenset[str], what: str
) -> tuple[str, int]:
    """Up to an unescaped stop character; a backslash before anything else is kept literally.

    That is InfluxDB's reading, and it is what makes the serialiser's output unambiguous: it does
    not escape backslashes in names, so ``a\\\\,`` is a backslash followed by an escaped comma.
    """
    out: list[str] = []
    end = len(line)
    while pos < end:
        char = line[pos]
        if char == "\\" and pos + 1 < end and line[pos + 1] in escapes:
            out.append(line[pos + 1])
            pos += 2
            continue
        if char in stops:
            break
        out.append(char)
        pos += 1
    if not out:
        raise LineProtocolError(f"column {pos + 1}: empty {what}")
    return "".join(out), pos


def _expect(line: str, pos: int, char: str, after: str) -> int:
    if pos >= len(line) or line[pos] != char:
        found = "the end of the line" if pos >= len(line) else repr(line[pos])
        raise LineProtocolError(f"column {pos + 1}: expected {char!r} after {after}, got {found}")
    return pos + 1


def _read_string(line: str, pos: int) -> tuple[str, int]:
    """A double-quoted field value from ``pos`` (just past the opening quote)."""
    start = pos
    out: list[str] = []
    end = len(line)
    while pos < end:
        char = line[pos]
        if char == "\\" and pos + 1 < end and line[pos + 1] in _STRING_ESCAPES:
            out.append(line[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    raise LineProtocolError(f"column {start}: string field value has no closing quote")


def _scalar(text: str, column: int) -> FieldValue:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INTEGER.fullmatch(text) or _UNSIGNED.fullmatch(text):
        return int(text[:-1])
    if _FLOAT.fullmatch(text):
        return float(text)
    raise LineProtocolError(f"column {column}: not a field value: {text!r}")


def parse_line(line: str) -> ParsedPoint:
    """One line of line protocol, as InfluxDB reads it; raises :class:`LineProtocolError`.

    Written for CSV export, where every value has to come back exactly as the model held it, and
    kept pure so the escape rules are tested on their own: the measurement escapes commas and
    spaces; tag keys, tag values and field keys escape commas, equals signs and spaces; string
    field values escape double quotes and backslashes. Unsigned integers (``5u``) come back as
    ``int`` like signed ones (``5i``); a bare number is a float.
    """
    measurement, pos = _read_name(line, 0, ", ", _MEASUREMENT_ESCAPES, "measurement")
    tags: dict[str, str] = {}
    while pos < len(line) and line[pos] == ",":
        key, pos = _read_name(line, pos + 1, ",= ", _KEY_ESCAPES, "tag key")
        pos = _expect(line, pos, "=", f"tag key {key!r}")
        tags[key], pos = _read_name(line, pos, ", ", _KEY_ESCAPES, f"value of tag {key!r}")
    pos = _expect(line, pos, " ", "the measurement and tags")
    fields: dict[str, FieldValue] = {}
    while True:
        key, pos = _read_name(line, pos, ",= ", _KEY_ESCAPES, "field key")
        pos = _expect(line, pos, "=", f"field key {key!r}")
        if pos < len(line) and line[pos] == '"':
            fields[key], pos = _read_string(line, pos + 1)
        else:
            start = pos
            while pos < len(line) and line[pos] not in ", ":
                pos += 1
            fields[key] = _scalar(line[start:pos], start + 1)
        if pos < len(line) and line[pos] == ",":
            pos += 1
            continue
        break
    if pos == len(line):
        return ParsedPoint(measurement, tags, fields, None)
    pos = _expect(line, pos, " ", "the fields")
    if not _TIMESTAMP.fullmatch(line, pos):
        raise LineProtocolError(f"column {pos + 1}: not a timestamp: {line[pos:]!r}")
    return ParsedPoint(measurement, tags, fields, int(line[pos:]))


# --- times -----------------------------------------------------------------------------------


def parse_time(text: str) -> int:
    """An ISO 8601 time with a UTC offset as nanoseconds since the epoch, fraction kept whole.

    ``datetime`` stops at microseconds; the fraction is read separately so a ``time`` copied from
    an exported CSV selects exactly that point. Raises ``ValueError`` naming the problem.
    """
    fraction = _FRACTION.search(text)
    digits = "" if fraction is None else fraction.group(1)
    if len(digits) > 9:
        raise ValueError(f"{text!r}: more than nine fraction digits (nanoseconds)")
    bare = text if fraction is None else text[: fraction.start()] + text[fraction.end() :]
    try:
        moment = dt.datetime.fromisoformat(bare)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: add Z or one like +01:00")
    delta = moment - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds * _NS + int(digits.ljust(9, "0") or 0)


def rfc3339_ns(time_ns: int) -> str:
    """``2026-01-05T09:00:00.000000000Z``: nine digits always, so the column sorts as text."""
    seconds, nanos = divmod(time_ns, _NS)
    moment = _EPOCH + dt.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


# --- selection and CSV -------------------------------------------------------------------------


def select(
    points: Iterable[StoredPoint],
    *,
    measurements: Collection[str] | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
) -> Iterator[StoredPoint]:
    """The points to export, judged by the stored identity so line protocol is never parsed."""
    for point in points:
        key = point.key
        if measurements is not None and key.measurement not in measurements:
            continue
        if since_ns is not None and key.time_ns < since_ns:
            continue
        if until_ns is not None and key.time_ns >= until_ns:
            continue
        yield point


def csv_columns(tag_keys: Iterable[str], field_keys: Iterable[str]) -> list[str]:
    """The header; raises :class:`ExportError` for a field that would pass for another column."""
    tag_columns = [TAG_PREFIX + key for key in sorted(set(tag_keys))]
    fields = sorted(set(field_keys))
    clashes = [key for key in fields if key in CSV_FIXED_COLUMNS or key.startswith(TAG_PREFIX)]
    if clashes:
        names = ", ".join(clashes)
        raise ExportError(f"field(s) {names} would clash with another CSV column; use --format lp")
    return [*CSV_FIXED_COLUMNS, *tag_columns, *fields]


def format_value(value: FieldValue) -> str:
    """``repr`` for a float, so ``71.0`` still reads as a float in a file that has no types."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_row(point: ParsedPoint, columns: Sequence[str], time_ns: int) -> list[str]:
    """One row under ``columns``; ``time_ns`` comes from the caller for a line that has none."""
    row = [point.measurement, rfc3339_ns(time_ns), str(time_ns)]
    for column in columns[len(CSV_FIXED_COLUMNS) :]:
        if column.startswith(TAG_PREFIX) and column[len(TAG_PREFIX) :] in point.tags:
            row.append(point.tags[column[len(TAG_PREFIX) :]])
        elif column in point.fields:
            row.append(format_value(point.fields[column]))
        else:
            row.append("")
    return row


# --- the export ------------------------------------------------------------------------------


def _parsed(seq: int, line: str) -> ParsedPoint:
    try:
        return parse_line(line)
    except LineProtocolError as error:
        raise ExportError(f"stored point {seq} is not valid line protocol: {error}") from None


def _write_lp(
    points: Iterable[StoredPoint], out: IO[str], counts: collections.Counter[str]
) -> None:
    for point in points:
        out.write(point.line + "\n")
        counts[point.key.measurement] += 1


def _write_csv(
    points: Iterable[StoredPoint], out: IO[str], counts: collections.Counter[str]
) -> None:
    """Two passes, because the header needs every column before the first row.

    The store is read once (one consistent snapshot, even while the service writes) into a
    temporary file, so a long session never has to sit in memory parsed. Every line is parsed
    in the first pass, so a bad one stops the export before anything is written.
    """
    tag_keys: set[str] = set()
    field_keys: set[str] = set()
    # Only "\n" ends a held record: a string field may contain a lone "\r".
    with tempfile.SpooledTemporaryFile(_MEMORY_BYTES, mode="w+", newline="\n") as held:
        for point in points:
            parsed = _parsed(point.seq, point.line)
            tag_keys.update(parsed.tags)
            field_keys.update(parsed.fields)
            held.write(f"{point.seq}\t{point.key.time_ns}\t{point.line}\n")
            counts[point.key.measurement] += 1
        columns = csv_columns(tag_keys, field_keys)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        held.seek(0)
        for record in held:
            seq, time_ns, line = record.removesuffix("\n").split("\t", 2)
            parsed = _parsed(int(seq), line)
            stamp = int(time_ns) if parsed.time_ns is None else parsed.time_ns
            writer.writerow(csv_row(parsed, columns, stamp))


def export(
    store: Path,
    out: IO[str],
    *,
    fmt: str = "lp",
    measurements: Collection[str] | None = None,
    states: Iterable[PointState] | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
) -> collections.Counter[str]:
    """Write the selected points of ``store`` to ``out``; returns points written per measurement.

    Raises :class:`ExportError` for an unknown format, a store that is missing or cannot be read,
    or (CSV only) a stored line that is not line protocol.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not store.exists():
        raise ExportError(f"{store}: no such store file (monitor run --store FILE writes one)")
    if not store.is_file():
        raise ExportError(f"{store}: not a file")
    counts: collections.Counter[str] = collections.Counter()
    chosen = select(
        export_points(store, states=states),
        measurements=measurements,
        since_ns=since_ns,
        until_ns=until_ns,
    )
    write = _write_lp if fmt == "lp" else _write_csv
    try:
        write(chosen, out, counts)
    except (SpoolError, sqlite3.Error) as error:
        raise ExportError(f"{store}: cannot read the store: {error}") from None
    return counts


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    store: Path
    out: Path | None
    fmt: str
    measurements: frozenset[str] | None
    states: frozenset[PointState] | None
    since_ns: int | None
    until_ns: int | None

    @classmethod
    def of(cls, args: argparse.Namespace) -> _Request:
        """The arguments checked as a whole, each problem named after its option."""
        if args.format not in FORMATS:
            raise ExportError(f"--format: unknown format {args.format!r} (lp or csv)")
        states = None
        if args.state:
            unknown = sorted(set(args.state) - set(STATES))
            if unknown:
                raise ExportError(f"--state: unknown state(s) {', '.join(unknown)}")
            states = frozenset(STATES[name] for name in args.state)
        times: dict[str, int | None] = {}
        for option in ("since", "until"):
            text: str | None = getattr(args, option)
            try:
                times[option] = None if text is None else parse_time(text)
            except ValueError as error:
                raise ExportError(f"--{option}: {error}") from None
        since_ns, until_ns = times["since"], times["until"]
        if since_ns is not None and until_ns is not None and since_ns >= until_ns:
            raise ExportError("--since must be earlier than --until (--until is exclusive)")
        out: Path | None = args.out
        if out is not None and out.resolve() == Path(args.store).resolve():
            raise ExportError(f"--out {out} is the store itself")
        return cls(
            store=Path(args.store),
            out=out,
            fmt=args.format,
            measurements=frozenset(args.measurement) if args.measurement else None,
            states=states,
            since_ns=since_ns,
            until_ns=until_ns,
        )

    def run(self, out: IO[str]) -> collections.Counter[str]:
        return export(
            self.store,
            out,
            fmt=self.fmt,
            measurements=self.measurements,
            states=self.states,
            since_ns=self.since_ns,
            until_ns=self.until_ns,
        )


def _export_to_file(request: _Request, path: Path) -> collections.Counter[str]:
    """Into a temporary file beside ``path``, renamed over it only once the export is complete.

    A failed export then leaves no truncated file that could pass for a whole one, and an
    earlier export at ``path`` survives it. The file is created readable by its owner only.
    """
    try:
        held = tempfile.NamedTemporaryFile(  # noqa: SIM115 (renamed or removed below)
            "w",
            encoding="utf-8",
            newline="",
            dir=path.parent,
            prefix=f".{path.name}.",
            suffix=".part",
            delete=False,
        )
    except OSError as error:
        raise ExportError(f"--out {path}: cannot write: {error.strerror}") from None
    part = Path(held.name)
    try:
        with held:
            counts = request.run(held)
        part.replace(path)
    except OSError as error:
        part.unlink(missing_ok=True)
        raise ExportError(f"--out {path}: cannot write: {error.strerror}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return counts


def summary(counts: Mapping[str, int], store: Path, fmt: str) -> str:
    """The one line on stderr, so a pipe gets only the data."""
    total = sum(counts.values())
    by_measurement = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    detail = f" ({by_measurement})" if by_measurement else ""
    return f"exported {total} point{'' if total == 1 else 's'}{detail} from {store} as {fmt}"


def run_export(args: argparse.Namespace) -> int:
    """The ``monitor export`` command: 0 on success (also for no matching points), 2 otherwise."""
    try:
        request = _Request.of(args)
        if request.out is None:
            counts = request.run(sys.stdout)
            sys.stdout.flush()
        else:
            counts = _export_to_file(request, request.out)
    except ExportError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # The reader had enough (``monitor export | head``): not an error, and Python must not
        # report one when it flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    sys.stderr.write(summary(counts, request.store, request.fmt) + "\n")
    return EXIT_OK

"""``monitor replay``: detection over recorded readings, in their own time, as fast as it goes.

Readings come from JSON-lines files as ``monitor record`` writes them (docs/formats.md), dose
markers from an optional ``markers.jsonl`` beside each readings file. Every session of the config
that has readings gets one :class:`~monitor.alerts.pipeline.DetectionPipeline`, whose origin is
its earliest reading floored to the second (the config names no session start).

The files are read twice, so a whole session never has to sit in memory (a parsed reading is
about 1.6 kB): the first pass validates every line, reports each bad one, and learns each
session's time span and whether each file is in ``received_at`` order; the second streams the
valid readings through detection, merging the files by time. Only a file that is out of order
is sorted in memory (stably, so readings of one instant keep their order).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import heapq
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TypeVar

from pydantic import ValidationError

from monitor.alerts.compile import compile_rules
from monitor.alerts.lifecycle import FutureTimeError, LifecycleError
from monitor.alerts.pipeline import MAX_SESSION_S, DetectionPipeline, to_ms
from monitor.alerts.rules import RuleSet, RuleSetError
from monitor.config import load_config_or_report
from monitor.exits import EXIT_BAD_INPUT, EXIT_OK
from monitor.models import AlarmEvent, AlarmPriority, DoseMarker, Reading

__all__ = ["ALARMS_FILE", "MARKERS_FILE", "ReplayError", "ReplaySummary", "replay", "run_replay"]

ALARMS_FILE = "alarms.jsonl"
MARKERS_FILE = "markers.jsonl"

_CHUNK = 1024
"""Readings per ``feed`` call: bounds memory; the pipeline cuts its batches at ticks anyway."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_READING, _MARKER = 0, 1  # at equal times, markers follow readings: the window ends at the dose

_Model = TypeVar("_Model", Reading, DoseMarker)
_Item = tuple[int, int, Reading | DoseMarker]
_Roster = Mapping[str, frozenset[str]]
_Sink = Callable[[list[AlarmEvent]], None]


class ReplayError(Exception):
    """Input the replay cannot use at all (a missing file, an unwritable output): exit 2."""


@dataclasses.dataclass(slots=True)
class _Source:
    """One input file as the first pass found it; the second pass reads only ``lines`` lines."""

    path: Path
    lines: int = 0
    valid: int = 0
    bad: int = 0
    in_order: bool = True


@dataclasses.dataclass(slots=True)
class _Span:
    """One session's readings as the first pass found them."""

    first_ms: int
    last_ms: int
    readings: int = 0


@dataclasses.dataclass(slots=True)
class ReplaySummary:
    """What a replay read and what detection made of it."""

    files: list[Path]
    readings: int = 0
    bad_lines: int = 0
    readings_per_session: dict[str, int] = dataclasses.field(default_factory=dict)
    origins: dict[str, dt.datetime] = dataclasses.field(default_factory=dict)
    marker_files: list[Path] = dataclasses.field(default_factory=list)
    dose_markers_per_session: dict[str, int] = dataclasses.field(default_factory=dict)
    unused_markers: int = 0
    markers_after_readings: int = 0
    unordered_files: list[Path] = dataclasses.field(default_factory=list)
    late_samples: int = 0
    out_of_order: int = 0
    future: int = 0
    alarm_events: int = 0
    alarm_ids: set[str] = dataclasses.field(default_factory=set)
    by_rule: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    by_priority: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    alarms_file: Path | None = None

    def count(self, event: AlarmEvent) -> None:
        """Take one alarm event into the counts."""
        self.alarm_events += 1
        self.alarm_ids.add(str(event.alarm_id))
        self.by_rule[event.rule] += 1
        self.by_priority[event.priority.value] += 1

    @property
    def span_s(self) -> float:
        """Seconds from the first reading to the last (0 without readings)."""
        if self.first is None or self.last is None:
            return 0.0
        return (self.last - self.first).total_seconds()

    def as_json(self) -> dict[str, object]:
        """The summary as one JSON-ready object (``--json``)."""
        return {
            "files": [str(path) for path in self.files],
            "readings": self.readings,
            "bad_lines": self.bad_lines,
            "readings_per_session": dict(self.readings_per_session),
            "session_origins": {s: t.isoformat() for s, t in self.origins.items()},
            "marker_files": [str(path) for path in self.marker_files],
            "dose_markers_per_session": dict(self.dose_markers_per_session),
            "unused_markers": self.unused_markers,
            "markers_after_readings": self.markers_after_readings,
            "unordered_files": [str(path) for path in self.unordered_files],
            "late_samples": self.late_samples,
            "out_of_order": self.out_of_order,
            "future": self.future,
            "alarm_events": self.alarm_events,
            "alarms": len(self.alarm_ids),
            "alarm_events_by_rule": dict(sorted(self.by_rule.items())),
            "alarm_events_by_priority": self._priorities(),
            "first_reading": None if self.first is None else self.first.isoformat(),
            "last_reading": None if self.last is None else self.last.isoformat(),
            "span_s": self.span_s,
            "alarms_file": None if self.alarms_file is None else str(self.alarms_file),
        }

    def lines(self) -> list[str]:
        """A short human report."""
        lines = [f"readings: {self.readings} from {len(self.files)} file(s)"]
        if self.bad_lines:
            lines.append(f"bad lines skipped: {self.bad_lines} (each reported on stderr)")
        if self.first is not None and self.last is not None:
            lines.append(
                f"time span: {self.first.isoformat()} to {self.last.isoformat()} "
                f"({self.span_s:g} s)"
            )
        for session, readings in self.readings_per_session.items():
            origin = self.origins.get(session)
            markers = self.dose_markers_per_session.get(session, 0)
            dosed = (
                f"{markers} dose marker(s)"
                if markers
                else "no dose markers, so no baseline (baseline rules stayed clear)"
            )
            since = f", origin {origin.isoformat()}" if origin is not None else ""
            lines.append(f"session {session}: {readings} readings{since}; {dosed}")
        if self.unused_markers:
            lines.append(f"dose markers of sessions without readings: {self.unused_markers}")
        if self.markers_after_readings:
            lines.append(
                f"dose markers after a session's last reading: {self.markers_after_readings}"
            )
        for path in self.unordered_files:
            lines.append(f"not in received_at order, sorted in memory: {path}")
        if self.late_samples or self.out_of_order:
            lines.append(
                f"samples ignored as late (not after their stream's last): {self.late_samples}; "
                f"readings out of order: {self.out_of_order}"
            )
        if self.future:
            lines.append(
                f"readings and markers more than {MAX_SESSION_S // 3600} h after their session's "
                f"origin, not evaluated: {self.future}"
            )
        lines.append(f"alarm events: {self.alarm_events} ({len(self.alarm_ids)} alarm(s))")
        lines += [f"  {priority}: {n}" for priority, n in self._priorities().items() if n]
        if self.by_rule:
            lines.append("alarm events by rule:")
            lines += [f"  {rule}: {n}" for rule, n in sorted(self.by_rule.items())]
        if self.alarms_file is not None:
            lines.append(f"alarm events written to {self.alarms_file}")
        return lines

    def _priorities(self) -> dict[str, int]:
        order = (AlarmPriority.HIGH, AlarmPriority.MEDIUM, AlarmPriority.LOW)
        return {priority.value: self.by_priority[priority.value] for priority in order}


def run_replay(args: argparse.Namespace) -> int:
    """The ``monitor replay`` command: 0 on success, 2 for bad input (bad lines are not)."""
    config = load_config_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    try:
        rules = {session.id: compile_rules(config, session.id) for session in config.sessions}
    except RuleSetError as error:
        sys.stderr.write(f"{args.config}: invalid configuration: {error}\n")
        return EXIT_BAD_INPUT
    try:
        summary = replay(rules, args.readings, out=args.out)
    except ReplayError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_BAD_INPUT
    if args.json:
        sys.stdout.write(json.dumps(summary.as_json()) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in summary.lines()))
    if summary.readings == 0:
        sys.stderr.write("error: no valid readings in the given files: nothing to replay\n")
        return EXIT_BAD_INPUT
    return EXIT_OK


def replay(
    rules: Mapping[str, RuleSet],
    paths: Iterable[Path],
    *,
    out: Path | None = None,
    errors: IO[str] | None = None,
) -> ReplaySummary:
    """Replay readings files through detection, one pipeline per session in ``rules``.

    Bad lines go to ``errors`` (stderr by default) as ``file:line: reason``. With ``out``,
    writes ``out/alarms.jsonl`` (replaced, not appended: a replay is reproducible). Raises
    :class:`ReplayError` for a file that cannot be read or an output that cannot be written.
    """
    report = errors if errors is not None else sys.stderr
    roster = {session: frozenset(rule_set.participants) for session, rule_set in rules.items()}
    sources = [_Source(path) for path in _checked_paths(paths)]
    summary = ReplaySummary(files=[source.path for source in sources])
    spans = _scan_readings(sources, roster, report, summary)
    markers = _load_markers(sources, roster, spans, report, summary)
    summary.readings_per_session = {s: span.readings for s, span in spans.items()}
    summary.unordered_files = [source.path for source in sources if not source.in_order]
    if spans:
        summary.first = _at(min(span.first_ms for span in spans.values()))
        summary.last = _at(max(span.last_ms for span in spans.values()))
    try:
        pipelines = {
            session: DetectionPipeline(
                rules[session], session=session, origin=_at(span.first_ms // 1000 * 1000)
            )
            for session, span in spans.items()
        }
    except LifecycleError as error:
        raise ReplayError(str(error)) from None
    summary.origins = {s: _at(pipeline.origin_ms) for s, pipeline in pipelines.items()}
    with _alarms_writer(out) as write:

        def sink(events: list[AlarmEvent]) -> None:
            for event in events:
                summary.count(event)
                write(event)

        _evaluate(pipelines, _merged(sources, markers, roster), sink)
    summary.alarms_file = None if out is None else out / ALARMS_FILE
    summary.late_samples = sum(p.detector.late_samples for p in pipelines.values())
    summary.out_of_order = sum(p.stats.out_of_order for p in pipelines.values())
    summary.future = sum(p.stats.future for p in pipelines.values())
    return summary


# -- pass 1: validate, report, learn the spans ---------------------------------------------------


def _checked_paths(paths: Iterable[Path]) -> list[Path]:
    """Fail before any work on a path that cannot be a readings file, or one given twice."""
    checked: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            msg = f"{path} is a folder; give the readings file in it ({path / 'readings.jsonl'}?)"
            raise ReplayError(msg)
        if not path.exists():
            msg = f"{path}: no such file"
            raise ReplayError(msg)
        key = path.resolve()
        if key in seen:
            msg = f"{path} is given twice; its readings would all count as late the second time"
            raise ReplayError(msg)
        seen.add(key)
        checked.append(path)
    return checked


def _scan_readings(
    sources: list[_Source], roster: _Roster, report: IO[str], summary: ReplaySummary
) -> dict[str, _Span]:
    spans: dict[str, _Span] = {}
    for source in sources:
        last_ms: int | None = None
        for reading in _scan(source, Reading, roster, report):
            t_ms = to_ms(reading.received_at)
            if last_ms is not None and t_ms < last_ms:
                source.in_order = False
            last_ms = t_ms
            span = spans.get(reading.session)
            if span is None:
                span = spans[reading.session] = _Span(t_ms, t_ms)
            span.first_ms = min(span.first_ms, t_ms)
            span.last_ms = max(span.last_ms, t_ms)
            span.readings += 1
        summary.readings += source.valid
        summary.bad_lines += source.bad
    return spans


def _load_markers(
    sources: list[_Source],
    roster: _Roster,
    spans: Mapping[str, _Span],
    report: IO[str],
    summary: ReplaySummary,
) -> list[_Item]:
    """Every markers.jsonl beside a readings file, once each; markers are few, so kept."""
    folders: dict[Path, Path] = {}
    for source in sources:
        folders.setdefault(source.path.parent.resolve(), source.path.parent)
    items: list[_Item] = []
    for folder in folders.values():
        path = folder / MARKERS_FILE
        if not path.is_file():
            continue
        source = _Source(path)
        summary.marker_files.append(path)
        for marker in _scan(source, DoseMarker, roster, report):
            if marker.session not in spans:
                summary.unused_markers += 1
                continue
            if to_ms(marker.given_at) > spans[marker.session].last_ms:
                # It can fix no baseline, and replaying up to it would invent silence (a
                # recording that stopped before the dose) and raise staleness alarms for it.
                summary.markers_after_readings += 1
                continue
            summary.dose_markers_per_session[marker.session] = (
                summary.dose_markers_per_session.get(marker.session, 0) + 1
            )
            items.append((to_ms(marker.given_at), _MARKER, marker))
        summary.bad_lines += source.bad
    items.sort(key=lambda item: item[0])
    if summary.markers_after_readings:
        report.write(
            f"note: {summary.markers_after_readings} dose marker(s) come after their session's "
            "last reading; not used\n"
        )
    if summary.unused_markers:
        report.write(
            f"note: {summary.unused_markers} dose marker(s) name sessions without readings "
            "in the given files; not used\n"
        )
    return items


def _scan(
    source: _Source,
    model: type[_Model],
    roster: _Roster,
    report: IO[str],
) -> Iterator[_Model]:
    """Every valid line of a file; each bad one is reported and counted, never dropped unseen."""
    try:
        with source.path.open("rb") as file:
            for number, raw in enumerate(file, 1):
                source.lines = number
                item = _parse(raw, model, roster)
                if isinstance(item, str):
                    source.bad += 1
                    report.write(f"{source.path}:{number}: {item}\n")
                    continue
                source.valid += 1
                yield item
    except OSError as error:
        raise ReplayError(f"{source.path}: cannot read: {error.strerror or error}") from None


def _parse(raw: bytes, model: type[_Model], roster: _Roster) -> _Model | str:
    """The line's model, or why the line is bad."""
    text = raw.rstrip(b"\r\n")
    if not text.strip():
        return "empty line"
    what = "reading" if model is Reading else "dose marker"
    try:
        item = model.model_validate_json(text)
    except ValidationError as error:
        return _describe(error, what)
    participants = roster.get(item.session)
    if participants is None:
        return f"session {item.session} is not in the config"
    if item.participant not in participants:
        return f"participant {item.participant} is not in session {item.session}"
    return item


def _describe(error: ValidationError, what: str) -> str:
    problems = error.errors(include_url=False, include_input=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        return f"not JSON ({problems[0]['msg']})"
    shown = [
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        if problem["loc"]
        else problem["msg"]
        for problem in problems[:3]
    ]
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return f"not a {what}: {'; '.join(shown)}{more}"


# -- pass 2: stream through detection ------------------------------------------------------------


def _merged(sources: list[_Source], markers: list[_Item], roster: _Roster) -> Iterator[_Item]:
    """Readings of every file and the markers, in time order; ties keep the files' order."""
    streams: list[Iterable[_Item]] = []
    for source in sources:
        stream = _valid(source, roster)
        streams.append(stream if source.in_order else sorted(stream, key=lambda item: item[0]))
    streams.append(markers)
    return heapq.merge(*streams, key=lambda item: (item[0], item[1]))


def _valid(source: _Source, roster: _Roster) -> Iterator[_Item]:
    """The valid readings among the lines the first pass saw (their problems are reported)."""
    try:
        with source.path.open("rb") as file:
            for raw in itertools.islice(file, source.lines):
                reading = _parse(raw, Reading, roster)
                if not isinstance(reading, str):
                    yield (to_ms(reading.received_at), _READING, reading)
    except OSError as error:
        raise ReplayError(f"{source.path}: cannot read: {error.strerror or error}") from None


def _evaluate(
    pipelines: Mapping[str, DetectionPipeline],
    items: Iterator[_Item],
    sink: _Sink,
) -> None:
    """Feed each session's readings in chunks that never split an instant, markers in between.

    Time ends at each session's last input that detection took: a line dated years later is
    refused by the pipeline (:data:`MAX_SESSION_S`) and must not drag the end along with it.
    """
    buffers: dict[str, list[Reading]] = {session: [] for session in pipelines}
    for t_ms, _, item in items:
        pipeline = pipelines.get(item.session)
        if pipeline is None:  # the first pass saw no such session: the file was rewritten
            msg = f"the readings files changed during the replay (session {item.session} appeared)"
            raise ReplayError(msg)
        buffer = buffers[item.session]
        if isinstance(item, DoseMarker):
            sink(pipeline.feed(buffer))
            buffer.clear()
            with contextlib.suppress(FutureTimeError):  # counted by the pipeline
                sink(pipeline.mark_dose(item.participant, item.given_at))
            continue
        if len(buffer) >= _CHUNK and to_ms(buffer[-1].received_at) < t_ms:
            sink(pipeline.feed(buffer))
            buffer.clear()
        buffer.append(item)
    for session, pipeline in pipelines.items():
        sink(pipeline.feed(buffers[session]))
        if pipeline.time_ms is not None:
            sink(pipeline.advance_ms(pipeline.time_ms))


# -- output ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _alarms_writer(out: Path | None) -> Iterator[Callable[[AlarmEvent], None]]:
    """One line per event as it happens, so a long replay never holds its events in memory."""
    if out is None:
        yield lambda event: None
        return
    path = out / ALARMS_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        file = path.open("w", encoding="utf-8", newline="\n")
    except OSError as error:
        raise ReplayError(f"{path}: cannot write: {error.strerror or error}") from None

    def write(event: AlarmEvent) -> None:
        try:
            file.write(event.model_dump_json() + "\n")
        except OSError as error:
            raise ReplayError(f"{path}: cannot write: {error.strerror or error}") from None

    with file:
        yield write


def _at(t_ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=t_ms)

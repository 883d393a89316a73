"""The at-a-glance terminal view for session staff: latest vitals, trends, links and alarms.

:class:`LiveState` is pure: it is fed the same readings, device events and alarm snapshots the
service publishes and renders text for a given moment, so it can be tested without a terminal and
never reads a clock. :func:`run_live_view` is the only part that touches a terminal.

What is shown is what the models carry: pseudonymous participant codes, never names. A reading
that is not fit as alarm evidence is still shown, marked ``?``: hiding it would suggest the device
is silent when it is in fact sending doubtful values.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from monitor.clock import Clock
from monitor.config import SiteConfig
from monitor.models import (
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

__all__ = ["TREND_WINDOW", "LiveState", "run_live_view"]

TREND_WINDOW = dt.timedelta(minutes=10)
"""How far back a trend arrow looks."""

_HISTORY_STEP = dt.timedelta(seconds=5)  # thins 1 Hz heart rate so the history stays small
_HISTORY_LENGTH = 160  # > TREND_WINDOW / _HISTORY_STEP, so the window is always covered
_MIN_TREND_SPAN = dt.timedelta(seconds=60)  # two beats a second apart are not a trend
_CLEAR = "\x1b[2J\x1b[H"
_RESET = "\x1b[0m"
_PRIORITY_COLOR = {
    AlarmPriority.HIGH: "\x1b[1;31m",
    AlarmPriority.MEDIUM: "\x1b[33m",
    AlarmPriority.LOW: "\x1b[36m",
}
_PRIORITY_MARK = {AlarmPriority.HIGH: "!!!", AlarmPriority.MEDIUM: "!!", AlarmPriority.LOW: "!"}
_PRIORITY_LABEL = {
    AlarmPriority.HIGH: "HIGH",
    AlarmPriority.MEDIUM: "MED",
    AlarmPriority.LOW: "LOW",
}
_STATE_ORDER = {"active": 0, "latched": 1, "acknowledged": 2, "pending": 3}
_SHOWN_STATES = frozenset({AlarmState.PENDING, AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED})
_BAD_LINKS = frozenset({DeviceState.LOST, DeviceState.RECONNECTING, DeviceState.STOPPED})
_DEVICE_LABEL = {
    DeviceKind.HEART_RATE: "HR",
    DeviceKind.BLOOD_PRESSURE: "BP",
    DeviceKind.THERMOMETER: "Temp",
    DeviceKind.PULSE_OXIMETER: "SpO2",
}
# Conditions a device reports and later clears; shown beside its link state until cleared.
_RAISES = {
    DeviceEventType.NO_DATA: "no data",
    DeviceEventType.SENSOR_CONTACT_LOST: "no contact",
    DeviceEventType.MALFORMED_RATE_HIGH: "garbled",
}
_CLEARS = {
    DeviceEventType.DATA_RESUMED: "no data",
    DeviceEventType.SENSOR_CONTACT_RESTORED: "no contact",
}
# Flags about the timestamp rather than the value do not make the value doubtful.
_NOT_DOUBTFUL = frozenset({QualityFlag.DEVICE_CLOCK_NOT_SET})


@dataclass(frozen=True, slots=True)
class _Vital:
    label: str
    ascii_label: str
    kind: ReadingKind
    parameters: tuple[Parameter, ...]  # shown joined by '/'; the first one drives the trend
    decimals: int
    trend_per_window: float  # a change over TREND_WINDOW this large earns an arrow


_VITALS = (
    _Vital("HR bpm", "HR bpm", ReadingKind.HEART_RATE, (Parameter.HEART_RATE,), 0, 10.0),
    _Vital(
        "BP mmHg",
        "BP mmHg",
        ReadingKind.BLOOD_PRESSURE,
        (Parameter.SYSTOLIC_BP, Parameter.DIASTOLIC_BP),
        0,
        10.0,
    ),
    _Vital("Temp °C", "Temp degC", ReadingKind.TEMPERATURE, (Parameter.TEMPERATURE,), 1, 0.3),
    _Vital("SpO2 %", "SpO2 %", ReadingKind.SPO2, (Parameter.SPO2,), 0, 2.0),
)
_VITAL_BY_KIND = {vital.kind: vital for vital in _VITALS}


@dataclass(frozen=True, slots=True)
class _Latest:
    values: tuple[float | None, ...]
    at: dt.datetime
    doubtful: bool


@dataclass(slots=True)
class _Link:
    kind: DeviceKind
    state: DeviceState = DeviceState.SEARCHING
    since: dt.datetime | None = None
    battery: float | None = None
    conditions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Participant:
    session: str
    code: str
    devices: tuple[str, ...]
    latest: dict[ReadingKind, _Latest] = field(default_factory=dict)
    history: dict[ReadingKind, deque[tuple[dt.datetime, float]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Style:
    width: int
    color: bool
    ascii_only: bool

    @property
    def ellipsis(self) -> str:
        return "~" if self.ascii_only else "…"

    def arrow(self, trend: int | None) -> str:
        if trend is None:
            return " "
        return ("v", "-", "^")[trend + 1] if self.ascii_only else ("↓", "→", "↑")[trend + 1]


_Segment = tuple[str, str | None]  # text and the ANSI colour it is shown in


def _when(reading: Reading) -> dt.datetime:
    """When the value was measured; the receive time when the device clock cannot be trusted."""
    if reading.measured_at is not None and QualityFlag.DEVICE_CLOCK_NOT_SET not in reading.quality:
        return reading.measured_at
    return reading.received_at


def _age(now: dt.datetime, then: dt.datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _alarm_state(alarm: AlarmEvent) -> str:
    if alarm.state is AlarmState.ACTIVE and alarm.condition_cleared:
        return "latched"
    return alarm.state.value


def _alarm_order(alarm: AlarmEvent) -> tuple[int, int, dt.datetime, str]:
    """Highest priority first, then what still needs a person, then the oldest."""
    return (-alarm.priority.rank, _STATE_ORDER[_alarm_state(alarm)], alarm.raised_at, alarm.rule)


def _trend(points: deque[tuple[dt.datetime, float]], now: dt.datetime, vital: _Vital) -> int | None:
    """-1, 0 or +1 from a least-squares slope over the window; None without enough data."""
    start = now - TREND_WINDOW
    window = [(t, v) for t, v in points if start <= t <= now]
    if len(window) < 2 or window[-1][0] - window[0][0] < _MIN_TREND_SPAN:
        return None
    xs = [(t - window[0][0]).total_seconds() for t, _ in window]
    ys = [v for _, v in window]
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    change = slope * TREND_WINDOW.total_seconds()
    if change >= vital.trend_per_window:
        return 1
    if change <= -vital.trend_per_window:
        return -1
    return 0


def _finish(segments: Sequence[_Segment], style: _Style) -> str:
    """Cut to the width on the visible text, then colour, so no escape sequence is ever cut."""
    over = sum(len(text) for text, _ in segments) > style.width
    room = style.width - 1 if over else style.width
    pieces: list[_Segment] = []
    for text, colour in segments:
        shown = text[: max(room, 0)]
        room -= len(shown)
        pieces.append((shown, colour))
    if over:
        pieces.append((style.ellipsis, None))
    while pieces and not pieces[-1][0].rstrip():
        pieces.pop()
    if pieces:
        pieces[-1] = (pieces[-1][0].rstrip(), pieces[-1][1])
    return "".join(
        f"{colour}{text}{_RESET}" if style.color and colour is not None else text
        for text, colour in pieces
    )


def _wrap(items: Sequence[str], first: str, indent: int, width: int) -> list[str]:
    """Pack items into lines of at most ``width``, so no device drops off a narrow screen."""
    lines: list[str] = []
    line = first
    fresh = True
    for item in items:
        candidate = line + item if fresh else f"{line}  {item}"
        if len(candidate) > width and not fresh:
            lines.append(line)
            candidate = " " * indent + item
        line = candidate
        fresh = False
    lines.append(line)
    return lines


class LiveState:
    """Latest vitals, short trends, links and active alarms of every configured participant.

    Readings, device events and alarms for participants or devices the configuration does not name
    are not shown in the tables; alarms of that kind are still listed at the end, because an alarm
    must never vanish from a screen staff rely on.
    """

    def __init__(self, config: SiteConfig) -> None:
        self._config = config
        self._participants: dict[str, _Participant] = {}
        self._links: dict[str, _Link] = {}
        for session in config.sessions:
            for participant in session.participants:
                self._participants[participant.code] = _Participant(
                    session.id, participant.code, tuple(d.id for d in participant.devices)
                )
                for device in participant.devices:
                    self._links[device.id] = _Link(device.kind)
        self._alarms: dict[str, tuple[AlarmEvent, ...]] = {}

    # --- inputs ---------------------------------------------------------------------------------

    def on_reading(self, reading: Reading) -> None:
        if reading.kind is ReadingKind.BATTERY:
            link = self._links.get(reading.device)
            battery = reading.values.get(Parameter.BATTERY)
            if link is not None and battery is not None:
                link.battery = battery
            return
        vital = _VITAL_BY_KIND.get(reading.kind)
        participant = self._participants.get(reading.participant)
        if vital is None or participant is None:
            return
        at = _when(reading)
        previous = participant.latest.get(reading.kind)
        if previous is not None and at < previous.at:
            return  # a stored measurement uploaded late is history, not the latest value
        values = tuple(reading.values.get(p) for p in vital.parameters)
        doubtful = not reading.usable or bool(reading.quality - _NOT_DOUBTFUL)
        participant.latest[reading.kind] = _Latest(values, at, doubtful)
        lead = values[0]
        if not reading.usable or lead is None or not math.isfinite(lead):
            return
        history = participant.history.setdefault(reading.kind, deque(maxlen=_HISTORY_LENGTH))
        if not history or at - history[-1][0] >= _HISTORY_STEP:
            history.append((at, lead))

    def on_device_event(self, event: DeviceEvent) -> None:
        link = self._links.get(event.device)
        if link is None:
            return
        if event.state is not link.state or link.since is None:
            link.state = event.state
            link.since = event.occurred_at
        if event.battery_percent is not None:
            link.battery = event.battery_percent
        if (raised := _RAISES.get(event.event)) is not None and raised not in link.conditions:
            link.conditions.append(raised)
        if (cleared := _CLEARS.get(event.event)) is not None and cleared in link.conditions:
            link.conditions.remove(cleared)
        if event.state is DeviceState.CONNECTED and event.event is DeviceEventType.STATE_CHANGED:
            link.conditions.clear()

    def on_alarms(self, session: str, active: Sequence[AlarmEvent]) -> None:
        self._alarms[session] = tuple(a for a in active if a.state in _SHOWN_STATES)

    # --- output ---------------------------------------------------------------------------------

    def render(
        self, now: dt.datetime, width: int = 100, color: bool = False, *, ascii_only: bool = False
    ) -> str:
        """One screenful for ``now``; no line is longer than ``width`` visible characters."""
        style = _Style(max(width, 20), color, ascii_only)
        zone = self._config.site.zone
        local = now.astimezone(zone)
        out = [
            _finish(
                [(f"Live vitals  site {self._config.site.code}  {local:%H:%M:%S} {zone}", None)],
                style,
            )
        ]
        shown: set[str] = set()
        code_width = max([len("Participant"), *(len(code) for code in self._participants)])
        for room in self._config.rooms:
            sessions = [s for s in self._config.sessions if s.room == room.id]
            out.append("")
            if not sessions:
                out.append(_finish([(f"Room {room.id}  no session", None)], style))
            for session in sessions:
                title = f"Room {room.id}  session {session.id} ({session.protocol})"
                out.append(_finish([(title, None)], style))
                labels = [v.ascii_label if ascii_only else v.label for v in _VITALS]
                header = (
                    "    "
                    + "Participant".ljust(code_width)
                    + "".join(f"  {label:<15}" for label in labels)
                )
                out.append(_finish([(header, None)], style))
                alarms = self._alarms.get(session.id, ())
                for participant in session.participants:
                    mine = sorted(
                        (a for a in alarms if a.participant == participant.code), key=_alarm_order
                    )
                    shown.update(str(a.alarm_id) for a in mine)
                    out += self._participant_lines(
                        self._participants[participant.code], mine, now, code_width, style
                    )
        others = sorted(
            (a for alarms in self._alarms.values() for a in alarms if str(a.alarm_id) not in shown),
            key=_alarm_order,
        )
        if others:
            out += [
                "",
                _finish([("Alarms for participants not in the configuration", None)], style),
            ]
            out += [self._alarm_line(a, now, style, who=True) for a in others]
        return "\n".join(out)

    def _participant_lines(
        self,
        participant: _Participant,
        alarms: Sequence[AlarmEvent],
        now: dt.datetime,
        code_width: int,
        style: _Style,
    ) -> list[str]:
        top = alarms[0].priority if alarms else None
        mark = _PRIORITY_MARK[top] if top is not None else ""
        segments: list[_Segment] = [
            (f"{mark:>3} ", _PRIORITY_COLOR[top] if top is not None else None),
            (participant.code.ljust(code_width), None),
        ]
        for vital in _VITALS:
            segments.append((f"  {self._cell(participant, vital, now, style):<15}", None))
        lines = [_finish(segments, style)]
        items = [self._link_text(device, now) for device in participant.devices]
        wrapped = _wrap(items, "      links: ", 13, style.width)
        lines += [_finish([(line, None)], style) for line in wrapped]
        lines += [self._alarm_line(alarm, now, style, indent=6) for alarm in alarms]
        return lines

    def _cell(
        self, participant: _Participant, vital: _Vital, now: dt.datetime, style: _Style
    ) -> str:
        latest = participant.latest.get(vital.kind)
        if latest is None:
            return "--"
        value = "/".join(
            "--" if v is None or not math.isfinite(v) else f"{v:.{vital.decimals}f}"
            for v in latest.values
        )
        if latest.doubtful:
            value += "?"
        history = participant.history.get(vital.kind, deque())
        arrow = style.arrow(_trend(history, now, vital))
        return f"{value} {arrow} {_age(now, latest.at)}"

    def _link_text(self, device: str, now: dt.datetime) -> str:
        link = self._links[device]
        text = f"{_DEVICE_LABEL[link.kind]} "
        if link.state in _BAD_LINKS:
            text += link.state.value.upper()
            if link.since is not None:
                text += f" {_age(now, link.since)}"
        else:
            text += link.state.value
        if link.battery is not None:
            text += f" {link.battery:.0f}%"
        for condition in link.conditions:
            text += f" {condition.upper()}"
        return text

    def _alarm_line(
        self,
        alarm: AlarmEvent,
        now: dt.datetime,
        style: _Style,
        *,
        indent: int = 0,
        who: bool = False,
    ) -> str:
        local = alarm.raised_at.astimezone(self._config.site.zone)
        parts = [
            _PRIORITY_MARK[alarm.priority].ljust(3),
            _PRIORITY_LABEL[alarm.priority].ljust(4),
            _alarm_state(alarm),
            f"since {local:%H:%M:%S} ({_age(now, alarm.raised_at)})",
        ]
        if alarm.escalation_level:
            parts.append(f"esc {alarm.escalation_level}")
        if alarm.paused:
            parts.append("PAUSED")
        if who:
            parts.append(f"{alarm.session}/{alarm.participant}")
        text = " " * indent + "  ".join(parts) + f"  {alarm.rule}: {alarm.message}"
        return _finish([(text, _PRIORITY_COLOR[alarm.priority])], style)


def _encodes(stream: TextIO, text: str) -> bool:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 100


async def run_live_view(
    state: LiveState,
    clock: Clock,
    *,
    stream: TextIO,
    interval_s: float = 1.0,
    duration_s: float | None = None,
    color: bool | None = None,
) -> None:
    """Redraw the view in place until cancelled (or for ``duration_s`` of wall time).

    The refresh runs on real time even under an accelerated clock: it paces a screen, not a
    session; the ages it shows come from ``clock``. Nothing is drawn unless ``stream`` is a
    terminal, so a redirected log never fills with escape sequences. ``color=None`` colours unless
    ``NO_COLOR`` is set or the terminal is ``dumb``.
    """
    if not stream.isatty():
        return
    if interval_s <= 0:
        msg = f"interval_s must be positive, got {interval_s}"
        raise ValueError(msg)
    if color is None:
        color = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    ascii_only = not _encodes(stream, "↑↓→…°")
    loop = asyncio.get_running_loop()
    deadline = None if duration_s is None else loop.time() + duration_s
    try:
        while True:
            frame = state.render(
                clock.now(), width=_terminal_width(stream), color=color, ascii_only=ascii_only
            )
            stream.write(_CLEAR + frame)
            stream.flush()
            if deadline is None:
                await asyncio.sleep(interval_s)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(interval_s, remaining))
    finally:
        with contextlib.suppress(OSError, ValueError):
            stream.write("\n")
            stream.flush()

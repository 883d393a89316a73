"""The staff live view: what a render shows for a fixed site and synthetic inputs."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.config import SiteConfig, load_config
from monitor.live import LiveState, run_live_view
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

PROTOCOLS = Path(__file__).resolve().parent.parent / "config" / "protocols"
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)  # 10:00 in Europe/Zurich
SESSION = "S-1"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def devices(code: str) -> str:
    kinds = [("hr", "heart_rate"), ("bp", "blood_pressure"), ("temp", "thermometer")]
    kinds.append(("spo2", "pulse_oximeter"))
    return "".join(
        f'[[sessions.participants.devices]]\nid = "{short}-{code.lower()}"\nkind = "{kind}"\n'
        f'name_pattern = "SIM-{short.upper()}-{code}"\n'
        for short, kind in kinds
    )


@pytest.fixture
def config(tmp_path: Path) -> SiteConfig:
    text = (
        f'[site]\ncode = "TEST"\ntimezone = "Europe/Zurich"\nprotocols_dir = "{PROTOCOLS}"\n'
        '[[rooms]]\nid = "room-a"\nmax_connections = 8\n'
        '[[rooms]]\nid = "room-b"\n'
        f'[[sessions]]\nid = "{SESSION}"\nroom = "room-a"\nprotocol = "mdma"\n'
        f'[[sessions.participants]]\ncode = "P-001"\n{devices("P-001")}'
        f'[[sessions.participants]]\ncode = "P-002"\n{devices("P-002")}'
    )
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def reading(
    kind: ReadingKind,
    values: Mapping[Parameter, float | None],
    at: dt.datetime,
    *,
    participant: str = "P-001",
    quality: frozenset[QualityFlag] = frozenset(),
) -> Reading:
    short = {
        ReadingKind.HEART_RATE: "hr",
        ReadingKind.BLOOD_PRESSURE: "bp",
        ReadingKind.TEMPERATURE: "temp",
        ReadingKind.SPO2: "spo2",
    }.get(kind, "hr")
    return Reading(
        session=SESSION,
        participant=participant,
        device=f"{short}-{participant.lower()}",
        kind=kind,
        values=dict(values),
        received_at=at,
        quality=quality,
    )


def alarm(
    rule: str,
    priority: AlarmPriority,
    raised: dt.datetime,
    *,
    participant: str = "P-001",
    state: AlarmState = AlarmState.ACTIVE,
    sequence: int = 1,
    **extra: object,
) -> AlarmEvent:
    return AlarmEvent.model_validate(
        {
            "alarm_id": uuid.uuid4(),
            "session": SESSION,
            "participant": participant,
            "rule": rule,
            "priority": priority,
            "category": AlarmCategory.PHYSIOLOGICAL,
            "state": state,
            "message": f"{rule} condition",
            "raised_at": raised,
            "occurred_at": raised,
            "sequence": sequence,
            **extra,
        }
    )


def row(text: str, code: str) -> str:
    return next(line for line in text.splitlines() if f" {code} " in line)


def test_values_ages_and_units(config: SiteConfig) -> None:
    state = LiveState(config)
    state.on_reading(reading(ReadingKind.HEART_RATE, {Parameter.HEART_RATE: 72.0}, T0))
    bp = {
        Parameter.SYSTOLIC_BP: 121.0,
        Parameter.DIASTOLIC_BP: 79.0,
        Parameter.MEAN_ARTERIAL_BP: 93.0,
        Parameter.PULSE_RATE: 70.0,
    }
    state.on_reading(reading(ReadingKind.BLOOD_PRESSURE, bp, T0 - dt.timedelta(minutes=3)))
    state.on_reading(reading(ReadingKind.TEMPERATURE, {Parameter.TEMPERATURE: 36.84}, T0))
    state.on_reading(
        reading(ReadingKind.SPO2, {Parameter.SPO2: 97.6, Parameter.PULSE_RATE: 71.0}, T0)
    )
    text = state.render(T0 + dt.timedelta(seconds=5))
    lines = text.splitlines()
    assert lines[0] == "Live vitals  site TEST  10:00:05 Europe/Zurich"
    assert "Room room-a  session S-1 (mdma)" in lines
    assert "Room room-b  no session" in lines
    assert "HR bpm" in text
    assert "BP mmHg" in text
    assert "Temp °C" in text
    assert "SpO2 %" in text
    p1 = row(text, "P-001")
    assert "72   5s" in p1
    assert "121/79   3m" in p1
    assert "36.8   5s" in p1
    assert "98   5s" in p1
    assert row(text, "P-002").split()[1:] == ["--", "--", "--", "--"]


def test_trend_arrows_over_the_last_ten_minutes(config: SiteConfig) -> None:
    state = LiveState(config)
    for i in range(60):  # 10 minutes at one reading every 10 s
        at = T0 + dt.timedelta(seconds=10 * i)
        state.on_reading(reading(ReadingKind.HEART_RATE, {Parameter.HEART_RATE: 70.0 + i}, at))
        spo2 = {Parameter.SPO2: 99.0 - i / 10}
        state.on_reading(reading(ReadingKind.SPO2, spo2, at))
        temp = {Parameter.TEMPERATURE: 36.8 + (0.1 if i % 2 else 0.0)}
        state.on_reading(reading(ReadingKind.TEMPERATURE, temp, at))
    for i in range(120):  # P-002: 1 Hz heart rate, flat
        at = T0 + dt.timedelta(minutes=8, seconds=i)
        state.on_reading(
            reading(ReadingKind.HEART_RATE, {Parameter.HEART_RATE: 80.0}, at, participant="P-002")
        )
    now = T0 + dt.timedelta(seconds=595)
    p1 = row(state.render(now), "P-001")
    assert "129 ↑ 5s" in p1
    assert "93 ↓ 5s" in p1
    assert "36.9 → 5s" in p1
    assert "80 → 1s" in row(state.render(now + dt.timedelta(seconds=5)), "P-002")
    assert "129 ^ 5s" in row(state.render(now, ascii_only=True), "P-001")
    later = now + dt.timedelta(minutes=30)  # nothing in the window any more: no arrow
    assert "129   30m" in row(state.render(later), "P-001")


def test_alarms_sort_by_priority_with_markers(config: SiteConfig) -> None:
    state = LiveState(config)
    low = alarm("spo2-low-low", AlarmPriority.LOW, T0, sequence=1)
    medium = alarm(
        "sbp-rise", AlarmPriority.MEDIUM, T0 - dt.timedelta(minutes=1), sequence=2, paused=True
    )
    high_acked = alarm(
        "hr-high",
        AlarmPriority.HIGH,
        T0 - dt.timedelta(minutes=5),
        state=AlarmState.ACKNOWLEDGED,
        acknowledged_by="staff-1",
        acknowledged_at=T0,
        sequence=3,
    )
    high_latched = alarm(
        "temp-high",
        AlarmPriority.HIGH,
        T0 - dt.timedelta(minutes=2),
        condition_cleared=True,
        escalation_level=1,
        sequence=4,
    )
    resolved = alarm("old", AlarmPriority.HIGH, T0, state=AlarmState.RESOLVED, sequence=5)
    state.on_alarms(SESSION, [low, medium, high_acked, high_latched, resolved])
    lines = state.render(T0 + dt.timedelta(seconds=30)).splitlines()
    start = lines.index(next(line for line in lines if " P-001 " in line))
    assert lines[start].startswith("!!! P-001")
    alarm_lines = [line.strip() for line in lines[start + 2 : start + 6]]
    assert alarm_lines == [
        "!!!  HIGH  latched  since 09:58:00 (2m)  esc 1  temp-high: temp-high condition",
        "!!!  HIGH  acknowledged  since 09:55:00 (5m)  hr-high: hr-high condition",
        "!!   MED   active  since 09:59:00 (1m)  PAUSED  sbp-rise: sbp-rise condition",
        "!    LOW   active  since 10:00:00 (30s)  spo2-low-low: spo2-low-low condition",
    ]
    assert "old condition" not in "\n".join(lines)
    assert row("\n".join(lines), "P-002").startswith("    P-002")

    state.on_alarms(SESSION, [low])  # the full set replaces the previous one
    assert row(state.render(T0), "P-001").startswith("  ! P-001")
    assert "temp-high" not in state.render(T0)


def test_colour_marks_priorities(config: SiteConfig) -> None:
    state = LiveState(config)
    state.on_alarms(
        SESSION,
        [
            alarm("a-high", AlarmPriority.HIGH, T0, sequence=1),
            alarm("b-med", AlarmPriority.MEDIUM, T0, sequence=2, participant="P-002"),
            alarm("c-low", AlarmPriority.LOW, T0, sequence=3, participant="P-002"),
        ],
    )
    text = state.render(T0, color=True)
    assert "\x1b[1;31m" in next(line for line in text.splitlines() if "a-high" in line)
    assert "\x1b[33m" in next(line for line in text.splitlines() if "b-med" in line)
    assert "\x1b[36m" in next(line for line in text.splitlines() if "c-low" in line)
    assert "!!!" in text  # markers stay for staff who cannot tell the colours apart
    assert ANSI.sub("", text) == state.render(T0)
    assert "\x1b" not in state.render(T0)


def test_an_unusable_reading_is_shown_marked(config: SiteConfig) -> None:
    state = LiveState(config)
    state.on_reading(reading(ReadingKind.HEART_RATE, {Parameter.HEART_RATE: 70.0}, T0))
    state.on_reading(
        reading(
            ReadingKind.HEART_RATE,
            {Parameter.HEART_RATE: 180.0},
            T0 + dt.timedelta(seconds=2),
            quality=frozenset({QualityFlag.SENSOR_CONTACT_LOST}),
        )
    )
    state.on_reading(
        reading(
            ReadingKind.SPO2,
            {Parameter.SPO2: None},
            T0,
            quality=frozenset({QualityFlag.VALUE_UNUSABLE}),
        )
    )
    state.on_reading(
        reading(
            ReadingKind.TEMPERATURE,
            {Parameter.TEMPERATURE: 36.5},
            T0,
            quality=frozenset({QualityFlag.DEVICE_CLOCK_NOT_SET}),
        )
    )
    p1 = row(state.render(T0 + dt.timedelta(seconds=4)), "P-001")
    assert "180?   2s" in p1
    assert "--?   4s" in p1
    assert "36.5   4s" in p1


def test_device_links_lost_and_battery(config: SiteConfig) -> None:
    state = LiveState(config)

    def event(
        device: str,
        kind: DeviceKind,
        what: DeviceEventType,
        st: DeviceState,
        at: float,
        **extra: object,
    ) -> DeviceEvent:
        return DeviceEvent.model_validate(
            {
                "session": SESSION,
                "participant": "P-001",
                "device": device,
                "device_kind": kind,
                "event": what,
                "state": st,
                "occurred_at": T0 + dt.timedelta(seconds=at),
                **extra,
            }
        )

    changed = DeviceEventType.STATE_CHANGED
    state.on_device_event(
        event("hr-p-001", DeviceKind.HEART_RATE, changed, DeviceState.CONNECTED, 0)
    )
    state.on_reading(reading(ReadingKind.BATTERY, {Parameter.BATTERY: 85.0}, T0))
    state.on_device_event(
        event(
            "bp-p-001",
            DeviceKind.BLOOD_PRESSURE,
            changed,
            DeviceState.CONNECTED,
            0,
            battery_percent=40.0,
        )
    )
    state.on_device_event(
        event("bp-p-001", DeviceKind.BLOOD_PRESSURE, changed, DeviceState.LOST, 10)
    )
    state.on_device_event(
        event(
            "bp-p-001",
            DeviceKind.BLOOD_PRESSURE,
            DeviceEventType.CONNECT_FAILED,
            DeviceState.LOST,
            60,
        )
    )
    state.on_device_event(
        event("spo2-p-001", DeviceKind.PULSE_OXIMETER, changed, DeviceState.CONNECTED, 0)
    )
    state.on_device_event(
        event(
            "spo2-p-001",
            DeviceKind.PULSE_OXIMETER,
            DeviceEventType.SENSOR_CONTACT_LOST,
            DeviceState.CONNECTED,
            5,
        )
    )
    text = state.render(T0 + dt.timedelta(seconds=130))
    links = next(line for line in text.splitlines() if "links:" in line)
    assert links.strip() == (
        "links: HR connected 85%  BP LOST 2m 40%  Temp searching  SpO2 connected NO CONTACT"
    )
    state.on_device_event(
        event(
            "spo2-p-001",
            DeviceKind.PULSE_OXIMETER,
            DeviceEventType.SENSOR_CONTACT_RESTORED,
            DeviceState.CONNECTED,
            140,
        )
    )
    assert "NO CONTACT" not in state.render(T0 + dt.timedelta(seconds=150))


@pytest.mark.parametrize("width", [40, 60, 100])
def test_width_is_respected(config: SiteConfig, width: int) -> None:
    state = LiveState(config)
    state.on_reading(reading(ReadingKind.HEART_RATE, {Parameter.HEART_RATE: 72.0}, T0))
    long_message = "heart rate far above the limit for a long while " * 5
    state.on_alarms(
        SESSION,
        [alarm("hr-high", AlarmPriority.HIGH, T0, message=long_message)],
    )
    for color in (False, True):
        text = state.render(T0, width=width, color=color)
        assert all(len(ANSI.sub("", line)) <= width for line in text.splitlines())
    plain = state.render(T0, width=width)
    assert any(line.endswith("…") for line in plain.splitlines())
    for device in ("HR", "BP", "Temp", "SpO2"):  # links wrap rather than fall off
        assert re.search(rf"\b{device} searching", plain)


def test_alarms_outside_the_configuration_are_still_listed(config: SiteConfig) -> None:
    state = LiveState(config)
    state.on_alarms(SESSION, [alarm("x", AlarmPriority.MEDIUM, T0, participant="P-999")])
    text = state.render(T0)
    assert "Alarms for participants not in the configuration" in text
    assert "S-1/P-999" in text


class FakeTerminal(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self.tty = tty
        self.frames = 0
        self.drawn = asyncio.Event()

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        if text.startswith("\x1b[2J"):
            self.frames += 1
            if self.frames >= 2:
                self.drawn.set()
        return super().write(text)


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_live_view_redraws_on_a_terminal_and_ends_with_a_newline(
    config: SiteConfig,
) -> None:
    state = LiveState(config)
    clock = ManualClock(T0)
    terminal = FakeTerminal(tty=True)
    task = asyncio.create_task(
        run_live_view(state, clock, stream=terminal, interval_s=0.01, color=False)
    )
    await terminal.drawn.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    output = terminal.getvalue()
    assert output.startswith("\x1b[2J\x1b[H")
    assert "Live vitals  site TEST  10:00:00" in output
    assert output.endswith("\n")

    finite = FakeTerminal(tty=True)
    await run_live_view(state, clock, stream=finite, interval_s=0.01, duration_s=0.05)
    assert finite.frames >= 2
    assert finite.getvalue().endswith("\n")


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_live_view_draws_nothing_when_not_a_terminal(config: SiteConfig) -> None:
    redirected = FakeTerminal(tty=False)
    await run_live_view(LiveState(config), ManualClock(T0), stream=redirected, duration_s=5)
    assert redirected.getvalue() == ""

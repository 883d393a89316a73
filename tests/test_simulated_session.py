"""Scenario-driven wearables through the production connector: what was sent is what was decoded.

Most tests drive session time with a ``ManualClock`` shared by the wearables and the connector:
after every step the test waits (on the connector's callbacks, never on a timer) until every
delivered reading is decoded and every reachable wearable is connected again. The session then
behaves as on an infinitely fast radio, so a loaded CI machine changes how long a test takes, never
what it sees. The real-time path runs at x60 in ``tests/test_twenty_devices.py`` and below.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import math
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from bumble.controller import Controller
from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

from monitor.clock import AcceleratedClock, ManualClock
from monitor.devices.connector import BleBackend, Connector, ConnectorSettings, DeviceBinding
from monitor.devices.readings import DeviceIdentity
from monitor.models import (
    DeviceEvent,
    DeviceEventType,
    DeviceKind,
    DeviceState,
    Parameter,
    QualityFlag,
    Reading,
    ReadingKind,
)
from simulators.physiology import ArtefactKind
from simulators.radio import VirtualRadio
from simulators.radio.peripheral import HciTransport
from simulators.scenario import Scenario, SessionModel, device_name, load_scenario
from simulators.session import (
    CUFF_INFLATION_STEPS,
    CUFF_OVERPRESSURE_MMHG,
    CUFF_RESULT_AFTER_S,
    Delivery,
    SimulatedSession,
)

pytestmark = pytest.mark.ble

UTC = ZoneInfo("UTC")
WAIT_S = 15.0  # bound for the receiver to catch up after one step; it takes milliseconds
CLOCK_START = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
BATTERY_LEVEL = 0x2A19
CHARACTERISTIC_OF: dict[ReadingKind, int] = {
    ReadingKind.HEART_RATE: 0x2A37,
    ReadingKind.BLOOD_PRESSURE: 0x2A35,
    ReadingKind.CUFF_PRESSURE: 0x2A36,
    ReadingKind.TEMPERATURE: 0x2A1C,
    ReadingKind.INTERMEDIATE_TEMPERATURE: 0x2A1E,
    ReadingKind.SPO2: 0x2A5F,
    ReadingKind.BATTERY: BATTERY_LEVEL,
}
MEASUREMENTS_OF: dict[DeviceKind, tuple[ReadingKind, ...]] = {
    DeviceKind.HEART_RATE: (ReadingKind.HEART_RATE,),
    DeviceKind.BLOOD_PRESSURE: (ReadingKind.BLOOD_PRESSURE, ReadingKind.CUFF_PRESSURE),
    DeviceKind.THERMOMETER: (ReadingKind.TEMPERATURE, ReadingKind.INTERMEDIATE_TEMPERATURE),
    DeviceKind.PULSE_OXIMETER: (ReadingKind.SPO2,),
}


@dataclass
class Collector:
    """What the connector emits, by device id; waiting wakes on every callback (no polling)."""

    readings: dict[str, list[Reading]] = field(default_factory=lambda: defaultdict(list))
    events: list[DeviceEvent] = field(default_factory=list)
    states: dict[str, DeviceState] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_reading(self, reading: Reading) -> None:
        self.readings[reading.device].append(reading)
        self.changed.set()

    def on_event(self, event: DeviceEvent) -> None:
        self.events.append(event)
        if event.event is DeviceEventType.STATE_CHANGED:
            self.states[event.device] = event.state
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def of(self, device: str, kind: ReadingKind) -> list[Reading]:
        return [r for r in self.readings[device] if r.kind is kind]

    def events_of(self, device: str, event: DeviceEventType) -> list[DeviceEvent]:
        return [e for e in self.events if e.device == device and e.event is event]


def bindings_for(session: SimulatedSession) -> list[DeviceBinding]:
    """Bind every wearable of the session by its advertised name, as a site config would."""
    return [
        DeviceBinding(
            identity=DeviceIdentity(
                session="SIM-1", participant=code, device=device_name(kind, code), timezone=UTC
            ),
            kind=kind,
            name_pattern=device_name(kind, code),
        )
        for code, kind in session.keys
    ]


@contextlib.asynccontextmanager
async def connector_running(
    radio: VirtualRadio,
    session: SimulatedSession,
    collector: Collector,
    clock: AcceleratedClock | ManualClock,
    max_links: int = 8,
) -> AsyncIterator[Connector]:
    connector = Connector(
        bindings_for(session),
        collector.on_reading,
        collector.on_event,
        clock=clock,
        backend=BleBackend(scanner=radio.scanner_backend, client=radio.client_backend),
        settings=ConnectorSettings(connect_timeout_s=10.0, max_links=max_links),
    )
    task = asyncio.create_task(connector.run())
    try:
        yield connector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def deliveries(session: SimulatedSession, code: str, kind: DeviceKind, uuid: int) -> list[Delivery]:
    return [d for d in session.log[(code, kind)] if d.characteristic == uuid]


def decoded_everything(session: SimulatedSession, collector: Collector) -> bool:
    """Every reading any wearable delivered has come out of the connector."""
    for (code, kind), counts in session.delivered.items():
        device = device_name(kind, code)
        for reading_kind in MEASUREMENTS_OF[kind]:
            if len(collector.of(device, reading_kind)) < counts[CHARACTERISTIC_OF[reading_kind]]:
                return False
    return True


def connects(collector: Collector, device: str) -> int:
    return sum(
        e.state is DeviceState.CONNECTED
        for e in collector.events_of(device, DeviceEventType.STATE_CHANGED)
    )


def assert_nothing_lost(session: SimulatedSession, collector: Collector) -> None:
    """Per wearable and characteristic, the readings are exactly the deliveries, in order.

    Battery readings also include the one read at every connect.
    """
    for (code, kind), counts in session.delivered.items():
        device = device_name(kind, code)
        for reading_kind in MEASUREMENTS_OF[kind]:
            uuid = CHARACTERISTIC_OF[reading_kind]
            readings = collector.of(device, reading_kind)
            sent = deliveries(session, code, kind, uuid)
            assert len(readings) == counts[uuid] == len(sent), (device, reading_kind)
            assert [r.values for r in readings] == [dict(d.values) for d in sent], device
            assert [r.quality for r in readings] == [d.quality for d in sent], device
            assert [r.measured_at for r in readings] == [d.measured_at for d in sent], device
        battery = collector.of(device, ReadingKind.BATTERY)
        assert len(battery) == counts[BATTERY_LEVEL] + connects(collector, device), device


def settled(session: SimulatedSession, collector: Collector) -> bool:
    """Everything delivered is decoded, and every wearable in range is connected."""
    if not decoded_everything(session, collector):
        return False
    now_s = session.now_s()
    for code, kind in session.keys:
        reachable = session.models[code].device_state(kind, now_s).connected
        if reachable and collector.states.get(device_name(kind, code)) is not DeviceState.CONNECTED:
            return False
    return True


async def drive(
    clock: ManualClock, session: SimulatedSession, collector: Collector, step_s: float = 1.0
) -> None:
    """Step session time to the end of the window, letting the receiver settle after each step."""
    await collector.wait_for(lambda: settled(session, collector), WAIT_S)
    while session.now_s() < session.end_s:
        await clock.advance(step_s)
        await collector.wait_for(lambda: settled(session, collector), WAIT_S)
    async with asyncio.timeout(WAIT_S):
        await session.wait()
    await collector.wait_for(lambda: decoded_everything(session, collector), WAIT_S)


async def run_window(
    scenario: Scenario,
    clock: AcceleratedClock | ManualClock,
    *,
    end_s: float,
    start_s: float = 0.0,
    participants: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
    max_links: int = 8,
    session_timeout_s: float = 60.0,
) -> tuple[SimulatedSession, Collector, Connector]:
    """Run ``[start_s, end_s)`` of a scenario through the connector until everything is decoded.

    A ``ManualClock`` is stepped by :func:`drive`; an ``AcceleratedClock`` runs on its own.
    """
    collector = Collector()
    async with VirtualRadio() as radio:
        session = SimulatedSession(
            scenario,
            radio,
            clock,
            participants=participants,
            devices=devices,
            start_s=start_s,
            end_s=end_s,
        )
        async with (
            session,
            connector_running(radio, session, collector, clock, max_links) as connector,
        ):
            if isinstance(clock, ManualClock):
                await drive(clock, session, collector)
            else:
                async with asyncio.timeout(session_timeout_s):
                    await session.wait()
                await collector.wait_for(lambda: decoded_everything(session, collector), WAIT_S)
    return session, collector, connector


def consecutive(times: list[float], step_s: float) -> bool:
    return all(math.isclose(b - a, step_s) for a, b in itertools.pairwise(times))


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_mdma_typical_readings_match_what_was_sent_and_the_true_vitals() -> None:
    window_s = 25 * 60
    session, collector, connector = await run_window(
        load_scenario("mdma-typical"), ManualClock(CLOCK_START), end_s=window_s
    )

    assert len(session.wearables) == 8
    for code, kind in session.keys:
        device = device_name(kind, code)
        assert connects(collector, device) == 1, device
        for reading_kind in MEASUREMENTS_OF[kind]:
            assert collector.of(device, reading_kind), (device, reading_kind)
        assert collector.of(device, ReadingKind.BATTERY), device
    assert_nothing_lost(session, collector)
    assert connector.stats.dropped == 0
    assert connector.stats.malformed == 0

    # The first reading of a battery is read at connect: the scenario's level at that time.
    assert collector.of("SIM-HR-P-001", ReadingKind.BATTERY)[0].values == {Parameter.BATTERY: 95.0}
    assert collector.of("SIM-SPO2-P-002", ReadingKind.BATTERY)[0].values == {
        Parameter.BATTERY: 90.0
    }
    # 3 %/h from 90 %: 89 % at 20 min, notified as it happens.
    assert collector.of("SIM-SPO2-P-002", ReadingKind.BATTERY)[-1].values == {
        Parameter.BATTERY: 89.0
    }

    for code, model in session.models.items():
        assert not [e for e in model.artefacts if e.kind is ArtefactKind.MOTION_SPIKE]
        # Once connected, not one 1 Hz sample is skipped, up to the end of the window.
        for kind, uuid in ((DeviceKind.HEART_RATE, 0x2A37), (DeviceKind.PULSE_OXIMETER, 0x2A5F)):
            times = [d.t_s for d in deliveries(session, code, kind, uuid)]
            assert times[0] <= 1.0
            assert times[-1] == window_s - 1
            assert consecutive(times, 1.0), (code, kind)

        # What was sent is the model's truth at that instant, within the on-air rounding.
        for delivery in deliveries(session, code, DeviceKind.HEART_RATE, 0x2A37):
            true = model.vitals(delivery.t_s)
            assert delivery.values[Parameter.HEART_RATE] == pytest.approx(
                true.heart_rate_bpm, abs=0.5
            )
        blood_pressures = deliveries(session, code, DeviceKind.BLOOD_PRESSURE, 0x2A35)
        assert [d.t_s for d in blood_pressures] == [
            start + CUFF_RESULT_AFTER_S for start in (0.0, 600.0, 1200.0)
        ]
        for delivery in blood_pressures:
            true = model.vitals(delivery.t_s)
            assert delivery.values[Parameter.SYSTOLIC_BP] == pytest.approx(
                true.systolic_mmhg, abs=0.5
            )
            assert delivery.values[Parameter.DIASTOLIC_BP] == pytest.approx(
                true.diastolic_mmhg, abs=0.5
            )
            assert delivery.values[Parameter.PULSE_RATE] == pytest.approx(
                true.heart_rate_bpm, abs=0.5
            )
            assert delivery.measured_at == session.wall_time(delivery.t_s).replace(microsecond=0)
        cuff_pressures = deliveries(session, code, DeviceKind.BLOOD_PRESSURE, 0x2A36)
        assert len(cuff_pressures) >= 2 * len(CUFF_INFLATION_STEPS)
        for delivery in cuff_pressures:
            start_s, offset_s = divmod(delivery.t_s, 600.0)
            fraction = dict(CUFF_INFLATION_STEPS)[offset_s]
            target = model.vitals(start_s * 600.0).systolic_mmhg + CUFF_OVERPRESSURE_MMHG
            assert delivery.values[Parameter.CUFF_PRESSURE] == pytest.approx(
                target * fraction, abs=0.5
            )
        finals = deliveries(session, code, DeviceKind.THERMOMETER, 0x2A1C)
        intermediates = deliveries(session, code, DeviceKind.THERMOMETER, 0x2A1E)
        assert consecutive([d.t_s for d in finals], 30.0)
        assert len(finals) >= window_s // 30 - 1
        assert len(intermediates) >= 2 * len(finals)
        for delivery in finals + intermediates:
            true = model.vitals(delivery.t_s)
            assert delivery.values[Parameter.TEMPERATURE] == pytest.approx(
                true.core_temperature_c, abs=0.005 + 1e-9
            )
        for delivery in finals:
            assert delivery.measured_at == session.wall_time(delivery.t_s).replace(microsecond=0)
        for delivery in deliveries(session, code, DeviceKind.PULSE_OXIMETER, 0x2A5F):
            true = model.vitals(delivery.t_s)
            assert delivery.values[Parameter.SPO2] == pytest.approx(true.spo2_percent, abs=0.5)
            assert delivery.values[Parameter.PULSE_RATE] == pytest.approx(
                true.heart_rate_bpm, abs=0.5
            )


DROPOUT_SCENARIO = """
name = "short-dropout"
description = "A chest strap that slips off, then walks out of range; a finger sensor that slips."
duration_s = 14400
site = "sim-clinic"

[[rooms]]
id = "room-1"

[[participants]]
code = "P-001"
room = "room-1"
protocol = "mdma"
seed = 1021
devices = ["heart_rate", "pulse_oximeter"]

[[participants.artefacts]]
kind = "contact_loss"
device = "heart_rate"
at_s = [60]
duration_s = 60

[[participants.artefacts]]
kind = "contact_loss"
device = "pulse_oximeter"
at_s = [90]
duration_s = 30

[[participants.artefacts]]
kind = "disconnect"
device = "heart_rate"
at_s = [180]
duration_s = 120
"""


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_contact_loss_and_a_disconnect_reach_the_connector(tmp_path: Path) -> None:
    path = tmp_path / "short-dropout.toml"
    path.write_text(DROPOUT_SCENARIO, encoding="utf-8")
    session, collector, connector = await run_window(
        load_scenario(path), ManualClock(CLOCK_START), end_s=360
    )
    assert_nothing_lost(session, collector)
    assert connector.stats.dropped == 0

    strap, oximeter = "SIM-HR-P-001", "SIM-SPO2-P-001"
    hr = deliveries(session, "P-001", DeviceKind.HEART_RATE, 0x2A37)
    lost_contact = [d for d in hr if QualityFlag.SENSOR_CONTACT_LOST in d.quality]
    assert [d.t_s for d in lost_contact] == [float(t) for t in range(60, 120)]
    assert all(d.values[Parameter.HEART_RATE] is not None for d in lost_contact)  # values go on
    contact_events = [
        e.event
        for e in collector.events
        if e.device == strap
        and e.event
        in (DeviceEventType.SENSOR_CONTACT_LOST, DeviceEventType.SENSOR_CONTACT_RESTORED)
    ]
    assert contact_events == [
        DeviceEventType.SENSOR_CONTACT_LOST,
        DeviceEventType.SENSOR_CONTACT_RESTORED,
    ]

    finger_out = [
        r
        for r in collector.of(oximeter, ReadingKind.SPO2)
        if QualityFlag.SENSOR_CONTACT_LOST in r.quality
    ]
    assert len(finger_out) == 30
    assert all(r.values == {Parameter.SPO2: None, Parameter.PULSE_RATE: None} for r in finger_out)
    assert len(collector.events_of(oximeter, DeviceEventType.SENSOR_CONTACT_LOST)) == 1
    assert len(collector.events_of(oximeter, DeviceEventType.SENSOR_CONTACT_RESTORED)) == 1

    # The strap is unreachable for 120 s: nothing sent, then a reconnect that reports the gap.
    assert not [d for d in hr if 180 <= d.t_s < 300]
    # Back in range at 300 s: the sample taken while it reconnects is lost, the rest arrive.
    assert [d.t_s for d in hr if d.t_s >= 300] == [float(t) for t in range(301, 360)]
    states = [
        e.state
        for e in collector.events_of(strap, DeviceEventType.STATE_CHANGED)
        if e.state in (DeviceState.CONNECTED, DeviceState.LOST)
    ]
    assert states == [DeviceState.CONNECTED, DeviceState.LOST, DeviceState.CONNECTED]
    reconnected = [
        e
        for e in collector.events_of(strap, DeviceEventType.STATE_CHANGED)
        if e.state is DeviceState.CONNECTED
    ][-1]
    assert reconnected.gap_s == pytest.approx(121.0, abs=1.0)  # last reading at 179 s
    assert collector.events_of(strap, DeviceEventType.NO_DATA)  # silent while out of range
    assert connects(collector, oximeter) == 1


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_cuff_failures_are_sent_flagged_with_nan_values() -> None:
    scenario = load_scenario("artifacts")
    model = SessionModel(scenario, "P-002")
    failure = next(e for e in model.artefacts if e.kind is ArtefactKind.CUFF_FAILURE)
    session, collector, _ = await run_window(
        scenario,
        ManualClock(CLOCK_START),
        devices=["SIM-BP-P-002"],
        start_s=failure.t_s - 60,
        end_s=failure.t_s + 60,
    )
    assert_nothing_lost(session, collector)
    (failed,) = collector.of("SIM-BP-P-002", ReadingKind.BLOOD_PRESSURE)
    assert set(failed.values.values()) == {None}
    assert failed.quality == failure.flags
    assert QualityFlag.VALUE_UNUSABLE in failed.quality
    assert len(failed.quality) == 2  # the cause and value_unusable
    (sent,) = deliveries(session, "P-002", DeviceKind.BLOOD_PRESSURE, 0x2A35)
    assert sent.t_s == failure.t_s + CUFF_RESULT_AFTER_S
    assert len(collector.of("SIM-BP-P-002", ReadingKind.CUFF_PRESSURE)) == len(CUFF_INFLATION_STEPS)


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_motion_spike_hits_one_heart_rate_sample() -> None:
    scenario = load_scenario("artifacts")
    model = SessionModel(scenario, "P-001")
    spike = next(
        e
        for e in model.artefacts
        if e.kind is ArtefactKind.MOTION_SPIKE and e.device is DeviceKind.HEART_RATE
    )
    assert spike.magnitude is not None
    session, collector, _ = await run_window(
        scenario,
        ManualClock(CLOCK_START),
        devices=["SIM-HR-P-001"],
        start_s=math.floor(spike.t_s) - 20,
        end_s=math.floor(spike.t_s) + 20,
    )
    assert_nothing_lost(session, collector)
    hit_s = float(math.ceil(spike.t_s))  # the first 1 Hz sample at or after the spike
    for delivery in deliveries(session, "P-001", DeviceKind.HEART_RATE, 0x2A37):
        expected = model.vitals(delivery.t_s).heart_rate_bpm
        if delivery.t_s == hit_s:
            expected += spike.magnitude
        assert delivery.values[Parameter.HEART_RATE] == pytest.approx(expected, abs=0.5)
    assert hit_s in [d.t_s for d in deliveries(session, "P-001", DeviceKind.HEART_RATE, 0x2A37)]


def test_unknown_participants_and_devices_are_named() -> None:
    scenario = load_scenario("mdma-typical")
    clock = AcceleratedClock(CLOCK_START, 1)
    with pytest.raises(ValueError, match="no participant P-009"):
        SimulatedSession(scenario, VirtualRadio(), clock, participants=["P-009"])
    with pytest.raises(ValueError, match="no device SIM-HR-P-003"):
        SimulatedSession(scenario, VirtualRadio(), clock, devices=["SIM-HR-P-003"])
    only_p2 = SimulatedSession(scenario, VirtualRadio(), clock, participants=["P-002"])
    assert {code for code, _ in only_p2.keys} == {"P-002"}
    assert len(only_p2.keys) == 4


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_wearable_runs_on_a_controller_behind_an_hci_transport() -> None:
    """The real-radio seam end to end, with an emulated controller served over HCI-over-TCP
    standing in for a USB dongle: the wearable only knows the transport string."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    clock = AcceleratedClock(CLOCK_START, 60)
    collector = Collector()
    async with VirtualRadio() as radio:
        server = await open_tcp_server_transport_with_socket(listener)
        dongle = Controller(
            "dongle", host_source=server.source, host_sink=server.sink, link=radio.link
        )
        try:
            transport = HciTransport(f"tcp-client:127.0.0.1:{port}")
            session = SimulatedSession(
                load_scenario("mdma-typical"), {"SIM-HR-P-001": transport}, clock
            )
            assert session.keys == (("P-001", DeviceKind.HEART_RATE),)
            async with session, connector_running(radio, session, collector, clock):
                await collector.wait_for(
                    lambda: len(collector.of("SIM-HR-P-001", ReadingKind.HEART_RATE)) >= 5, 15.0
                )
            assert session.wearables[("P-001", DeviceKind.HEART_RATE)].delivered[0x2A37] >= 5
        finally:
            await server.close()
            radio.link.remove_controller(dongle)

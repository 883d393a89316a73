"""The production connector against simulated wearables, through bleak's public API only."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from monitor.clock import SystemClock
from monitor.devices.connector import (
    RECONNECT_BACKOFF,
    BleBackend,
    Connector,
    ConnectorSettings,
    DeviceBinding,
)
from monitor.devices.readings import DeviceIdentity
from monitor.models import (
    DeviceEvent,
    DeviceEventType,
    DeviceKind,
    DeviceState,
    Parameter,
    Reading,
    ReadingKind,
)
from simulators.radio import VirtualRadio
from simulators.wearables import (
    BloodPressureCuff,
    ChestStrap,
    PulseOximeter,
    Thermometer,
    Wearable,
)

pytestmark = pytest.mark.ble

WAIT_S = 10.0
ZONE = ZoneInfo("UTC")
WEARABLE_CLASSES: dict[DeviceKind, type[Wearable]] = {
    DeviceKind.HEART_RATE: ChestStrap,
    DeviceKind.BLOOD_PRESSURE: BloodPressureCuff,
    DeviceKind.THERMOMETER: Thermometer,
    DeviceKind.PULSE_OXIMETER: PulseOximeter,
}
MEASUREMENT_UUID = {
    DeviceKind.HEART_RATE: 0x2A37,
    DeviceKind.BLOOD_PRESSURE: 0x2A35,
    DeviceKind.THERMOMETER: 0x2A1C,
    DeviceKind.PULSE_OXIMETER: 0x2A5F,
}


@dataclass
class Recorder:
    """Collects what the connector emits and lets a test wait for a condition on it."""

    readings: list[Reading] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def on_reading(self, reading: Reading) -> None:
        self.readings.append(reading)
        asyncio.get_running_loop().create_task(self._notify())

    def on_event(self, event: DeviceEvent) -> None:
        self.events.append(event)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self.changed:
            await self.changed.wait_for(predicate)

    def of_kind(self, kind: ReadingKind) -> list[Reading]:
        return [r for r in self.readings if r.kind is kind]

    def events_of(
        self, event: DeviceEventType, state: DeviceState | None = None
    ) -> list[DeviceEvent]:
        return [e for e in self.events if e.event is event and (state is None or e.state is state)]


def binding(kind: DeviceKind, code: str = "P-001") -> DeviceBinding:
    prefix = {
        DeviceKind.HEART_RATE: "HR",
        DeviceKind.BLOOD_PRESSURE: "BP",
        DeviceKind.THERMOMETER: "TEMP",
        DeviceKind.PULSE_OXIMETER: "SPO2",
    }[kind]
    return DeviceBinding(
        identity=DeviceIdentity(
            session="S-1", participant=code, device=f"{prefix.lower()}-{code}", timezone=ZONE
        ),
        kind=kind,
        name_pattern=f"SIM-{prefix}-{code}",
    )


@pytest_asyncio.fixture
async def radio() -> AsyncIterator[VirtualRadio]:
    async with VirtualRadio() as radio:
        yield radio


@contextlib.asynccontextmanager
async def running(
    radio: VirtualRadio,
    bindings: list[DeviceBinding],
    recorder: Recorder,
    settings: ConnectorSettings | None = None,
) -> AsyncIterator[Connector]:
    connector = Connector(
        bindings,
        recorder.on_reading,
        recorder.on_event,
        clock=SystemClock(),
        backend=BleBackend(scanner=radio.scanner_backend, client=radio.client_backend),
        settings=settings or ConnectorSettings(connect_timeout_s=2.0),
    )
    task = asyncio.create_task(connector.run())
    try:
        yield connector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def started(radio: VirtualRadio, kind: DeviceKind, code: str = "P-001") -> Wearable:
    name = binding(kind, code).name_pattern
    assert name is not None
    wearable = WEARABLE_CLASSES[kind](radio, name=name)
    await wearable.start()
    return wearable


async def subscribed(wearable: Wearable, kind: DeviceKind) -> None:
    async with asyncio.timeout(WAIT_S):
        await wearable.subscribed(MEASUREMENT_UUID[kind]).wait()


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_each_kind_is_discovered_connected_and_streams(radio: VirtualRadio) -> None:
    recorder = Recorder()
    wearables = {kind: await started(radio, kind) for kind in DeviceKind}
    async with running(radio, [binding(kind) for kind in DeviceKind], recorder):
        for kind, wearable in wearables.items():
            await subscribed(wearable, kind)
        await recorder.wait_for(
            lambda: (
                len(recorder.events_of(DeviceEventType.STATE_CHANGED, DeviceState.CONNECTED))
                == len(wearables)
            )
        )
        strap = wearables[DeviceKind.HEART_RATE]
        cuff = wearables[DeviceKind.BLOOD_PRESSURE]
        thermometer = wearables[DeviceKind.THERMOMETER]
        oximeter = wearables[DeviceKind.PULSE_OXIMETER]
        assert isinstance(strap, ChestStrap)
        assert isinstance(cuff, BloodPressureCuff)
        assert isinstance(thermometer, Thermometer)
        assert isinstance(oximeter, PulseOximeter)
        assert await strap.send_heart_rate(88, rr_seconds=(0.68,))
        await cuff.inflate((40, 90, 150))
        assert await cuff.send_measurement(165, 98, pulse_rate=90)
        assert await thermometer.send_temperature(38.25)
        assert await oximeter.send_continuous(97, 88)
        await recorder.wait_for(
            lambda: all(
                recorder.of_kind(k)
                for k in (
                    ReadingKind.HEART_RATE,
                    ReadingKind.BLOOD_PRESSURE,
                    ReadingKind.TEMPERATURE,
                    ReadingKind.SPO2,
                )
            )
        )
    assert recorder.of_kind(ReadingKind.HEART_RATE)[0].values == {Parameter.HEART_RATE: 88.0}
    bp = recorder.of_kind(ReadingKind.BLOOD_PRESSURE)[0]
    assert bp.values[Parameter.SYSTOLIC_BP] == 165.0
    assert bp.values[Parameter.DIASTOLIC_BP] == 98.0
    assert bp.values[Parameter.PULSE_RATE] == 90.0
    assert [
        r.values[Parameter.CUFF_PRESSURE] for r in recorder.of_kind(ReadingKind.CUFF_PRESSURE)
    ] == [40.0, 90.0, 150.0]
    assert recorder.of_kind(ReadingKind.TEMPERATURE)[0].values == {Parameter.TEMPERATURE: 38.25}
    spo2 = recorder.of_kind(ReadingKind.SPO2)[0]
    assert spo2.values == {Parameter.SPO2: 97.0, Parameter.PULSE_RATE: 88.0}
    battery = recorder.of_kind(ReadingKind.BATTERY)
    assert {r.device for r in battery} == {binding(k).identity.device for k in DeviceKind}
    connected = recorder.events_of(DeviceEventType.STATE_CHANGED, DeviceState.CONNECTED)
    assert all(event.gap_s is None for event in connected)


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_out_of_range_device_is_lost_then_reconnected_with_the_gap(
    radio: VirtualRadio,
) -> None:
    recorder = Recorder()
    strap = await started(radio, DeviceKind.HEART_RATE)
    assert isinstance(strap, ChestStrap)
    async with running(radio, [binding(DeviceKind.HEART_RATE)], recorder):
        await recorder.wait_for(
            lambda: bool(recorder.events_of(DeviceEventType.STATE_CHANGED, DeviceState.CONNECTED))
        )
        assert await strap.send_heart_rate(70)
        await recorder.wait_for(lambda: len(recorder.of_kind(ReadingKind.HEART_RATE)) == 1)

        await strap.go_out_of_range()
        await recorder.wait_for(
            lambda: bool(recorder.events_of(DeviceEventType.STATE_CHANGED, DeviceState.LOST))
        )
        await strap.come_back()
        await recorder.wait_for(
            lambda: (
                len(recorder.events_of(DeviceEventType.STATE_CHANGED, DeviceState.CONNECTED)) == 2
            )
        )
        await subscribed(strap, DeviceKind.HEART_RATE)
        assert await strap.send_heart_rate(71)
        await recorder.wait_for(lambda: len(recorder.of_kind(ReadingKind.HEART_RATE)) == 2)

    states = [e.state for e in recorder.events if e.event is DeviceEventType.STATE_CHANGED]
    assert states == [
        DeviceState.CONNECTING,
        DeviceState.CONNECTED,
        DeviceState.LOST,
        DeviceState.RECONNECTING,
        DeviceState.CONNECTED,
    ]
    reconnected = recorder.events_of(DeviceEventType.STATE_CHANGED, DeviceState.CONNECTED)[-1]
    assert reconnected.gap_s is not None
    assert reconnected.gap_s > 0


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_malformed_notifications_are_kept_counted_and_the_stream_goes_on(
    radio: VirtualRadio,
) -> None:
    recorder = Recorder()
    strap = await started(radio, DeviceKind.HEART_RATE)
    assert isinstance(strap, ChestStrap)
    # Vectors H10-H13 of test_gatt_vectors.py: cut, empty, energy expended missing, no RR values.
    malformed = ["012c", "", "0848", "1048"]
    settings = ConnectorSettings(connect_timeout_s=2.0, malformed_rate_limit=3)
    async with running(radio, [binding(DeviceKind.HEART_RATE)], recorder, settings) as connector:
        await subscribed(strap, DeviceKind.HEART_RATE)
        for payload in malformed:
            assert await strap.notify(0x2A37, bytes.fromhex(payload))
        assert await strap.send_heart_rate(75)
        await recorder.wait_for(lambda: bool(recorder.of_kind(ReadingKind.HEART_RATE)))
        assert connector.stats.malformed == len(malformed)
    rejected = recorder.events_of(DeviceEventType.MALFORMED_PAYLOAD)
    assert [e.payload_hex for e in rejected] == malformed
    assert {e.characteristic for e in rejected} == {"0x2A37"}
    assert all("Heart Rate Measurement" in e.detail for e in rejected)
    assert len(recorder.events_of(DeviceEventType.MALFORMED_RATE_HIGH)) == 1
    assert recorder.of_kind(ReadingKind.HEART_RATE)[0].values == {Parameter.HEART_RATE: 75.0}


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_contact_loss_battery_low_and_silence_are_events(radio: VirtualRadio) -> None:
    recorder = Recorder()
    strap = await started(radio, DeviceKind.HEART_RATE)
    assert isinstance(strap, ChestStrap)
    settings = ConnectorSettings(
        connect_timeout_s=2.0,
        no_data_after_s=dict.fromkeys(DeviceKind, 0.3),
    )
    async with running(radio, [binding(DeviceKind.HEART_RATE)], recorder, settings):
        await subscribed(strap, DeviceKind.HEART_RATE)
        assert await strap.send_heart_rate(80, contact=False)
        await strap.set_battery(15)
        await recorder.wait_for(
            lambda: (
                bool(recorder.events_of(DeviceEventType.SENSOR_CONTACT_LOST))
                and bool(recorder.events_of(DeviceEventType.BATTERY_LOW))
            )
        )
        await recorder.wait_for(lambda: bool(recorder.events_of(DeviceEventType.NO_DATA)))
        assert await strap.send_heart_rate(80, contact=True)
        await recorder.wait_for(
            lambda: (
                bool(recorder.events_of(DeviceEventType.SENSOR_CONTACT_RESTORED))
                and bool(recorder.events_of(DeviceEventType.DATA_RESUMED))
            )
        )
    assert recorder.events_of(DeviceEventType.BATTERY_LOW)[0].battery_percent == 15.0


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_links_are_bounded_per_adapter(radio: VirtualRadio) -> None:
    recorder = Recorder()
    first = await started(radio, DeviceKind.HEART_RATE, "P-001")
    second = await started(radio, DeviceKind.HEART_RATE, "P-002")
    bindings = [binding(DeviceKind.HEART_RATE, "P-001"), binding(DeviceKind.HEART_RATE, "P-002")]
    settings = ConnectorSettings(connect_timeout_s=2.0, max_links=1)
    async with running(radio, bindings, recorder, settings):
        await recorder.wait_for(
            lambda: bool(recorder.events_of(DeviceEventType.STATE_CHANGED, DeviceState.CONNECTED))
        )
        holder, waiting = (first, second) if first.is_connected else (second, first)
        assert not waiting.is_connected
        await holder.go_out_of_range()
        async with asyncio.timeout(WAIT_S):
            await waiting.subscribed(0x2A37).wait()
        assert not holder.is_connected


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [RECONNECT_BACKOFF.delay(attempt, rng) for attempt in range(20)]
    assert all(0.0 <= d <= 30.0 for d in delays)
    assert max(delays[:3]) <= 2.0
    assert len(set(delays)) == len(delays)

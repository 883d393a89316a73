"""The virtual radio through the real bleak API: only BleakScanner/BleakClient with backend=."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from simulators.radio import (
    BumbleClient,
    BumbleScanner,
    CharacteristicSpec,
    Properties,
    ServiceSpec,
    SimulatedPeripheral,
    VirtualRadio,
    battery_service,
    device_information_service,
    make_static_address,
    normalize_uuid,
)

pytestmark = pytest.mark.ble

HEART_RATE = normalize_uuid(0x180D)
HR_MEASUREMENT = normalize_uuid(0x2A37)
HR_CONTROL_POINT = normalize_uuid(0x2A39)
BATTERY_LEVEL = normalize_uuid(0x2A19)
TEMPERATURE_MEASUREMENT = normalize_uuid(0x2A1C)
VENDOR_SERVICE = "7e5a0001-1c2d-4b8e-9f10-2a3b4c5d6e7f"
VENDOR_SECRET = "7e5a0002-1c2d-4b8e-9f10-2a3b4c5d6e7f"
WAIT = 2.0  # generous upper bound for one event on the in-process link


class Strap(SimulatedPeripheral):
    local_name = "TestStrap"
    services = (
        ServiceSpec(
            0x180D,
            (
                CharacteristicSpec(0x2A37, Properties.NOTIFY),
                CharacteristicSpec(0x2A39, Properties.WRITE | Properties.WRITE_WITHOUT_RESPONSE),
            ),
        ),
        battery_service(87),
    )
    manufacturer_data = {0x0059: b"\x01\x02"}  # noqa: RUF012 - a test double, never mutated
    tx_power = -4


class Thermometer(SimulatedPeripheral):
    local_name = "TestThermo"
    services = (
        ServiceSpec(
            0x1809,
            (
                CharacteristicSpec(0x2A1C, Properties.INDICATE),
                CharacteristicSpec(0x2A1D, Properties.READ, b"\x02"),
            ),
        ),
        ServiceSpec(
            VENDOR_SERVICE,
            (CharacteristicSpec(VENDOR_SECRET, Properties.READ, b"secret", encrypted=True),),
            advertised=False,
        ),
        device_information_service("Acme", "T-1"),
    )


class DisconnectRecorder:
    """A bleak disconnected_callback that can be awaited."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = asyncio.Event()

    def __call__(self, client: BleakClient) -> None:
        self.calls += 1
        self.event.set()

    async def wait(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.event.wait()


class Inbox:
    """Collects start_notify payloads in order and wakes waiters at a target count."""

    def __init__(self, expected: int = 1) -> None:
        self.values: list[bytes] = []
        self.expected = expected
        self.complete = asyncio.Event()

    def __call__(self, sender: BleakGATTCharacteristic, data: bytearray) -> None:
        assert isinstance(data, bytearray)
        self.values.append(bytes(data))
        if len(self.values) >= self.expected:
            self.complete.set()

    async def wait(self, expected: int) -> list[bytes]:
        self.expected = expected
        if len(self.values) >= expected:
            return self.values
        self.complete.clear()
        async with asyncio.timeout(WAIT):
            await self.complete.wait()
        return self.values


@pytest_asyncio.fixture
async def radio() -> AsyncIterator[VirtualRadio]:
    async with VirtualRadio() as virtual_radio:
        yield virtual_radio


@pytest_asyncio.fixture
async def strap(radio: VirtualRadio) -> AsyncIterator[Strap]:
    async with Strap(radio) as peripheral:
        yield peripheral


@pytest_asyncio.fixture
async def thermometer(radio: VirtualRadio) -> AsyncIterator[Thermometer]:
    async with Thermometer(radio) as peripheral:
        yield peripheral


async def discover(radio: VirtualRadio, peripheral: SimulatedPeripheral) -> BLEDevice:
    device = await BleakScanner.find_device_by_address(
        peripheral.address, timeout=WAIT, backend=radio.scanner_backend
    )
    assert device is not None
    return device


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_discovery_by_service_uuid_reports_advertisement_data(
    radio: VirtualRadio, strap: Strap, thermometer: Thermometer
) -> None:
    seen: list[AdvertisementData] = []

    def is_heart_rate(device: BLEDevice, data: AdvertisementData) -> bool:
        seen.append(data)
        return True

    # bleak types find_device_*'s **kwargs as a closed TypedDict, hence the ignore; the keyword
    # still reaches the backend at runtime. radio.scanner_backend avoids it (see below).
    device = await BleakScanner.find_device_by_filter(
        is_heart_rate,
        timeout=WAIT,
        backend=BumbleScanner,
        bumble_radio=radio,  # type: ignore[call-arg]
        service_uuids=["180d"],
    )

    assert device is not None
    assert device.address == strap.address
    assert device.name == "TestStrap"
    assert {d.local_name for d in seen} == {"TestStrap"}  # the thermometer is filtered out
    data = seen[-1]
    assert data.service_uuids == [HEART_RATE]  # doubled AD structures de-duplicated
    assert data.manufacturer_data == {0x0059: b"\x01\x02"}
    assert data.tx_power == -4
    assert data.rssi == -50


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_discovery_by_name_with_bound_backend(
    radio: VirtualRadio, strap: Strap, thermometer: Thermometer
) -> None:
    device = await BleakScanner.find_device_by_name(
        "TestThermo", timeout=WAIT, backend=radio.scanner_backend
    )

    assert device is not None
    assert device.address == thermometer.address


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_scanner_restart_forgets_devices_seen_before(
    radio: VirtualRadio, strap: Strap, thermometer: Thermometer
) -> None:
    both_seen = asyncio.Event()
    thermometer_seen = asyncio.Event()

    def on_advertisement(device: BLEDevice, data: AdvertisementData) -> None:
        if device.address == thermometer.address:
            thermometer_seen.set()
        if len(scanner.discovered_devices) == 2:
            both_seen.set()

    scanner = BleakScanner(on_advertisement, backend=BumbleScanner, bumble_radio=radio)
    async with scanner, asyncio.timeout(WAIT):
        await both_seen.wait()
    await strap.stop()
    thermometer_seen.clear()
    async with scanner, asyncio.timeout(WAIT):
        await thermometer_seen.wait()
        addresses = {d.address for d in scanner.discovered_devices}

    assert addresses == {thermometer.address}


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_connect_negotiates_mtu_discovers_services_and_reads(
    radio: VirtualRadio, strap: Strap
) -> None:
    device = await discover(radio, strap)

    async with BleakClient(device, backend=BumbleClient, bumble_radio=radio) as client:
        assert client.is_connected
        assert client.mtu_size == 247
        assert client.name == "TestStrap"
        service_uuids = {s.uuid for s in client.services}
        assert {HEART_RATE, normalize_uuid(0x180F), normalize_uuid(0x1800)} <= service_uuids
        measurement = client.services.get_characteristic(HR_MEASUREMENT)
        assert measurement is not None
        assert measurement.properties == ["notify"]
        assert [d.uuid for d in measurement.descriptors] == [normalize_uuid(0x2902)]
        control_point = client.services.get_characteristic(HR_CONTROL_POINT)
        assert control_point is not None
        assert control_point.max_write_without_response_size == 244
        assert await client.read_gatt_char(BATTERY_LEVEL) == bytearray([87])
        strap.set_value(BATTERY_LEVEL, b"\x05")
        assert await client.read_gatt_char(BATTERY_LEVEL) == bytearray([5])


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_services_filter_and_connect_by_address_string(
    radio: VirtualRadio, strap: Strap, thermometer: Thermometer
) -> None:
    async with BleakClient(
        strap.address, services=["180f"], timeout=WAIT, backend=radio.client_backend
    ) as client:
        assert [s.uuid for s in client.services] == [normalize_uuid(0x180F)]
    async with BleakClient(
        thermometer.address.lower(), services=[VENDOR_SERVICE.upper()], backend=radio.client_backend
    ) as client:
        assert [s.uuid for s in client.services] == [VENDOR_SERVICE]


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_notifications_deliver_raw_and_malformed_bytes_unchanged(
    radio: VirtualRadio, strap: Strap
) -> None:
    payloads = [b"\x00\x48", b"", b"\x10", b"\x19\x48\x01\x00" + b"\xff" * 3, bytes(range(244))]
    inbox = Inbox()
    device = await discover(radio, strap)

    async with BleakClient(device, backend=BumbleClient, bumble_radio=radio) as client:
        assert not strap.subscribed(HR_MEASUREMENT).is_set()
        await client.start_notify(HR_MEASUREMENT, inbox)
        assert strap.subscribed(HR_MEASUREMENT).is_set()
        for payload in payloads:
            assert await strap.notify(HR_MEASUREMENT, payload)
        received = await inbox.wait(len(payloads))
        await client.stop_notify(HR_MEASUREMENT)  # the CCCD write is acknowledged on return
        assert not strap.subscribed(HR_MEASUREMENT).is_set()
        assert not await strap.notify(HR_MEASUREMENT, b"\x00\x48")

    assert received == payloads


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_indication_is_confirmed_and_delivered(
    radio: VirtualRadio, thermometer: Thermometer
) -> None:
    inbox = Inbox()
    device = await discover(radio, thermometer)

    async with BleakClient(device, backend=BumbleClient, bumble_radio=radio) as client:
        assert not await thermometer.indicate(TEMPERATURE_MEASUREMENT, b"\x00")
        await client.start_notify(TEMPERATURE_MEASUREMENT, inbox)
        assert await thermometer.indicate(TEMPERATURE_MEASUREMENT, b"\x04\x74\x01\x00\xff\x02")
        assert await inbox.wait(1) == [b"\x04\x74\x01\x00\xff\x02"]
        assert not await thermometer.notify(TEMPERATURE_MEASUREMENT, b"\x00")


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_central_disconnect_fires_callback(radio: VirtualRadio, strap: Strap) -> None:
    recorder = DisconnectRecorder()
    device = await discover(radio, strap)
    client = BleakClient(device, recorder, backend=BumbleClient, bumble_radio=radio)

    async with client:
        pass

    assert recorder.calls == 1
    assert not client.is_connected
    with pytest.raises(BleakError):
        await client.read_gatt_char(BATTERY_LEVEL)
    await client.disconnect()  # a second disconnect is a no-op
    assert recorder.calls == 1


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_peripheral_out_of_range_fires_callback_and_reconnects_after_advertising(
    radio: VirtualRadio, strap: Strap
) -> None:
    recorder = DisconnectRecorder()
    device = await discover(radio, strap)
    client = BleakClient(device, recorder, backend=BumbleClient, bumble_radio=radio)
    await client.connect()

    await strap.stop_advertising()
    await strap.disconnect(0x08)
    await recorder.wait()

    assert not client.is_connected
    with pytest.raises(BleakError):
        _ = client.services
    with pytest.raises(BleakError):
        await client.read_gatt_char(BATTERY_LEVEL)
    with pytest.raises(BleakDeviceNotFoundError):
        await client.connect(timeout=0.2)

    await strap.start_advertising()
    inbox = Inbox()
    await client.connect()
    try:
        assert client.mtu_size == 247
        await client.start_notify(HR_MEASUREMENT, inbox)
        assert await strap.notify(HR_MEASUREMENT, b"\x00\x50")
        assert await inbox.wait(1) == [b"\x00\x50"]
    finally:
        await client.disconnect()
    assert recorder.calls == 2


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_remote_user_terminated_readvertises_by_itself(
    radio: VirtualRadio, strap: Strap
) -> None:
    recorder = DisconnectRecorder()
    device = await discover(radio, strap)

    async with BleakClient(device, recorder, backend=BumbleClient, bumble_radio=radio):
        await strap.disconnect(0x13)
        await recorder.wait()
    async with BleakClient(device, timeout=WAIT, backend=BumbleClient, bumble_radio=radio) as c:
        assert c.is_connected


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_silent_address_fails_fast_and_radio_still_connects(
    radio: VirtualRadio, strap: Strap
) -> None:
    started = time.monotonic()
    with pytest.raises(BleakDeviceNotFoundError):
        async with BleakClient(
            make_static_address(), timeout=0.3, backend=BumbleClient, bumble_radio=radio
        ):
            pass
    assert time.monotonic() - started < 1.5

    async with BleakClient(strap.address, backend=BumbleClient, bumble_radio=radio) as client:
        assert await client.read_gatt_char(BATTERY_LEVEL) == bytearray([87])


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_two_peripherals_connected_at_once_get_their_own_notifications(
    radio: VirtualRadio,
) -> None:
    async with Strap(radio, name="StrapA") as strap_a, Strap(radio, name="StrapB") as strap_b:
        client_a = BleakClient(strap_a.address, backend=BumbleClient, bumble_radio=radio)
        client_b = BleakClient(strap_b.address, backend=BumbleClient, bumble_radio=radio)
        await asyncio.gather(client_a.connect(), client_b.connect())
        try:
            inbox_a, inbox_b = Inbox(), Inbox()
            await client_a.start_notify(HR_MEASUREMENT, inbox_a)
            await client_b.start_notify(HR_MEASUREMENT, inbox_b)
            await asyncio.gather(
                strap_a.notify(HR_MEASUREMENT, b"\x00\x48"),
                strap_b.notify(HR_MEASUREMENT, b"\x00\x96"),
            )
            assert await inbox_a.wait(1) == [b"\x00\x48"]
            assert await inbox_b.wait(1) == [b"\x00\x96"]
        finally:
            await asyncio.gather(client_a.disconnect(), client_b.disconnect())


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_att_errors_map_to_gatt_protocol_error(radio: VirtualRadio, strap: Strap) -> None:
    async with BleakClient(strap.address, backend=BumbleClient, bumble_radio=radio) as client:
        with pytest.raises(BleakGATTProtocolError) as read_only:
            await client.write_gatt_char(BATTERY_LEVEL, b"\x01", response=True)
        assert read_only.value.code == 0x03  # write not permitted

        strap.set_error(HR_CONTROL_POINT, 0x80)
        with pytest.raises(BleakGATTProtocolError) as application:
            await client.write_gatt_char(HR_CONTROL_POINT, b"\x02", response=True)
        assert application.value.code == 0x80

        strap.set_error(HR_CONTROL_POINT, None)
        await client.write_gatt_char(HR_CONTROL_POINT, b"\x01", response=True)
        await client.write_gatt_char(HR_CONTROL_POINT, b"\x03", response=False)
        async with asyncio.timeout(WAIT):
            assert await strap.next_write(HR_CONTROL_POINT) == b"\x01"
            assert await strap.next_write(HR_CONTROL_POINT) == b"\x03"


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_pairing_unlocks_encrypted_characteristic(
    radio: VirtualRadio, thermometer: Thermometer
) -> None:
    async with BleakClient(thermometer.address, backend=BumbleClient, bumble_radio=radio) as c:
        with pytest.raises(BleakGATTProtocolError) as locked:
            await c.read_gatt_char(VENDOR_SECRET)
        assert locked.value.code == 0x0F  # insufficient encryption
        await c.pair()
        assert await c.read_gatt_char(VENDOR_SECRET) == bytearray(b"secret")
        assert await c.read_gatt_char(normalize_uuid(0x2A29)) == bytearray(b"Acme")
        await c.unpair()
        assert not c.is_connected


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_stop_notify_racing_a_peripheral_disconnect_does_not_raise(
    radio: VirtualRadio, strap: Strap
) -> None:
    recorder = DisconnectRecorder()
    client = BleakClient(strap.address, recorder, backend=BumbleClient, bumble_radio=radio)
    await client.connect()
    await client.start_notify(HR_MEASUREMENT, Inbox())

    await asyncio.gather(client.stop_notify(HR_MEASUREMENT), strap.disconnect(0x08))
    await recorder.wait()

    assert not client.is_connected


@pytest.mark.timeout(20)
@pytest.mark.asyncio
async def test_burst_of_2000_notifications_arrives_complete_and_in_order(
    radio: VirtualRadio, strap: Strap
) -> None:
    count = 2000
    inbox = Inbox(expected=count)
    async with BleakClient(strap.address, backend=BumbleClient, bumble_radio=radio) as client:
        await client.start_notify(HR_MEASUREMENT, inbox)
        for sequence in range(count):
            await strap.notify(HR_MEASUREMENT, struct.pack("<BH", 0x01, sequence))
        async with asyncio.timeout(10):
            await inbox.complete.wait()

    assert inbox.values == [struct.pack("<BH", 0x01, n) for n in range(count)]


@pytest.mark.timeout(10)
@pytest.mark.asyncio
async def test_a_command_cancelled_while_the_controller_answers_leaves_no_traceback() -> None:
    """A service stopping mid-connect cancels HCI commands whose answer is already on its way;
    bumble used to raise InvalidStateError in a loop callback (a traceback on stderr)."""
    from bumble import hci  # noqa: PLC0415  (only this test speaks HCI directly)

    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with VirtualRadio() as radio:
            central = await radio.central()
            for steps in range(12):  # cancelled after 0-3 loop turns: every point of the race
                command = asyncio.create_task(
                    central.host.send_command(hci.HCI_Read_BD_ADDR_Command())
                )
                for _ in range(steps % 4):
                    await asyncio.sleep(0)
                command.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await command
            answer = await central.host.send_command(hci.HCI_Read_BD_ADDR_Command())
            assert answer.return_parameters.status == hci.HCI_SUCCESS  # the host still works
            await asyncio.sleep(0)  # any answer still scheduled has been delivered
    finally:
        loop.set_exception_handler(None)
    assert errors == []

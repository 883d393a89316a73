"""bleak backends that drive the virtual radio, so production bleak code runs unchanged in tests.

Behaviour mirrors the real backends (BlueZ first): not-found fails with
``BleakDeviceNotFoundError``, the disconnected callback fires on every disconnect and clears
``services``, ATT errors surface as ``BleakGATTProtocolError``. "Trap N" comments name a pitfall
of bumble under bleak where it is worked around; the number only ties together the comments about
one trap across ``radio.py``, ``backend.py`` and ``peripheral.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_16, normalize_uuid_32, normalize_uuid_str
from bumble import att, core, hci
from bumble.device import Advertisement, Connection, Peer
from bumble.gatt_client import CharacteristicProxy

if TYPE_CHECKING:
    from bumble.device import Device

    from simulators.radio.radio import VirtualRadio

REQUESTED_ATT_MTU = 247  # Trap 4: bumble truncates notifications to ATT_MTU-3 (20 bytes at 23).
_BLUETOOTH_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True, slots=True)
class BumbleDeviceDetails:
    """``BLEDevice.details`` from the scanner: what the client needs to connect to it."""

    radio: VirtualRadio
    address: hci.Address


def bumble_uuid_to_bleak(value: core.UUID) -> str:
    return normalize_uuid_str(value.to_hex_str("-"))


def bleak_uuid_to_bumble(normalized: str) -> core.UUID:
    """Shorten Bluetooth-base UUIDs so ATT "find by type value" matches 16-bit services."""
    if normalized.endswith(_BLUETOOTH_BASE_SUFFIX) and normalized.startswith("0000"):
        return core.UUID.from_16_bits(int(normalized[4:8], 16))
    return core.UUID(normalized)


def _resolve_radio(explicit: VirtualRadio | None, bound: VirtualRadio | None) -> VirtualRadio:
    radio = explicit or bound
    if radio is None:
        raise BleakError("no virtual radio: pass bumble_radio=... or use radio.client_backend")
    return radio


def parse_advertisement(advertisement: Advertisement) -> AdvertisementData:
    """Decode the raw AD structures into bleak's shape, de-duplicating repeated structures."""
    local_name: str | None = None
    short_name: str | None = None
    service_uuids: dict[str, None] = {}  # Trap 5: every AD structure arrives twice; keep order.
    service_data: dict[str, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    tx_power: int | None = None
    for ad_type, payload in advertisement.data.ad_structures:
        match int(ad_type):
            case 0x02 | 0x03:
                for (short,) in struct.iter_unpack("<H", payload[: len(payload) // 2 * 2]):
                    service_uuids[normalize_uuid_16(short)] = None
            case 0x04 | 0x05:
                for (medium,) in struct.iter_unpack("<I", payload[: len(payload) // 4 * 4]):
                    service_uuids[normalize_uuid_32(medium)] = None
            case 0x06 | 0x07:
                for offset in range(0, len(payload) - 15, 16):
                    raw = payload[offset : offset + 16][::-1]
                    service_uuids[str(uuid.UUID(bytes=bytes(raw)))] = None
            case 0x08:
                short_name = payload.decode("utf-8", errors="replace")
            case 0x09:
                local_name = payload.decode("utf-8", errors="replace")
            case 0x0A if len(payload) == 1:
                (tx_power,) = struct.unpack("<b", payload)  # Trap 9: bumble's .get() is unsigned.
            case 0x16 if len(payload) >= 2:
                service_data[normalize_uuid_16(struct.unpack_from("<H", payload)[0])] = payload[2:]
            case 0x20 if len(payload) >= 4:
                service_data[normalize_uuid_32(struct.unpack_from("<I", payload)[0])] = payload[4:]
            case 0x21 if len(payload) >= 16:
                service_data[str(uuid.UUID(bytes=bytes(payload[15::-1])))] = payload[16:]
            case 0xFF if len(payload) >= 2:
                manufacturer_data[struct.unpack_from("<H", payload)[0]] = payload[2:]
            case _:
                pass
    return AdvertisementData(
        local_name=local_name or short_name,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=list(service_uuids),
        tx_power=tx_power,
        rssi=advertisement.rssi,
        platform_data=(advertisement,),
    )


class BumbleScanner(BaseBleakScanner):
    """Scanner over the radio's central; scanning is shared with connects and other scanners.

    ``scanning_mode`` is accepted for signature compatibility; the emulated controller answers
    every scan with its advertising payload anyway (trap 5), so the mode changes nothing.
    """

    default_radio: ClassVar[VirtualRadio | None] = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        bumble_radio: VirtualRadio | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        if service_uuids is not None:
            # Trap 1: the base only lower-cases, so "180d" would never match a 128-bit UUID.
            self._service_uuids = [normalize_uuid_str(u) for u in service_uuids]
        self._radio = _resolve_radio(bumble_radio, self.default_radio)
        self._scanning = False

    async def start(self) -> None:
        self.seen_devices = {}
        if not self._scanning:
            await self._radio.add_advertisement_listener(self._on_advertisement)
            self._scanning = True

    async def stop(self) -> None:
        if self._scanning:
            self._scanning = False
            await self._radio.remove_advertisement_listener(self._on_advertisement)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        data = parse_advertisement(advertisement)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = str(advertisement.address)
        previous = self.seen_devices.get(address)
        name = data.local_name or (previous[0].name if previous else None)
        details = BumbleDeviceDetails(self._radio, advertisement.address)
        device = self.create_or_update_device(address, address, name, details, data)
        self.call_detection_callbacks(device, data)


class BumbleClient(BaseBleakClient):
    """GATT client over one bumble LE connection of the radio's central."""

    default_radio: ClassVar[VirtualRadio | None] = None

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        services: set[str] | None = None,
        *,
        bumble_radio: VirtualRadio | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        details = getattr(address_or_ble_device, "details", None)
        if isinstance(details, BumbleDeviceDetails):
            if bumble_radio is not None and bumble_radio is not details.radio:
                raise BleakError("the BLEDevice was discovered on a different virtual radio")
            self._radio = details.radio
            self._peer_address = details.address
        else:
            self._radio = _resolve_radio(bumble_radio, self.default_radio)
            self._peer_address = hci.Address(self.address)
        self._name = (
            address_or_ble_device.name
            if isinstance(address_or_ble_device, BLEDevice) and address_or_ble_device.name
            else self.address
        )
        self._requested_services = services
        self._connection: Connection | None = None
        self._mtu = att.ATT_DEFAULT_MTU
        self._notify_callbacks: dict[int, NotifyCallback] = {}
        self._subscribers: dict[int, partial[None]] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else self._mtu

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self._connection is not None:
            raise BleakError("Client is already connected")
        timeout: float = kwargs.get("timeout", self._timeout)
        try:
            connection = await self._radio.connect(self._peer_address, timeout)
        except core.BaseBumbleError as error:
            raise BleakError(f"connecting to {self.address} failed: {error}") from error
        self._connection = connection
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            if connection.device.lookup_connection(connection.handle) is not connection:
                raise BleakError(f"{self.address} disconnected while connecting")
            async with asyncio.timeout(timeout):
                with self._gatt_errors("connect"):
                    peer = Peer(connection)
                    self._mtu = await peer.request_mtu(REQUESTED_ATT_MTU)
                    if pair:
                        await connection.pair()
                    self.services = await self._discover_services(peer)
        except BaseException:
            # A failed connect is not a disconnect the caller should hear about.
            connection.remove_listener(connection.EVENT_DISCONNECTION, self._on_disconnection)
            self._forget_connection()
            # Disconnecting a link bumble already dropped would wait forever for its completion.
            if connection.device.lookup_connection(connection.handle) is connection:
                with contextlib.suppress(Exception):
                    await connection.disconnect()
            raise

    async def _discover_services(self, peer: Peer) -> BleakGATTServiceCollection:
        uuids = [bleak_uuid_to_bumble(u) for u in self._requested_services or ()]
        collection = BleakGATTServiceCollection()
        # Trap 6: discover_services(uuids) filters only its return value, not peer.services.
        for service in await peer.discover_services(uuids):
            bleak_service = BleakGATTService(
                service, service.handle, bumble_uuid_to_bleak(service.uuid)
            )
            collection.add_service(bleak_service)
            for characteristic in await peer.discover_characteristics(service=service):
                properties: list[CharacteristicPropertyName] = [
                    name
                    for bit, name in CHARACTERISTIC_PROPERTIES.items()
                    if characteristic.properties & bit
                ]
                bleak_characteristic = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    bumble_uuid_to_bleak(characteristic.uuid),
                    properties,
                    partial(_max_write_without_response, peer.connection),
                    bleak_service,
                )
                collection.add_characteristic(bleak_characteristic)
                for descriptor in await peer.discover_descriptors(characteristic=characteristic):
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor,
                            descriptor.handle,
                            bumble_uuid_to_bleak(descriptor.type),
                            bleak_characteristic,
                        )
                    )
        return collection

    def _on_disconnection(self, reason: int) -> None:
        self._forget_connection()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _forget_connection(self) -> None:
        if self._connection is not None:
            self._mtu = self._connection.att_mtu
        self._connection = None
        self.services = None
        self._notify_callbacks.clear()
        self._subscribers.clear()

    async def disconnect(self) -> None:
        """Disconnect; the callback has fired by the time this returns. No-op when already down."""
        connection = self._connection
        if connection is None:
            return
        try:
            await connection.disconnect()
        except core.BaseBumbleError:
            if self._connection is not None:
                raise
            # The peer dropped the link first; that disconnect already ran the callback.

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair with bumble SMP (Just Works: both sides have no input and no output)."""
        connection = self._require_connection()
        with self._gatt_errors("pair"):
            try:
                await connection.pair()
            except core.ProtocolError as error:
                raise BleakError(f"pairing failed: {error}") from error

    async def unpair(self) -> None:
        """Forget the bond in the central's key store, then disconnect (as bleak documents)."""
        central: Device = await self._radio.central()
        if central.keystore is not None:
            await central.keystore.delete(str(self._peer_address))
        await self.disconnect()

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(characteristic.handle, use_cached)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(descriptor.handle, use_cached)

    async def _read(self, handle: int, use_cached: bool) -> bytearray:
        connection = self._require_connection()
        if use_cached and (cached := connection.gatt_client.cached_values.get(handle)):
            return bytearray(cached[1])
        with self._gatt_errors("read"):
            return bytearray(await connection.gatt_client.read_value(handle))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        await self._write(characteristic.handle, bytes(data), response)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        await self._write(descriptor.handle, bytes(data), True)

    async def _write(self, handle: int, data: bytes, with_response: bool) -> None:
        connection = self._require_connection()
        with self._gatt_errors("write"):
            # Trap 7: bumble defaults to write-without-response; always say which one.
            await connection.gatt_client.write_value(handle, data, with_response=with_response)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Subscribe, preferring notify over indicate when the characteristic offers both."""
        connection = self._require_connection()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        handle = characteristic.handle
        self._notify_callbacks[handle] = callback
        subscriber = self._subscribers.setdefault(handle, partial(self._on_value, handle))
        with self._gatt_errors("start_notify"):
            await connection.gatt_client.subscribe(proxy, subscriber, prefer_notify=True)

    def _on_value(self, handle: int, value: bytes) -> None:
        if (callback := self._notify_callbacks.get(handle)) is not None:
            callback(bytearray(value))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Unsubscribe; a link that is already gone (or goes meanwhile) is not an error."""
        handle = characteristic.handle
        self._notify_callbacks.pop(handle, None)
        subscriber = self._subscribers.pop(handle, None)
        connection = self._connection
        if connection is None or subscriber is None:
            return
        try:
            with self._gatt_errors("stop_notify"):
                await connection.gatt_client.unsubscribe(characteristic.obj, subscriber)
        except BleakError:
            if self._connection is not None:
                raise

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError("Not connected")
        return self._connection

    @contextlib.contextmanager
    def _gatt_errors(self, operation: str) -> Iterator[None]:
        """Translate bumble failures into the exceptions bleak users already handle."""
        try:
            yield
        except att.ATT_Error as error:
            raise BleakGATTProtocolError(error.error_code) from error
        except asyncio.CancelledError:
            # bumble cancels the pending ATT request when the link drops; that is a disconnect,
            # not a cancellation of our task.
            task = asyncio.current_task()
            if self._connection is not None or (task is not None and task.cancelling()):
                raise
            raise BleakError(f"{operation} failed: {self.address} disconnected") from None
        except core.TimeoutError as error:
            raise TimeoutError(f"{operation} timed out: {error}") from error
        except core.InvalidStateError as error:
            raise BleakError(f"{operation} failed: {error}") from error


def _max_write_without_response(connection: Connection) -> int:
    return connection.att_mtu - 3


def bind_scanner(radio: VirtualRadio) -> type[BumbleScanner]:
    """A ``BumbleScanner`` subclass that needs no ``bumble_radio=`` keyword."""

    class BoundBumbleScanner(BumbleScanner):
        default_radio = radio

    BoundBumbleScanner.__name__ = BoundBumbleScanner.__qualname__ = "BumbleScanner"
    return BoundBumbleScanner


def bind_client(radio: VirtualRadio) -> type[BumbleClient]:
    """A ``BumbleClient`` subclass that needs no ``bumble_radio=`` keyword."""

    class BoundBumbleClient(BumbleClient):
        default_radio = radio

    BoundBumbleClient.__name__ = BoundBumbleClient.__qualname__ = "BumbleClient"
    return BoundBumbleClient

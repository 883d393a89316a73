"""Base class for simulated wearables: a scriptable GATT server on the virtual radio.

Subclasses only declare ``local_name`` and ``services``; tests and scenarios then push raw bytes
(well-formed or not) with ``notify``/``indicate`` and script link events with ``disconnect`` and
``stop_advertising``. Characteristics are plain ``gatt.Characteristic`` objects, never bumble's
profile classes, so nothing re-encodes what the script sends (trap 10).

A peripheral normally joins a :class:`VirtualRadio`; given an :class:`HciTransport` instead, the
same GATT server runs on a real Bluetooth controller (a USB dongle, an HCI socket, a serial HCI
board), so a developer can point a production central at simulated wearables over the air.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import ClassVar, Self

from bleak.uuids import normalize_uuid_16, normalize_uuid_32, normalize_uuid_str
from bumble import att, gatt, hci
from bumble.controller import Controller
from bumble.device import Connection, Device
from bumble.transport import open_transport
from bumble.transport.common import Transport

from simulators.radio.backend import bleak_uuid_to_bumble
from simulators.radio.radio import VirtualRadio, attach_device, make_static_address

Properties = gatt.Characteristic.Properties
CONNECTION_TIMEOUT = 0x08  # HCI reason a central sees when the peripheral goes out of range.
REMOTE_USER_TERMINATED = 0x13
_BLUETOOTH_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_MAX_LEGACY_ADVERTISING_BYTES = 31


def normalize_uuid(value: str | int) -> str:
    """bleak's canonical form (lower-case 128-bit) for ``0x2A37``, ``"2a37"`` or a full UUID."""
    if isinstance(value, int):
        return normalize_uuid_16(value) if value <= 0xFFFF else normalize_uuid_32(value)
    return normalize_uuid_str(value)


def _short_uuid(normalized: str) -> int | None:
    if normalized.startswith("0000") and normalized.endswith(_BLUETOOTH_BASE_SUFFIX):
        return int(normalized[4:8], 16)
    return None


@dataclass(frozen=True, slots=True)
class CharacteristicSpec:
    """One characteristic; ``value`` is what reads return until ``set_value`` changes it."""

    uuid: str | int
    properties: gatt.Characteristic.Properties
    value: bytes = b""
    encrypted: bool = False  # reads and writes need a paired (encrypted) link


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One primary service; ``advertised`` puts its UUID in the advertising payload."""

    uuid: str | int
    characteristics: tuple[CharacteristicSpec, ...]
    advertised: bool = True


def battery_service(level: int = 100) -> ServiceSpec:
    return ServiceSpec(
        0x180F,
        (CharacteristicSpec(0x2A19, Properties.READ | Properties.NOTIFY, bytes([level])),),
        advertised=False,
    )


def device_information_service(
    manufacturer: str, model: str, serial: str = "0001", firmware: str = "1.0.0"
) -> ServiceSpec:
    strings = {0x2A29: manufacturer, 0x2A24: model, 0x2A25: serial, 0x2A26: firmware}
    return ServiceSpec(
        0x180A,
        tuple(CharacteristicSpec(u, Properties.READ, s.encode()) for u, s in strings.items()),
        advertised=False,
    )


def build_advertising_data(
    name: str,
    service_uuids: Iterable[str],
    manufacturer_data: Mapping[int, bytes],
    tx_power: int | None,
) -> bytes:
    """Flags, complete local name, service UUID lists, manufacturer data and signed TX power."""
    short: list[int] = []
    full: list[str] = []
    for normalized in service_uuids:
        if (value := _short_uuid(normalized)) is not None:
            short.append(value)
        else:
            full.append(normalized)
    structures = [(0x01, b"\x06"), (0x09, name.encode())]
    if short:
        structures.append((0x03, b"".join(struct.pack("<H", u) for u in short)))
    if full:
        structures.append((0x07, b"".join(uuid.UUID(u).bytes[::-1] for u in full)))
    structures += [(0xFF, struct.pack("<H", cid) + data) for cid, data in manufacturer_data.items()]
    if tx_power is not None:
        structures.append((0x0A, struct.pack("<b", tx_power)))
    payload = b"".join(bytes([len(data) + 1, ad_type]) + data for ad_type, data in structures)
    if len(payload) > _MAX_LEGACY_ADVERTISING_BYTES:
        # Trap 5: the scan response is never delivered, so everything must fit in the ADV PDU.
        raise ValueError(f"advertising data is {len(payload)} bytes; legacy advertising allows 31")
    return payload


class HciTransport:
    """A real controller for one simulated wearable, opened with a bumble transport string.

    Examples: ``usb:0``, ``hci-socket:0``, ``serial:/dev/ttyUSB0``, ``tcp-client:127.0.0.1:9000``
    (see ``bumble.transport.open_transport``). One controller is one device on air, so each
    transport serves exactly one peripheral; the transport is opened on ``start()`` and closed on
    ``stop()``.
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._transport: Transport | None = None

    def __repr__(self) -> str:
        return f"HciTransport({self.spec!r})"

    async def open_device(self, name: str, address: str) -> Device:
        """Open the transport and wrap the controller behind it in an unpowered bumble Device."""
        if self._transport is not None:
            raise RuntimeError(f"transport {self.spec} already serves a peripheral")
        transport = await open_transport(self.spec)
        self._transport = transport
        return Device.with_hci(name, hci.Address(address), transport.source, transport.sink)

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()


@dataclass(slots=True)
class _CharacteristicState:
    spec: CharacteristicSpec
    value: bytes
    attribute: gatt.Characteristic[bytes] | None = None
    error_code: int | None = None
    notifying: bool = False
    indicating: bool = False
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    writes: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)


class SimulatedPeripheral:
    """A wearable with one bumble Device: on its own emulated Controller on the virtual radio, or
    on the real controller behind an :class:`HciTransport`.

    It accepts one central at a time, advertises again after every disconnect unless
    ``stop_advertising()`` was called, and keeps characteristic values across reconnects.
    """

    local_name: ClassVar[str] = "Simulated"
    services: ClassVar[tuple[ServiceSpec, ...]] = ()
    manufacturer_data: ClassVar[Mapping[int, bytes]] = MappingProxyType({})
    tx_power: ClassVar[int | None] = None

    def __init__(
        self,
        radio: VirtualRadio | HciTransport,
        *,
        address: str | None = None,
        name: str | None = None,
        advertising_interval_ms: float = 10.0,
        max_att_mtu: int = 517,
    ) -> None:
        self.radio = radio
        self.address = address or make_static_address()
        self.name = name or self.local_name
        self.advertising_interval_ms = advertising_interval_ms
        self.max_att_mtu = max_att_mtu
        self._states: dict[str, _CharacteristicState] = {}
        for service in self.services:
            for spec in service.characteristics:
                key = normalize_uuid(spec.uuid)
                if key in self._states:
                    raise ValueError(f"characteristic {key} declared twice in {type(self)}")
                self._states[key] = _CharacteristicState(spec, spec.value)
        self._advertising_data = build_advertising_data(
            self.name,
            (normalize_uuid(s.uuid) for s in self.services if s.advertised),
            self.manufacturer_data,
            self.tx_power,
        )
        self._device: Device | None = None
        self._controller: Controller | None = None
        self._connection: Connection | None = None
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._advertising_wanted = False
        self._advertising_lock = asyncio.Lock()
        self._readvertise: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    @property
    def is_advertising(self) -> bool:
        return self._advertising_wanted and self._connection is None

    async def start(self, *, advertise: bool = True) -> None:
        """Power on, publish the GATT database and (by default) start advertising."""
        if self._device is not None:
            raise RuntimeError(f"{self.name} is already started")
        device = await self._attach()
        device.gatt_server.max_mtu = self.max_att_mtu
        device.advertising_data = self._advertising_data
        device.add_services(self._build_services())
        device.on(device.EVENT_CONNECTION, self._on_connection)
        self._device = device
        try:
            await device.power_on()
        except BaseException:
            # A controller that fails to come up (unplugged dongle, busy socket) is released.
            self._device = None
            await self._detach()
            raise
        if advertise:
            await self.start_advertising()

    async def stop(self) -> None:
        """Drop any central (reason 0x13), stop advertising and leave the radio."""
        device = self._device
        if device is None:
            return
        self._advertising_wanted = False
        if self._readvertise is not None:
            # Let it finish: cancelling bumble mid-HCI-command leaves its host expecting a reply.
            with contextlib.suppress(Exception):
                await self._readvertise
            self._readvertise = None
        await self.disconnect(REMOTE_USER_TERMINATED)
        await device.stop_advertising()
        await device.power_off()
        await self._detach()
        self._device = None

    async def _attach(self) -> Device:
        """A new, unpowered Device on the virtual link or on the real controller."""
        if isinstance(self.radio, HciTransport):
            return await self.radio.open_device(self.name, self.address)
        device, self._controller = attach_device(self.radio.link, self.name, self.address)
        self.radio.track(self)
        return device

    async def _detach(self) -> None:
        if isinstance(self.radio, HciTransport):
            await self.radio.close()
            return
        if self._controller is not None:
            self.radio.link.remove_controller(self._controller)
            self._controller = None
        self.radio.untrack(self)

    def _build_services(self) -> list[gatt.Service]:
        services = []
        for service in self.services:
            characteristics = []
            for spec in service.characteristics:
                key = normalize_uuid(spec.uuid)
                state = self._states[key]
                attribute: gatt.Characteristic[bytes] = gatt.Characteristic(
                    bleak_uuid_to_bumble(key),  # 16-bit on the air, as a real wearable sends
                    spec.properties,
                    _permissions(spec),
                    gatt.CharacteristicValue(
                        read=lambda _connection, state=state: self._on_read(state),
                        write=lambda _connection, value, key=key: self._on_write(key, value),
                    ),
                )
                attribute.on(
                    attribute.EVENT_SUBSCRIPTION,
                    lambda _bearer, notify, indicate, state=state: _set_subscription(
                        state, notify, indicate
                    ),
                )
                state.attribute = attribute
                characteristics.append(attribute)
            service_uuid = bleak_uuid_to_bumble(normalize_uuid(service.uuid))
            services.append(gatt.Service(service_uuid, characteristics))
        return services

    def _on_read(self, state: _CharacteristicState) -> bytes:
        if not state.spec.properties & Properties.READ:
            raise att.ATT_Error(att.ATT_READ_NOT_PERMITTED_ERROR)
        if state.error_code is not None:
            raise att.ATT_Error(state.error_code)
        return state.value

    async def _on_write(self, key: str, value: bytes) -> None:
        state = self._states[key]
        if not state.spec.properties & (Properties.WRITE | Properties.WRITE_WITHOUT_RESPONSE):
            raise att.ATT_Error(att.ATT_WRITE_NOT_PERMITTED_ERROR)
        if state.error_code is not None:
            raise att.ATT_Error(state.error_code)
        state.writes.put_nowait(bytes(value))
        await self.on_write(key, bytes(value))

    async def on_write(self, characteristic_uuid: str, value: bytes) -> None:
        """Hook for subclasses (control points); raise ``att.ATT_Error`` to reject the write.

        The default makes a readable characteristic read back what was written.
        """
        if self._states[characteristic_uuid].spec.properties & Properties.READ:
            self.set_value(characteristic_uuid, value)

    def _on_connection(self, connection: Connection) -> None:
        self._connection = connection
        self._disconnected.clear()
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)

    def _on_disconnection(self, reason: int) -> None:
        self._connection = None
        for state in self._states.values():
            _set_subscription(state, notify=False, indicate=False)
        self._disconnected.set()
        if self._advertising_wanted and self._device is not None:
            self._readvertise = asyncio.create_task(self._apply_advertising())

    def _state(self, characteristic_uuid: str | int) -> _CharacteristicState:
        key = normalize_uuid(characteristic_uuid)
        try:
            return self._states[key]
        except KeyError:
            raise KeyError(f"{self.name} has no characteristic {key}") from None

    def subscribed(self, characteristic_uuid: str | int) -> asyncio.Event:
        """Set while a central has notifications or indications enabled (trap 8)."""
        return self._state(characteristic_uuid).subscribed

    def value(self, characteristic_uuid: str | int) -> bytes:
        return self._state(characteristic_uuid).value

    def set_value(self, characteristic_uuid: str | int, raw: bytes) -> None:
        """Change what reads return, e.g. the battery level or a device-information string."""
        self._state(characteristic_uuid).value = bytes(raw)

    def set_error(self, characteristic_uuid: str | int, error_code: int | None) -> None:
        """Make reads and writes fail with this ATT error code until reset with ``None``."""
        self._state(characteristic_uuid).error_code = error_code

    async def next_write(self, characteristic_uuid: str | int) -> bytes:
        """Wait for the next value a central writes (in order, none are skipped)."""
        return await self._state(characteristic_uuid).writes.get()

    async def notify(self, characteristic_uuid: str | int, raw: bytes) -> bool:
        """Send ``raw`` unchanged as a notification; False if no central has notify enabled.

        bumble cuts values to ATT_MTU-3, as a real link would never deliver more (trap 4).
        """
        state = self._state(characteristic_uuid)
        connection, device = self._connection, self._device
        if connection is None or device is None or state.attribute is None or not state.notifying:
            return False  # Trap 8: bumble would silently drop it.
        await device.notify_subscriber(connection, state.attribute, bytes(raw))
        return True

    async def indicate(self, characteristic_uuid: str | int, raw: bytes) -> bool:
        """Send ``raw`` as an indication; returns True once the central confirmed it.

        Returns False when nobody subscribed or the link dropped before the confirmation
        (bumble would otherwise wait out its 30 s GATT timeout).
        """
        state = self._state(characteristic_uuid)
        connection, device = self._connection, self._device
        if connection is None or device is None or state.attribute is None:
            return False
        if not state.indicating:
            return False
        confirmed = asyncio.ensure_future(
            device.indicate_subscriber(connection, state.attribute, bytes(raw))
        )
        dropped = asyncio.ensure_future(self._disconnected.wait())
        try:
            await asyncio.wait({confirmed, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
            if not confirmed.done():
                confirmed.cancel()
        # A cancelled task is only marked done once the loop runs it again.
        if not confirmed.done() or confirmed.cancelled():
            return False
        confirmed.result()
        return True

    async def disconnect(self, reason: int = CONNECTION_TIMEOUT) -> None:
        """Drop the central from the peripheral side: 0x08 "out of range", 0x13 user terminated.

        Trap 3: the link has no supervision timeout, so this is how a wearable "disappears".
        """
        connection = self._connection
        if connection is None:
            return
        try:
            await connection.disconnect(reason=reason)
        except Exception:
            if self._connection is not None:
                raise

    async def start_advertising(self) -> None:
        self._advertising_wanted = True
        await self._apply_advertising()

    async def stop_advertising(self) -> None:
        """Stop now and stay silent after the next disconnect too (device out of range)."""
        self._advertising_wanted = False
        await self._apply_advertising()

    async def _apply_advertising(self) -> None:
        # Own restart logic instead of bumble's auto_restart, which would resurrect advertising
        # that was stopped while a central was connected.
        async with self._advertising_lock:
            device = self._device
            if device is None:
                return
            if self._advertising_wanted and self._connection is None:
                await device.start_advertising(
                    advertising_interval_min=self.advertising_interval_ms,
                    advertising_interval_max=self.advertising_interval_ms,
                )
            else:
                await device.stop_advertising()


def _permissions(spec: CharacteristicSpec) -> gatt.Characteristic.Permissions:
    permissions = gatt.Characteristic.Permissions(0)
    if spec.properties & Properties.READ:
        permissions |= gatt.Characteristic.Permissions.READABLE
        if spec.encrypted:
            permissions |= gatt.Characteristic.Permissions.READ_REQUIRES_ENCRYPTION
    if spec.properties & (Properties.WRITE | Properties.WRITE_WITHOUT_RESPONSE):
        permissions |= gatt.Characteristic.Permissions.WRITEABLE
        if spec.encrypted:
            permissions |= gatt.Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION
    return permissions


def _set_subscription(state: _CharacteristicState, notify: bool, indicate: bool) -> None:
    state.notifying, state.indicating = notify, indicate
    if notify or indicate:
        state.subscribed.set()
    else:
        state.subscribed.clear()

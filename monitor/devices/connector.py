"""The BLE connector: find the configured wearables, keep their links up, turn bytes into readings.

Only bleak's public API is used, so the same code drives a real adapter or the simulators' virtual
radio (through bleak's ``backend=`` seam). Shape, after the lessons of Home Assistant's Bluetooth
stack: one scanner for the adapter (implicit per-client scans interfere), connects serialised per
adapter, a bounded number of simultaneous links, capped and jittered exponential backoff by error
kind, and a notify callback that only hands bytes to a bounded queue and counts what it must drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import fnmatch
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from monitor.backoff import Backoff
from monitor.clock import Clock
from monitor.devices import gatt
from monitor.devices.readings import (
    CHARACTERISTICS_BY_KIND,
    DeviceIdentity,
    UnknownCharacteristicError,
    decode_notification,
)
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

__all__ = [
    "RECONNECT_BACKOFF",
    "BleBackend",
    "Connector",
    "ConnectorSettings",
    "ConnectorStats",
    "DeviceBinding",
]

log = logging.getLogger(__name__)

SERVICE_UUIDS: Mapping[DeviceKind, str] = {
    DeviceKind.HEART_RATE: "0000180d-0000-1000-8000-00805f9b34fb",
    DeviceKind.BLOOD_PRESSURE: "00001810-0000-1000-8000-00805f9b34fb",
    DeviceKind.THERMOMETER: "00001809-0000-1000-8000-00805f9b34fb",
    DeviceKind.PULSE_OXIMETER: "00001822-0000-1000-8000-00805f9b34fb",
}
_SIG_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"


def _uuid16(uuid: str) -> int | None:
    """The 16-bit short form of a SIG UUID, or None for a vendor UUID."""
    lowered = uuid.lower()
    if len(lowered) == 36 and lowered.startswith("0000") and lowered.endswith(_SIG_BASE_SUFFIX):
        return int(lowered[4:8], 16)
    return None


def _uuid128(short: int) -> str:
    return f"0000{short:04x}{_SIG_BASE_SUFFIX}"


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """A configured wearable: which participant wears it and how to recognise it on air."""

    identity: DeviceIdentity
    kind: DeviceKind
    address: str | None = None
    name_pattern: str | None = None

    def matches(self, device: BLEDevice, advertisement: AdvertisementData) -> bool:
        """Address wins when configured; otherwise the advertised name against the glob."""
        if self.address is not None:
            return device.address.upper() == self.address.upper()
        name = advertisement.local_name or device.name
        return (
            self.name_pattern is not None
            and name is not None
            and fnmatch.fnmatchcase(name, self.name_pattern)
        )


@dataclass(frozen=True, slots=True)
class BleBackend:
    """How to reach the radio: bleak's platform default, or another backend (the simulators')."""

    scanner: type[Any] | None = None
    client: type[Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


RECONNECT_BACKOFF = Backoff(initial_s=0.5, max_s=30.0, jitter=1.0)
"""Reconnect delays after a timeout; other causes start sooner or later (``_BACKOFF_SCALE``).
Full jitter: a room's wearables that drop together do not come back together."""


@dataclass(frozen=True, slots=True)
class ConnectorSettings:
    """Tunables; defaults follow what real adapters and wearables do."""

    max_links: int = 7  # simultaneous links one adapter holds reliably (CSR ~5, Broadcom ~7)
    connect_timeout_s: float = 20.0  # bleak-retry-connector's per-attempt timeout
    queue_size: int = 4096  # notifications waiting for the decoder
    backoff: Backoff = RECONNECT_BACKOFF
    no_data_after_s: Mapping[DeviceKind, float] = field(
        default_factory=lambda: {
            DeviceKind.HEART_RATE: 15.0,
            DeviceKind.PULSE_OXIMETER: 15.0,
            DeviceKind.THERMOMETER: 120.0,
            DeviceKind.BLOOD_PRESSURE: 900.0,  # cuffs measure every few minutes
        }
    )
    battery_low_percent: float = 20.0
    malformed_rate_window_s: float = 60.0
    malformed_rate_limit: int = 5  # rejected payloads per window before a rate event


@dataclass(slots=True)
class ConnectorStats:
    """Counters the service exposes; nothing the connector drops goes uncounted."""

    notifications: int = 0
    readings: int = 0
    dropped: int = 0
    malformed: int = 0
    unknown_characteristic: int = 0
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0


class _FailureKind(enum.Enum):
    NOT_FOUND = "not_found"  # wait for it to advertise again
    TIMEOUT = "timeout"
    PROTOCOL = "protocol"  # the device refused a GATT operation
    OTHER = "other"


_BACKOFF_SCALE = {
    _FailureKind.NOT_FOUND: 0.5,  # it may advertise again any moment
    _FailureKind.TIMEOUT: 1.0,
    _FailureKind.PROTOCOL: 4.0,  # a device refusing GATT operations needs time to settle
    _FailureKind.OTHER: 2.0,
}


def _classify(error: BaseException) -> _FailureKind:
    if isinstance(error, BleakDeviceNotFoundError):
        return _FailureKind.NOT_FOUND
    if isinstance(error, TimeoutError):
        return _FailureKind.TIMEOUT
    if isinstance(error, BleakGATTProtocolError):
        return _FailureKind.PROTOCOL
    return _FailureKind.OTHER


@dataclass(slots=True)
class _Link:
    """Mutable per-device state owned by the connector."""

    binding: DeviceBinding
    state: DeviceState = DeviceState.SEARCHING
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    device: BLEDevice | None = None
    last_data: float | None = None  # clock.monotonic() of the last payload
    silent: bool = False
    contact_lost: bool = False
    battery_low: bool = False
    malformed_times: list[float] = field(default_factory=list)
    malformed_rate_high: bool = False


Notification = tuple[int, int, bytes, dt.datetime]  # link index, characteristic, payload, time


class Connector:
    """Runs the configured wearables until cancelled; readings and device events go to callbacks.

    The callbacks are called from the decoder task, never from bleak's notify callback, and must
    not block (hand off to a queue if the work is slow).
    """

    def __init__(
        self,
        bindings: Sequence[DeviceBinding],
        on_reading: Callable[[Reading], None],
        on_event: Callable[[DeviceEvent], None],
        *,
        clock: Clock,
        backend: BleBackend | None = None,
        settings: ConnectorSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._links = [_Link(binding) for binding in bindings]
        self._on_reading = on_reading
        self._on_event = on_event
        self._clock = clock
        self._backend = backend or BleBackend()
        self._settings = settings or ConnectorSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(self._settings.queue_size)
        self._link_slots = asyncio.Semaphore(self._settings.max_links)
        self._connect_lock = asyncio.Lock()
        self.stats = ConnectorStats()

    def states(self) -> dict[str, DeviceState]:
        """Current state of every configured device, by device id."""
        return {link.binding.identity.device: link.state for link in self._links}

    async def run(self) -> None:
        """Scan, connect and decode until cancelled; links are closed on the way out."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._scan_loop(), name="connector.scan_loop")
                group.create_task(self._decode_loop(), name="connector.decode_loop")
                group.create_task(self._watchdog_loop(), name="connector.watchdog_loop")
                for index, link in enumerate(self._links):
                    group.create_task(
                        self._link_loop(index, link),
                        name=f"connector.link_loop[{link.binding.identity.device}]",
                    )
        finally:
            for link in self._links:
                link.state = DeviceState.STOPPED

    # -- scanning ---------------------------------------------------------------------------

    def _on_advertisement(self, device: BLEDevice, advertisement: AdvertisementData) -> None:
        for link in self._links:
            if link.binding.matches(device, advertisement):
                link.device = device
                link.seen.set()

    async def _scan_loop(self) -> None:
        uuids = sorted({SERVICE_UUIDS[link.binding.kind] for link in self._links})
        scanner = BleakScanner(
            self._on_advertisement,
            service_uuids=uuids,
            backend=self._backend.scanner,
            **self._backend.options,
        )
        async with scanner:
            await asyncio.Event().wait()  # scan until cancelled

    # -- one link ---------------------------------------------------------------------------

    async def _link_loop(self, index: int, link: _Link) -> None:
        attempt = 0
        while True:
            await link.seen.wait()
            link.seen.clear()
            assert link.device is not None
            disconnected = asyncio.Event()
            connected = False
            failure: Exception | None = None
            async with self._link_slots:
                client: BleakClient | None = None
                silent_since = link.last_data
                try:
                    client = await self._connect(link, link.device, disconnected)
                    connected = True
                    await self._subscribe(index, link, client)
                    gap = None if silent_since is None else self._clock.monotonic() - silent_since
                    self._set_state(link, DeviceState.CONNECTED, gap_s=gap)
                    attempt = 0
                    await disconnected.wait()
                except (BleakError, TimeoutError, OSError, EOFError) as error:
                    failure = error
                except Exception as error:  # a bug must not take every other link down
                    log.exception("device %s: unexpected error", link.binding.identity.device)
                    failure = error
                finally:
                    if client is not None:
                        with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
                            await client.disconnect()
            if connected:
                self.stats.disconnects += 1
                detail = "link lost" if failure is None else f"link lost: {failure}"
                self._set_state(link, DeviceState.LOST, detail=detail)
            elif failure is not None:
                self.stats.connect_failures += 1
                self._emit(
                    link,
                    DeviceEventType.CONNECT_FAILED,
                    detail=f"{_classify(failure).value}: {failure}",
                )
            if failure is not None:
                backoff = self._settings.backoff.scaled(_BACKOFF_SCALE[_classify(failure)])
                delay = backoff.delay(attempt, self._rng)
                attempt += 1
                await self._clock.sleep(delay)

    async def _connect(
        self, link: _Link, device: BLEDevice, disconnected: asyncio.Event
    ) -> BleakClient:
        reconnect = link.state is not DeviceState.SEARCHING
        self._set_state(link, DeviceState.RECONNECTING if reconnect else DeviceState.CONNECTING)
        client = BleakClient(
            device,
            disconnected_callback=lambda _client: disconnected.set(),
            timeout=self._settings.connect_timeout_s,
            backend=self._backend.client,
            **self._backend.options,
        )
        async with self._connect_lock:
            await client.connect()
        self.stats.connects += 1
        return client

    async def _subscribe(self, index: int, link: _Link, client: BleakClient) -> None:
        wanted = (*CHARACTERISTICS_BY_KIND[link.binding.kind], gatt.BATTERY_LEVEL)
        subscribed = 0
        for short in wanted:
            characteristic = client.services.get_characteristic(_uuid128(short))
            if characteristic is None:
                continue
            if short == gatt.BATTERY_LEVEL and "read" in characteristic.properties:
                self._hand_off(index, short, bytes(await client.read_gatt_char(characteristic)))
            if {"notify", "indicate"} & set(characteristic.properties):
                await client.start_notify(characteristic, self._notify_callback(index))
                subscribed += 1
        if subscribed == 0:
            msg = f"{link.binding.kind} device exposes none of the expected characteristics"
            raise BleakError(msg)

    def _notify_callback(self, index: int) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        def on_notify(characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
            short = _uuid16(characteristic.uuid)
            self._hand_off(index, short if short is not None else -1, bytes(data))

        return on_notify

    def _hand_off(self, index: int, characteristic: int, payload: bytes) -> None:
        """Runs inside bleak's callback: enqueue or count, never block, never raise."""
        self.stats.notifications += 1
        try:
            self._queue.put_nowait((index, characteristic, payload, self._clock.now()))
        except asyncio.QueueFull:
            self.stats.dropped += 1

    # -- decoding ---------------------------------------------------------------------------

    async def _decode_loop(self) -> None:
        reported_drops = 0
        while True:
            index, characteristic, payload, received_at = await self._queue.get()
            link = self._links[index]
            link.last_data = self._clock.monotonic()
            if link.silent:
                link.silent = False
                self._emit(link, DeviceEventType.DATA_RESUMED)
            if self.stats.dropped > reported_drops:
                reported_drops = self.stats.dropped
                self._emit(
                    link,
                    DeviceEventType.NOTIFICATIONS_DROPPED,
                    detail="decoder queue full",
                    count=reported_drops,
                )
            self._decode(link, characteristic, payload, received_at)

    def _decode(
        self, link: _Link, characteristic: int, payload: bytes, received_at: dt.datetime
    ) -> None:
        try:
            reading = decode_notification(
                characteristic, payload, link.binding.identity, received_at
            )
        except gatt.GattParseError as error:
            self._reject(link, characteristic, payload, str(error))
            return
        except UnknownCharacteristicError as error:
            self.stats.unknown_characteristic += 1
            self._reject(link, characteristic, payload, str(error))
            return
        self.stats.readings += 1
        self._track_conditions(link, reading)
        self._on_reading(reading)

    def _reject(self, link: _Link, characteristic: int, payload: bytes, reason: str) -> None:
        self.stats.malformed += 1
        log.warning(
            "device %s: rejected payload %s: %s",
            link.binding.identity.device,
            payload.hex(),
            reason,
        )
        self._emit(
            link,
            DeviceEventType.MALFORMED_PAYLOAD,
            detail=reason,
            characteristic=f"0x{characteristic:04X}" if characteristic >= 0 else None,
            payload_hex=payload.hex(),
        )
        now = self._clock.monotonic()
        window = self._settings.malformed_rate_window_s
        link.malformed_times = [t for t in link.malformed_times if now - t < window]
        link.malformed_times.append(now)
        if len(link.malformed_times) > self._settings.malformed_rate_limit:
            if not link.malformed_rate_high:
                link.malformed_rate_high = True
                self._emit(
                    link,
                    DeviceEventType.MALFORMED_RATE_HIGH,
                    detail=f"more than {self._settings.malformed_rate_limit} rejected payloads "
                    f"in {window:g} s",
                    count=len(link.malformed_times),
                )
        else:
            link.malformed_rate_high = False

    def _track_conditions(self, link: _Link, reading: Reading) -> None:
        contact_lost = QualityFlag.SENSOR_CONTACT_LOST in reading.quality
        if reading.kind is not ReadingKind.BATTERY and contact_lost != link.contact_lost:
            link.contact_lost = contact_lost
            self._emit(
                link,
                DeviceEventType.SENSOR_CONTACT_LOST
                if contact_lost
                else DeviceEventType.SENSOR_CONTACT_RESTORED,
            )
        battery = reading.values.get(Parameter.BATTERY)
        if battery is not None:
            low = battery <= self._settings.battery_low_percent
            if low and not link.battery_low:
                self._emit(link, DeviceEventType.BATTERY_LOW, battery_percent=battery)
            link.battery_low = low

    # -- silence ----------------------------------------------------------------------------

    async def _watchdog_loop(self) -> None:
        period = min(self._settings.no_data_after_s.values()) / 3
        while True:
            await self._clock.sleep(period)
            now = self._clock.monotonic()
            for link in self._links:
                limit = self._settings.no_data_after_s[link.binding.kind]
                since = link.last_data
                if link.silent or since is None or now - since < limit:
                    continue
                link.silent = True
                self._emit(
                    link,
                    DeviceEventType.NO_DATA,
                    detail=f"no data for {now - since:.0f} s",
                    gap_s=now - since,
                )

    # -- events -----------------------------------------------------------------------------

    def _set_state(self, link: _Link, state: DeviceState, **fields: Any) -> None:
        link.state = state
        self._emit(link, DeviceEventType.STATE_CHANGED, **fields)

    def _emit(self, link: _Link, event: DeviceEventType, **fields: Any) -> None:
        identity = link.binding.identity
        device_event = DeviceEvent(
            session=identity.session,
            participant=identity.participant,
            device=identity.device,
            device_kind=link.binding.kind,
            event=event,
            state=link.state,
            occurred_at=self._clock.now(),
            **fields,
        )
        log.info(
            "device %s (%s): %s %s %s",
            identity.device,
            identity.participant,
            event.value,
            link.state.value,
            fields.get("detail", ""),
        )
        self._on_event(device_event)

"""The virtual radio: one in-process bumble ``LocalLink`` plus a lazily powered central adapter.

Everything that shares a radio can hear everything else on it; a test builds a new radio so no
state (bonds, pending connects, advertisers) leaks between tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from bleak.exc import BleakDeviceNotFoundError
from bumble import hci
from bumble.controller import Controller
from bumble.device import Advertisement, Connection, Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from simulators.radio.backend import BumbleClient, BumbleScanner, bind_client, bind_scanner

AdvertisementListener = Callable[[Advertisement], None]

_address_counter = itertools.count(1)


def make_static_address() -> str:
    """Return a process-unique random-static address (top two bits set), e.g. ``C0:00:00:00:00:07``.

    Unique per process rather than per radio so that a peripheral created for one radio can never be
    confused with another in logs or in a test that builds several radios.
    """
    serial = next(_address_counter)
    if serial >= 1 << 40:
        raise OverflowError("address space of the simulator exhausted")
    octets = [0xC0, *serial.to_bytes(5, "big")]
    return ":".join(f"{octet:02X}" for octet in octets)


class _CancellableHost(Host):
    """A bumble Host whose commands may be cancelled while the controller answers.

    Cancelling a task waiting on an HCI command (a service shutting down mid-connect) cancels
    the host's pending-response future; the controller's answer, already scheduled on the loop,
    then finds that future done and bumble's ``set_result`` raises ``InvalidStateError`` in a
    loop callback: a traceback on stderr for an orderly stop. The answer to a command nobody
    waits for any more is dropped instead.
    """

    def on_command_processed(
        self, event: hci.HCI_Command_Complete_Event[Any] | hci.HCI_Command_Status_Event
    ) -> None:
        pending = self.pending_response
        if pending is not None and pending.done():
            return  # its waiter was cancelled; _send_command's cleanup frees the slot
        super().on_command_processed(event)


def attach_device(link: LocalLink, name: str, address: str) -> tuple[Device, Controller]:
    """Wire one bumble Device to its own emulated Controller on ``link`` (not yet powered)."""
    controller = Controller(name, link=link)
    device = Device(
        name=name,
        address=hci.Address(address),
        host=_CancellableHost(controller, AsyncPipeSink(controller)),
    )
    return device, controller


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


class VirtualRadio:
    """Owns the link and the central adapter that the bleak backends talk through.

    Use as ``async with VirtualRadio() as radio:``. Pass it to bleak either as the
    ``bumble_radio=radio`` keyword (with ``backend=BumbleScanner``/``BumbleClient``) or use the
    pre-bound ``radio.scanner_backend``/``radio.client_backend`` classes, which need no extra
    keyword and so fit code that only lets you choose the backend class.
    """

    def __init__(self, *, central_address: str | None = None) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]  # bumble leaves it unannotated
        self.central_address = central_address or make_static_address()
        self.scanner_backend: type[BumbleScanner] = bind_scanner(self)
        self.client_backend: type[BumbleClient] = bind_client(self)
        self._central: Device | None = None
        self._central_controller: Controller | None = None
        self._power_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._listeners: set[AdvertisementListener] = set()
        self._peripherals: set[_Stoppable] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every peripheral still running and power the central off."""
        self._closed = True
        for peripheral in list(self._peripherals):
            await peripheral.stop()
        self._listeners.clear()
        central, controller = self._central, self._central_controller
        self._central = self._central_controller = None
        if central is None or controller is None:
            return
        for connection in list(central.connections.values()):
            await connection.disconnect()
        if central.is_scanning:
            await central.stop_scanning()
        await central.power_off()
        self.link.remove_controller(controller)

    def track(self, peripheral: _Stoppable) -> None:
        """Remember a started peripheral so that closing the radio stops it."""
        self._peripherals.add(peripheral)

    def untrack(self, peripheral: _Stoppable) -> None:
        self._peripherals.discard(peripheral)

    async def central(self) -> Device:
        """The powered-on central adapter, created on first use."""
        async with self._power_lock:
            if self._closed:
                raise RuntimeError("the virtual radio is closed")
            if self._central is None:
                device, controller = attach_device(self.link, "central", self.central_address)
                device.on(device.EVENT_ADVERTISEMENT, self._dispatch_advertisement)
                await device.power_on()
                self._central, self._central_controller = device, controller
            return self._central

    async def add_advertisement_listener(self, listener: AdvertisementListener) -> None:
        """Start scanning (shared, reference-counted by listener) and deliver every report."""
        central = await self.central()
        async with self._scan_lock:
            self._listeners.add(listener)
            if not central.is_scanning:
                await central.start_scanning(active=True, filter_duplicates=False)

    async def remove_advertisement_listener(self, listener: AdvertisementListener) -> None:
        async with self._scan_lock:
            self._listeners.discard(listener)
            central = self._central
            if not self._listeners and central is not None and central.is_scanning:
                await central.stop_scanning()

    def _dispatch_advertisement(self, advertisement: Advertisement) -> None:
        for listener in tuple(self._listeners):
            listener(advertisement)

    async def wait_for_advertisement(self, address: hci.Address, timeout_s: float) -> hci.Address:
        """Wait for a connectable advertisement from ``address``; return it as advertised.

        Raises ``BleakDeviceNotFoundError`` after ``timeout_s`` like a real stack's "not found".
        """
        seen: asyncio.Future[hci.Address] = asyncio.get_running_loop().create_future()

        def on_advertisement(advertisement: Advertisement) -> None:
            if (
                advertisement.is_connectable
                and bytes(advertisement.address) == bytes(address)
                and not seen.done()
            ):
                seen.set_result(advertisement.address)

        await self.add_advertisement_listener(on_advertisement)
        try:
            async with asyncio.timeout(timeout_s):
                return await seen
        except TimeoutError:
            raise BleakDeviceNotFoundError(
                str(address), f"Device with address {address} was not found."
            ) from None
        finally:
            await self.remove_advertisement_listener(on_advertisement)

    async def connect(self, address: hci.Address, timeout_s: float) -> Connection:
        """Connect the central to ``address``; ``BleakDeviceNotFoundError`` if it is silent."""
        # Trap 2: the emulated controller never completes a connect to a silent address and a
        # cancelled connect wedges it, so only connect after seeing the device advertise.
        advertised_address = await self.wait_for_advertisement(address, timeout_s)
        async with self._connect_lock:  # Trap 11: one pending LE connect per bumble Device.
            central = await self.central()
            try:
                return await asyncio.wait_for(
                    central.connect_le(advertised_address, timeout=None), timeout_s
                )
            except TimeoutError:
                await self._abandon_connect(central, advertised_address)
                raise

    async def _abandon_connect(self, central: Device, address: hci.Address) -> None:
        """Undo a connect that timed out after the device stopped advertising mid-connect."""
        # Trap 2, last resort: bumble's cancel leaves the controller's pending connect set, which
        # would make every later connect fail with COMMAND_DISALLOWED.
        if self._central_controller is not None:
            self._central_controller.pending_le_connection = None
        if (stray := central.find_connection_by_bd_addr(address)) is not None:
            await stray.disconnect()

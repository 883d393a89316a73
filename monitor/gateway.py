"""``monitor gateway``: the wearables of some rooms, published as numbered reading batches.

A BLE adapter reaches one room and holds about ten links, so a site with several rooms runs a
gateway beside each room and one detector that reads every gateway's batches from the broker
(``monitor run`` is both roles in one process). A gateway keeps nothing itself: it runs a
:class:`~monitor.devices.connector.Connector` per room and, every ``BATCH_INTERVAL_S`` (the
detector's interval too, so a reading waits no longer than it would in ``monitor run``),
publishes what arrived as one :class:`~monitor.mqtt.payloads.VitalsBatch` per participant, numbered
per topic so the detector counts what is lost, and every device event retained per device.

It needs the site's broker: an embedded one would reach nobody. On SIGINT/SIGTERM (cancellation)
the connectors stop, what they read is still handed to the outbox, and the link gives the broker
its drain timeout to acknowledge it before disconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from pydantic import TypeAdapter, ValidationError

from monitor.clock import Clock
from monitor.config import Secrets, SiteConfig, resolve_mqtt_config
from monitor.devices.connector import BleBackend, Connector, ConnectorSettings
from monitor.models import DeviceEvent, Identifier, Reading
from monitor.mqtt.client import (
    BATCH_INTERVAL_S,
    DETECTOR_NAME,
    GatewayPublisher,
    MqttLink,
)
from monitor.mqtt.settings import MQTT_URL_ENV, BrokerSettings
from monitor.mqtt.topics import Topics
from monitor.mqtt.tracking import BatchNumbering
from monitor.recording import bindings_by_room

__all__ = ["Gateway", "GatewaySummary"]

_log = logging.getLogger(__name__)
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


@dataclasses.dataclass(slots=True)
class GatewaySummary:
    """What a run sent, for the exit report and the tests."""

    name: str
    rooms: tuple[str, ...]
    mqtt_url: str
    readings: int = 0
    device_events: int = 0
    batches: int = 0
    acknowledged: int = 0  # messages the broker acknowledged
    unacknowledged: int = 0  # still in the outbox when the link closed: not delivered

    def lines(self) -> list[str]:
        return [
            f"gateway: {self.name} (rooms: {', '.join(self.rooms)})",
            f"readings: {self.readings}",
            f"device events: {self.device_events}",
            f"batches: {self.batches}",
            f"MQTT: {self.mqtt_url}, {self.acknowledged} message(s) acknowledged, "
            f"{self.unacknowledged} not",
        ]


class Gateway:
    """The whole of ``monitor gateway`` for some rooms of one site (see the module docstring).

    Every argument is checked here, before anything starts: unknown or empty rooms, a name that is
    not an identifier, no broker configured, a bad ``MONITOR_MQTT_URL`` all raise ``ValueError``.
    """

    def __init__(
        self,
        config: SiteConfig,
        *,
        clock: Clock,
        backend: BleBackend,
        rooms: Sequence[str] | None = None,
        name: str | None = None,
        duration_s: float | None = None,
        simulation: AbstractAsyncContextManager[object] | None = None,
        environ: Mapping[str, str] | None = None,
        on_reading: Callable[[Reading], None] | None = None,
        on_device_event: Callable[[DeviceEvent], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.duration_s = duration_s
        bindings = bindings_by_room(config)
        self.rooms = _chosen_rooms(config, bindings, rooms)
        self.name = _gateway_name(config, self.rooms, name)
        mqtt = resolve_mqtt_config(config, os.environ if environ is None else environ)
        if mqtt is None:
            msg = (
                "no MQTT broker configured: a gateway publishes to the site's broker, an embedded "
                f"one would reach nobody (set [mqtt] url in the site file or {MQTT_URL_ENV})"
            )
            raise ValueError(msg)
        broker = mqtt.settings(Secrets())
        if broker.client_id is not None:  # the site's id is the detector's: one client id each
            broker = dataclasses.replace(broker, client_id=f"{broker.client_id}-{self.name}")
        self._mqtt: BrokerSettings = broker
        self._bindings = {room: bindings[room] for room in self.rooms}
        self._backend = backend
        self._simulation = simulation
        self._on_reading = on_reading
        self._on_device_event = on_device_event
        self._readings: list[Reading] = []
        self._device_events: list[DeviceEvent] = []
        self._pending = asyncio.Event()
        self.connectors: list[Connector] = []
        self.summary = GatewaySummary(self.name, self.rooms, f"{mqtt.host}:{mqtt.port}")

    async def run(self) -> GatewaySummary:
        """Run until ``duration_s`` passes or the task is cancelled (SIGINT/SIGTERM).

        :attr:`summary` is complete also when cancelled, once this returns or raises.
        """
        topics = Topics(self._mqtt.topic_root, self.config.site.code)
        # no status topic: the contract gives gateways none (the detector sees their readings)
        link = MqttLink.from_settings(self._mqtt, topics=topics, service=self.name, status=False)
        publisher = GatewayPublisher(link, topics, BatchNumbering(self.name))
        self.connectors = [self._connector(room) for room in self.rooms]
        _log.info(
            "gateway %s: %d device(s) in room(s) %s, to %s",
            self.name,
            sum(len(bindings) for bindings in self._bindings.values()),
            ", ".join(self.rooms),
            self.summary.mqtt_url,
        )
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(link)
                if self._simulation is not None:  # wearables on air before the scan starts
                    await stack.enter_async_context(self._simulation)
                await self._serve(publisher, link)
        finally:
            self.summary.acknowledged = link.stats.published
            self.summary.unacknowledged = link.queued
        return self.summary

    async def _serve(self, publisher: GatewayPublisher, link: MqttLink) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.duration_s), asyncio.TaskGroup() as group:
                    group.create_task(link.until_unusable(), name="gateway.broker_watch")
                    for room, connector in zip(self.rooms, self.connectors, strict=True):
                        group.create_task(connector.run(), name=f"gateway.connector[{room}]")
                    group.create_task(self._publish_loop(publisher), name="gateway.publish")
        finally:
            # also on SIGINT/SIGTERM: what was read goes to the outbox, which the link drains
            # on the way out
            self._flush(publisher)

    def _connector(self, room: str) -> Connector:
        def on_reading(reading: Reading) -> None:
            self._readings.append(reading)
            self._pending.set()

        def on_event(event: DeviceEvent) -> None:
            self._device_events.append(event)
            self._pending.set()

        return Connector(
            self._bindings[room],
            on_reading,
            on_event,
            clock=self.clock,
            backend=self._backend,
            settings=ConnectorSettings(max_links=self.config.room(room).max_connections),
        )

    async def _publish_loop(self, publisher: GatewayPublisher) -> None:
        """Gather for ``BATCH_INTERVAL_S`` after the first new item, then publish (wall time:
        the interval bounds a reading's wait, whatever the session clock's speed)."""
        while True:
            await self._pending.wait()
            await asyncio.sleep(BATCH_INTERVAL_S)
            self._flush(publisher)

    def _flush(self, publisher: GatewayPublisher) -> None:
        """Hand everything gathered to the outbox; publishing never blocks."""
        readings, self._readings = self._readings, []
        events, self._device_events = self._device_events, []
        self._pending.clear()
        if readings:
            batches = publisher.readings_by_participant(readings, self.clock.now())
            self.summary.batches += len(batches)
        for event in events:
            publisher.device(event)
        self.summary.readings += len(readings)
        self.summary.device_events += len(events)
        if self._on_reading is not None:
            for reading in readings:
                self._on_reading(reading)
        if self._on_device_event is not None:
            for event in events:
                self._on_device_event(event)


def _chosen_rooms(
    config: SiteConfig, bindings: Mapping[str, object], rooms: Sequence[str] | None
) -> tuple[str, ...]:
    """The rooms asked for (in order, once each), or every room with devices."""
    if not rooms:
        if not bindings:
            msg = "no room of the site file has devices"
            raise ValueError(msg)
        return tuple(bindings)
    chosen = tuple(dict.fromkeys(rooms))
    known = [room.id for room in config.rooms]
    unknown = [room for room in chosen if room not in known]
    if unknown:
        msg = f"no room {', '.join(unknown)} in the site file (rooms: {', '.join(known)})"
        raise ValueError(msg)
    empty = [room for room in chosen if room not in bindings]
    if empty:
        msg = f"room {', '.join(empty)} has no devices (no session there has any)"
        raise ValueError(msg)
    return chosen


def _gateway_name(config: SiteConfig, rooms: Sequence[str], name: str | None) -> str:
    """``gateway-<room>`` for one room, ``gateway-<site>`` for several, unless named."""
    if name is None:
        name = f"gateway-{rooms[0]}" if len(rooms) == 1 else f"gateway-{config.site.code}"
    try:
        name = _IDENTIFIER.validate_python(name)
    except ValidationError:
        msg = f"gateway name {name!r} is not an identifier (1-64 letters, digits, '.', '_', '-')"
        raise ValueError(msg) from None
    if name == DETECTOR_NAME:  # the detector numbers the batches of its own connector so
        msg = f"{DETECTOR_NAME!r} is the detector's name; choose another gateway name"
        raise ValueError(msg)
    return name

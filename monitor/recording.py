"""``monitor record``: capture what the configured wearables send into JSON-lines files.

Useful for capturing a real session, and the input of ``monitor replay``. One connector per room
(a BLE adapter serves one room); every reading goes to ``readings.jsonl`` and every device event
(link changes, silence, rejected payloads with their bytes) to ``device-events.jsonl``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from monitor.clock import Clock
from monitor.config import SiteConfig
from monitor.devices.connector import (
    BleBackend,
    Connector,
    ConnectorSettings,
    ConnectorStats,
    DeviceBinding,
)
from monitor.devices.readings import DeviceIdentity
from monitor.jsonl import JsonlWriter
from monitor.models import DeviceEvent, DeviceEventType, Reading

__all__ = ["DEVICE_EVENTS_FILE", "READINGS_FILE", "RecordSummary", "bindings_by_room", "record"]

READINGS_FILE = "readings.jsonl"
DEVICE_EVENTS_FILE = "device-events.jsonl"


def bindings_by_room(config: SiteConfig) -> dict[str, list[DeviceBinding]]:
    """Every configured device bound to its participant, grouped by the room's adapter."""
    zone = config.site.zone
    rooms: dict[str, list[DeviceBinding]] = {room.id: [] for room in config.rooms}
    for session in config.sessions:
        for participant in session.participants:
            for device in participant.devices:
                identity = DeviceIdentity(
                    session=session.id,
                    participant=participant.code,
                    device=device.id,
                    timezone=zone,
                )
                rooms[session.room].append(
                    DeviceBinding(
                        identity=identity,
                        kind=device.kind,
                        address=device.address,
                        name_pattern=device.name_pattern,
                    )
                )
    return {room: bindings for room, bindings in rooms.items() if bindings}


@dataclass(slots=True)
class RecordSummary:
    """What a recording captured, for the closing report."""

    readings_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    events_by_type: collections.Counter[str] = field(default_factory=collections.Counter)
    stats: list[ConnectorStats] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A short human report."""
        lines = [f"readings: {sum(self.readings_by_kind.values())}"]
        lines += [f"  {kind}: {n}" for kind, n in sorted(self.readings_by_kind.items())]
        lines.append(f"device events: {sum(self.events_by_type.values())}")
        lines += [f"  {event}: {n}" for event, n in sorted(self.events_by_type.items())]
        dropped = sum(s.dropped for s in self.stats)
        malformed = sum(s.malformed for s in self.stats)
        lines.append(f"rejected payloads: {malformed}; notifications dropped: {dropped}")
        return lines


async def record(
    config: SiteConfig,
    out: Path,
    *,
    duration_s: float | None,
    clock: Clock,
    backend: BleBackend,
    simulation: AbstractAsyncContextManager[object] | None = None,
    rooms: Sequence[str] | None = None,
) -> RecordSummary:
    """Record until ``duration_s`` wall seconds pass (or forever, until cancelled).

    ``simulation`` (simulated wearables, from the CLI's ``--simulate``) is entered first and left
    last, so the wearables are advertising before the connectors scan.
    """
    summary = RecordSummary()
    room_bindings = bindings_by_room(config)
    chosen = list(rooms) if rooms is not None else list(room_bindings)
    async with contextlib.AsyncExitStack() as stack:
        readings = await stack.enter_async_context(JsonlWriter(out / READINGS_FILE))
        events = await stack.enter_async_context(JsonlWriter(out / DEVICE_EVENTS_FILE))
        if simulation is not None:
            await stack.enter_async_context(simulation)

        def on_reading(reading: Reading) -> None:
            summary.readings_by_kind[reading.kind.value] += 1
            readings.put(reading)

        def on_event(event: DeviceEvent) -> None:
            if event.event is not DeviceEventType.STATE_CHANGED:
                summary.events_by_type[event.event.value] += 1
            events.put(event)

        connectors = [
            Connector(
                room_bindings[room],
                on_reading,
                on_event,
                clock=clock,
                backend=backend,
                settings=ConnectorSettings(max_links=config.room(room).max_connections),
            )
            for room in chosen
        ]
        summary.stats = [connector.stats for connector in connectors]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration_s), asyncio.TaskGroup() as group:
                for room, connector in zip(chosen, connectors, strict=True):
                    group.create_task(connector.run(), name=f"record.connector[{room}]")
    return summary

"""``monitor run``: wearables -> detection -> alarms to the people who must act; everything kept.

One TaskGroup holds the whole service: a BLE connector per room, the detection loop (one
:class:`DetectionPipeline` per session), the staff command channel, the InfluxDB writer and the
optional live view and HTTP server. Every connection is an async context manager entered on one
``AsyncExitStack``, so SIGINT/SIGTERM (cancellation) closes them in reverse order: the wearables
stop, the last events are flushed to the spool and the outbox, the broker sees a clean
``offline``.

Where things go:

- every reading and device event: the spool (-> InfluxDB or the local store), MQTT for
  dashboards, ``--record`` files;
- every alarm transition: a log line, MQTT (event, escalation when it applies, the session's
  retained snapshot), the spool, ``--record``'s ``alarms.jsonl``. Nothing is dropped: the outbox
  and the spool are the two places an event waits when a broker or database is away.

Connection settings: the site file, overridden by ``MONITOR_MQTT_URL`` / ``MONITOR_INFLUX_*``.
Without a broker the embedded one (:mod:`monitor.broker`) runs on loopback; without InfluxDB the
spool file is the local store (``monitor export`` reads it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Literal

from monitor.alerts.compile import STORAGE_BACKLOG, STORAGE_FAILED, compile_rules
from monitor.alerts.pipeline import DetectionPipeline, to_ms
from monitor.alerts.rules import RuleSet
from monitor.broker import EmbeddedBroker
from monitor.clock import AcceleratedClock, Clock, FollowingClock
from monitor.config import (
    MqttConfig,
    Secrets,
    SiteConfig,
    resolve_influx_config,
    resolve_mqtt_config,
)
from monitor.devices.connector import BleBackend, Connector, ConnectorSettings
from monitor.jsonl import JsonlWriter
from monitor.live import LiveState, run_live_view
from monitor.metrics import HttpServer, Metrics, metrics_route
from monitor.models import (
    AlarmEvent,
    AlarmState,
    Consciousness,
    DeviceEvent,
    DeviceState,
    DoseMarker,
    Reading,
)
from monitor.mqtt.client import (
    BATCH_INTERVAL_S,
    DETECTOR_NAME,
    AlarmPublisher,
    CommandChannel,
    GatewayPublisher,
    MqttLink,
    VitalsFeed,
)
from monitor.mqtt.payloads import (
    AcknowledgeCommand,
    Command,
    ConsciousnessCommand,
    DoseCommand,
    PauseCommand,
    ResumeCommand,
    VitalsBatch,
    reply_for_error,
    reply_ok,
)
from monitor.mqtt.settings import MQTT_URL_ENV
from monitor.mqtt.staff import StaffDirectory
from monitor.mqtt.topics import Topics
from monitor.mqtt.tracking import BatchNumbering
from monitor.recording import bindings_by_room
from monitor.storage import (
    HighWater,
    HoldingSpool,
    JournalEntry,
    Spool,
    SpoolError,
    StoreHealth,
)
from monitor.storage.influx import InfluxWriter, to_point
from monitor.throttle import LogThrottle

__all__ = ["RunOptions", "Service", "ServiceSummary", "StoreUnavailableError"]

DRAIN_TIMEOUT_S = 10.0
COUNTERS_LOG_INTERVAL_S = 60.0  # wall time
MAX_CLOCK_SKEW_S = 5.0
"""How far ahead of the service clock a reading or command may be stamped (docs/detection.md
section 1.1): clocks of gateways and dashboards differ a little; more is refused."""

_log = logging.getLogger(__name__)


class StoreUnavailableError(Exception):
    """The store cannot be opened at start (read-only, missing, locked, not a database...)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunOptions:
    """What the command line chose; defaults are those of a clinic deployment."""

    store: Path = Path("var/monitor-store.sqlite")
    duration_s: float | None = None
    record: Path | None = None
    wait_for_devices_s: float = 0.0  # simulations: start detection once every device is on air
    http: tuple[str, int] | None = None  # /metrics (and later the dashboard) on HOST:PORT
    live: bool = False  # the live terminal view on stdout


@dataclasses.dataclass(slots=True)
class ServiceSummary:
    """What a run did, for the exit report and the tests."""

    readings: int = 0
    device_events: int = 0
    alarm_events: int = 0
    commands: int = 0
    command_errors: int = 0
    mqtt_url: str = ""
    influx: str = "local store"
    unstored: int = 0  # points the store never took (it kept refusing until the end)
    by_priority: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    gateways: VitalsFeed | None = None  # monitor detect: what came from the gateways

    def lines(self) -> list[str]:
        priorities = ", ".join(f"{n} {p}" for p, n in sorted(self.by_priority.items())) or "none"
        received = []
        if self.gateways is not None:
            loss = self.gateways.sequence.stats
            received = [
                f"from gateways: {self.gateways.stats.batches} batches, {loss.lost} lost, "
                f"{loss.late} late, {loss.duplicates} duplicates, "
                f"{sum(self.gateways.stats.malformed.values())} malformed messages"
            ]
        return [
            *received,
            f"readings: {self.readings}",
            f"device events: {self.device_events}",
            f"alarm events: {self.alarm_events} ({priorities})",
            f"commands: {self.commands} carried out, {self.command_errors} refused",
            f"MQTT: {self.mqtt_url}",
            f"storage: {self.influx}"
            + (f" ({self.unstored} points could not be stored)" if self.unstored else ""),
        ]


class Service:
    """The whole of ``monitor run`` for one site (see the module docstring).

    With ``backend=None`` it is ``monitor detect``: no wearables of its own, the readings and
    device events of the site's gateways from the broker instead (which must then be configured).
    A :class:`~monitor.clock.FollowingClock` follows the gateways' simulated clock.
    """

    def __init__(
        self,
        config: SiteConfig,
        *,
        clock: Clock,
        backend: BleBackend | None,
        options: RunOptions,
        simulation: AbstractAsyncContextManager[Sequence[DoseMarker]] | None = None,
        environ: Mapping[str, str] | None = None,
        on_reading: Callable[[Reading], None] | None = None,
        on_device_event: Callable[[DeviceEvent], None] | None = None,
        on_alarms: Callable[[str, Sequence[AlarmEvent]], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.options = options
        self.summary = ServiceSummary()
        self._backend = backend
        self._simulation = simulation
        self._environ = os.environ if environ is None else environ
        self._live = LiveState(config)

        def on_alarms_seen(session: str, active: Sequence[AlarmEvent]) -> None:
            self._live.on_alarms(session, active)
            if on_alarms is not None:
                on_alarms(session, active)

        def on_reading_seen(reading: Reading) -> None:
            self._live.on_reading(reading)
            if on_reading is not None:
                on_reading(reading)

        def on_device_event_seen(event: DeviceEvent) -> None:
            self._live.on_device_event(event)
            if on_device_event is not None:
                on_device_event(event)

        self._observers = (on_reading_seen, on_device_event_seen, on_alarms_seen)
        self._readings: list[Reading] = []
        self._device_events: list[DeviceEvent] = []
        self._wake = asyncio.Event()
        self._pipelines: dict[str, DetectionPipeline] = {}
        self._markers: list[DoseMarker] = []  # scheduled dose markers (a simulated session's)
        self._connectors: list[Connector] = []
        self._refusals_logged = LogThrottle(10.0)
        self._future_logged = LogThrottle(10.0)
        self._future_reported = 0  # pipelines' refused future inputs already in the log
        self._held: list[Reading] = []  # stamped a little ahead of the clock: evaluated once due
        self._backlog: HighWater | None = None  # a spool crossing not yet given to detection
        self._store_health: StoreHealth | None = None  # the same for the store refusing writes

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> ServiceSummary:
        """Run until ``duration_s`` passes or the task is cancelled (SIGINT/SIGTERM)."""
        mqtt = resolve_mqtt_config(self.config, self._environ)
        if mqtt is None and self._backend is None:
            msg = (
                f"no MQTT broker configured: the detector reads the gateways' readings from the "
                f"site's broker (set [mqtt] url in the site file or {MQTT_URL_ENV})"
            )
            raise ValueError(msg)
        influx = resolve_influx_config(self.config.influx, self._environ)
        secrets = Secrets()
        site = self.config.site.code
        async with contextlib.AsyncExitStack() as stack:
            # The store first: one that cannot be opened ends the run before any connection.
            spool = await self._open_store(stack, forward=influx is not None)
            store = HoldingSpool(spool, self.clock, on_health=self._on_store_health)
            protocol: Literal["auto", "3.1.1"] = "auto"
            if mqtt is None:
                broker = await stack.enter_async_context(EmbeddedBroker())
                mqtt = MqttConfig(url=broker.url)
                protocol = "3.1.1"  # amqtt speaks 3.1.1 only and drops an MQTT 5 CONNECT
                self.summary.mqtt_url = f"{broker.url} (embedded)"
                _log.info("no MQTT broker configured: embedded broker at %s", broker.url)
            else:
                self.summary.mqtt_url = f"{mqtt.host}:{mqtt.port}"
            topics = Topics(mqtt.topic_root, site)
            detector_link = functools.partial(
                MqttLink.from_settings,
                mqtt.settings(secrets),
                topics=topics,
                service=DETECTOR_NAME,
                protocol=protocol,
            )
            # Commands come in on a connection (and broker session) of their own: a backlog or
            # flood of them can then only delay commands, never readings or alarms.
            link = await stack.enter_async_context(
                detector_link(retired_filters=(topics.commands_filter,))
            )
            intake = await stack.enter_async_context(detector_link(intake=True))
            alarms = AlarmPublisher(link, topics)
            vitals = None
            feed = None
            if self._backend is None:
                feed = VitalsFeed(
                    link, topics, self._take_reading, self._take_device_event, on_batch=self._follow
                )
                self.summary.gateways = feed
            else:
                vitals = GatewayPublisher(link, topics, BatchNumbering(DETECTOR_NAME))
            commands = CommandChannel(  # its intervals are wall time, not session
                intake,
                topics,
                StaffDirectory.of(
                    self.config.staff, (relay.account for relay in self.config.relays)
                ),
            )
            writer = None
            if influx is not None:
                writer = await stack.enter_async_context(
                    InfluxWriter(spool, influx.settings(), secrets.influx_token)
                )
                self.summary.influx = f"InfluxDB {influx.api} at {influx.url}"
            record = await self._record_files(stack)
            metrics = self._metrics(link, commands, store, writer, feed)
            if self.options.http is not None:
                host, port = self.options.http
                server = await stack.enter_async_context(
                    HttpServer(host, port, {"/metrics": metrics_route(metrics)})
                )
                _log.info("metrics at http://%s:%d/metrics", host, server.port)
            if self._simulation is not None:
                markers = await stack.enter_async_context(self._simulation)
                self._markers = sorted(markers, key=lambda marker: marker.given_at)
            sinks = _Sinks(
                site=site,
                store=store,
                alarms=alarms,
                vitals=vitals,
                record=record,
                summary=self.summary,
                observers=self._observers,
            )
            self._connectors = [] if self._backend is None else self._make_connectors(self._backend)
            try:
                with contextlib.suppress(TimeoutError):
                    async with (
                        asyncio.timeout(self.options.duration_s),
                        asyncio.TaskGroup() as group,
                    ):
                        for watched in (link, intake):
                            group.create_task(watched.until_unusable(), name="service.broker")
                        for connector in self._connectors:
                            group.create_task(connector.run(), name="service.connector")
                        if feed is not None:
                            group.create_task(feed.run(), name="service.vitals_feed")
                        if writer is not None:
                            group.create_task(writer.run(), name="service.influx_writer")
                        await self._wait_for_devices(sinks)
                        await _to_completion(self._start_pipelines(sinks))
                        group.create_task(self._detect(sinks), name="service.detect")
                        group.create_task(
                            self._serve_commands(commands, sinks), name="service.commands"
                        )
                        group.create_task(_log_counters(metrics), name="service.counters")
                        if self.options.live:
                            group.create_task(
                                run_live_view(self._live, self.clock, stream=sys.stdout),
                                name="service.live_view",
                            )
            finally:
                # Also on SIGINT/SIGTERM: what arrived since the last pass still reaches every
                # sink, and the spool gets a bounded chance to reach InfluxDB, before the
                # connections close.
                await self._flush(sinks)
                await store.retry()
                self.summary.unstored = store.held + store.discarded
                store.close_report()
                if writer is not None:
                    await self._drain(writer)
        return self.summary

    async def _open_store(self, stack: contextlib.AsyncExitStack, *, forward: bool) -> Spool:
        """The spool, or one clear error naming the file and the cause."""
        path = self.options.store
        spool = Spool(
            path,
            forward=forward,
            high_water=self.config.storage.high_water_points,
            clock=self.clock,
            on_high_water=self._on_backlog,
        )
        try:
            return await stack.enter_async_context(spool)
        except (SpoolError, OSError) as error:
            cause = str(error).removeprefix(f"spool {path}: ")
            if isinstance(error, OSError) and error.strerror:
                cause = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
            msg = f"cannot open the store {path}: {cause}"
            raise StoreUnavailableError(msg) from error

    @staticmethod
    async def _drain(writer: InfluxWriter) -> None:
        """Write what the spool holds before leaving; what cannot go now waits in the spool."""
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await writer.drain()
        except (TimeoutError, SpoolError) as error:
            _log.warning(
                "InfluxDB did not take every point within %.0f s (%s); the rest stays in the "
                "spool and is written on the next start",
                DRAIN_TIMEOUT_S,
                str(error) or "timed out",
            )

    def _metrics(
        self,
        link: MqttLink,
        commands: CommandChannel,
        store: HoldingSpool,
        writer: InfluxWriter | None,
        feed: VitalsFeed | None,
    ) -> Metrics:
        """Counters read at scrape time from where they are kept (the service, the link...)."""
        metrics = Metrics()
        summary = self.summary
        spool = store.spool
        values: list[tuple[str, str, Callable[[], float]]] = [
            ("monitor_readings_total", "readings received", lambda: summary.readings),
            ("monitor_device_events_total", "device events", lambda: summary.device_events),
            ("monitor_alarm_events_total", "alarm transitions", lambda: summary.alarm_events),
            ("monitor_commands_total", "staff commands carried out", lambda: summary.commands),
            (
                "monitor_command_rejected_total",
                "command messages that did not parse (bad JSON, schema, staff id, topic...)",
                lambda: sum(commands.stats.errors.values()),
            ),
            (
                "monitor_command_errors_total",
                "command messages refused: malformed, or not carried out",
                lambda: summary.command_errors + sum(commands.stats.errors.values()),
            ),
            (
                "monitor_future_rejected_total",
                f"readings and commands stamped more than {MAX_CLOCK_SKEW_S:g} s ahead of the "
                "clock, refused by detection",
                lambda: sum(pipeline.stats.future for pipeline in self._pipelines.values()),
            ),
            (
                "monitor_command_dropped_total",
                "command messages dropped by the full intake (neither carried out nor answered)",
                lambda: commands.dropped,
            ),
            (
                "monitor_command_refusals_coalesced_total",
                "refused command messages answered by a per-session summary reply",
                lambda: commands.stats.refusals_coalesced,
            ),
            (
                "monitor_command_backlog",
                "command messages received and not yet handled",
                lambda: commands.backlog,
            ),
            (
                "monitor_mqtt_intake_connected",
                "1 while the command intake's own broker connection is up",
                lambda: commands.connected,
            ),
            (
                "monitor_decode_errors_total",
                "BLE payloads rejected by the codecs (kept as device events)",
                lambda: sum(c.stats.malformed for c in self._connectors),
            ),
            (
                "monitor_notifications_dropped_total",
                "BLE notifications dropped by a full hand-off queue",
                lambda: sum(c.stats.dropped for c in self._connectors),
            ),
            (
                "monitor_mqtt_connected",
                "1 while the broker link is up",
                lambda: link.stats.connected,
            ),
            ("monitor_mqtt_reconnects_total", "broker reconnects", lambda: link.stats.reconnects),
            ("monitor_mqtt_outbox", "messages waiting for the broker", lambda: link.queued),
            (
                "monitor_mqtt_publish_latency_ms",
                "mean publish-to-acknowledgement time",
                lambda: link.stats.latency_mean_ms,
            ),
            ("monitor_spool_depth", "points accepted, not yet in InfluxDB", lambda: spool.depth),
            (
                "monitor_spool_over_high_water",
                "1 while the spool is past its high-water mark (storage-backlog alarm)",
                lambda: spool.over_high_water,
            ),
            (
                "monitor_store_failed",
                "1 while the store refuses writes (storage-failed alarm)",
                lambda: store.failed,
            ),
            ("monitor_store_held", "points held in memory for the store", lambda: store.held),
            (
                "monitor_store_discarded_total",
                "held readings discarded over the memory bound while the store refused writes",
                lambda: store.discarded,
            ),
        ]
        if writer is not None:
            values.append(
                (
                    "monitor_influx_points_written_total",
                    "points written to InfluxDB",
                    lambda: writer.status.points_written,
                )
            )
        if feed is not None:
            values += [
                (
                    "monitor_vitals_batches_lost",
                    "gateway reading batches missing now (a late one takes its loss back)",
                    lambda: feed.sequence.stats.lost,
                ),
                (
                    "monitor_vitals_malformed_total",
                    "messages on the readings and device topics that did not parse",
                    lambda: sum(feed.stats.malformed.values()),
                ),
            ]
        for name, help_text, read in values:
            register = metrics.counter_fn if name.endswith("_total") else metrics.gauge_fn
            register(name, help_text, _as_float(read))
        return metrics

    async def _record_files(self, stack: contextlib.AsyncExitStack) -> dict[str, JsonlWriter]:
        if self.options.record is None:
            return {}
        return {
            name: await stack.enter_async_context(JsonlWriter(self.options.record / name))
            for name in ("readings.jsonl", "alarms.jsonl", "device-events.jsonl")
        }

    def _take_reading(self, reading: Reading) -> None:
        self._readings.append(reading)
        self._wake.set()

    def _take_device_event(self, event: DeviceEvent) -> None:
        self._device_events.append(event)
        self._wake.set()

    def _follow(self, batch: VitalsBatch) -> None:
        """Gateways running a simulation set the pace of a detector that follows them."""
        if isinstance(self.clock, FollowingClock) and not self.clock.following:
            self.clock.follow(batch.sent_at)
            _log.info(
                "following the gateways' clock at x%g from %s (gateway %s)",
                self.clock.speed,
                batch.sent_at.isoformat(),
                batch.gateway,
            )

    def _make_connectors(self, backend: BleBackend) -> list[Connector]:
        return [
            Connector(
                bindings,
                self._take_reading,
                self._take_device_event,
                clock=self.clock,
                backend=backend,
                settings=ConnectorSettings(max_links=self.config.room(room).max_connections),
            )
            for room, bindings in bindings_by_room(self.config).items()
        ]

    async def _wait_for_devices(self, sinks: _Sinks) -> None:
        """With simulated wearables, start detection once they are all on air (bounded), and,
        following gateways, once their clock is known.

        Accelerated time makes the seconds a radio needs to connect look like minutes of
        silence; real devices get no such grace: a wearable that never connects must alarm.
        """
        if self.options.wait_for_devices_s <= 0:
            return
        deadline = asyncio.get_running_loop().time() + self.options.wait_for_devices_s
        seen: set[str] = set()
        expected = {
            binding.identity.device
            for bindings in bindings_by_room(self.config).values()
            for binding in bindings
        }
        following = not isinstance(self.clock, FollowingClock) or self.clock.following
        while not (expected <= seen and following) and asyncio.get_running_loop().time() < deadline:
            seen |= {e.device for e in self._device_events if e.state is DeviceState.CONNECTED}
            following = not isinstance(self.clock, FollowingClock) or self.clock.following
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - asyncio.get_running_loop().time())):
                    await self._wake.wait()
        # What arrived before detection began is kept and published, not evaluated.
        readings, self._readings = self._readings, []
        events, self._device_events = self._device_events, []
        await _to_completion(sinks.persist(readings, events))

    async def _start_pipelines(self, sinks: _Sinks) -> None:
        """A pipeline per session, continuing from the store's alarm journal, if it has one."""
        origin = self.clock.now()
        spool = sinks.store.spool
        # The spool's state as it is now, so that a restored storage-backlog alarm can clear too;
        # a crossing while the journals are read is reported again at the first pass.
        self._backlog = None
        backlog = HighWater(spool.over_high_water, spool.depth, spool.high_water_mark)
        for session in self.config.sessions:
            rules = compile_rules(self.config, session.id)
            journal = await spool.journal(session.id)
            pipeline = _restored(rules, session.id, origin, journal, self._horizon_ms)
            self._pipelines[session.id] = pipeline
            events = _report_backlog(pipeline, origin, backlog)
            await sinks.alarm_events(session.id, events, pipeline.active())
            sinks.snapshot(session.id, pipeline.active(), origin)

    async def _detect(self, sinks: _Sinks) -> None:
        """Feed readings in micro-batches and let time pass on the session clock."""
        while True:
            self._wake.clear()
            await _to_completion(self._pass(sinks))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BATCH_INTERVAL_S):
                    await self._wake.wait()
            await asyncio.sleep(0)

    async def _pass(self, sinks: _Sinks) -> None:
        readings, self._readings = self._readings, []
        device_events, self._device_events = self._device_events, []
        now = self.clock.now()
        by_session: dict[str, list[Reading]] = collections.defaultdict(list)
        for reading in self._due(readings, now):
            by_session[reading.session].append(reading)
        due = [marker for marker in self._markers if marker.given_at <= now]
        self._markers = self._markers[len(due) :]
        events: dict[str, list[AlarmEvent]] = {}
        for session, pipeline in self._pipelines.items():
            events[session] = _evaluate(
                pipeline,
                sorted(by_session.get(session, ()), key=_received),
                [marker for marker in due if marker.session == session],
                now,
            )
        backlog, self._backlog = self._backlog, None
        if backlog is not None:
            for session, pipeline in self._pipelines.items():
                events[session] += _report_backlog(pipeline, now, backlog)
        health, self._store_health = self._store_health, None
        if health is not None:
            for session, pipeline in self._pipelines.items():
                events[session] += pipeline.report(
                    STORAGE_FAILED.id, now, met=health.failed, value=health.held
                )
        await sinks.store.retry()
        self._log_future()
        await sinks.persist(readings, device_events)
        for session, found in events.items():
            await sinks.alarm_events(session, found, self._pipelines[session].active())

    def _horizon_ms(self) -> int:
        """The latest time a reading or command may carry (docs/detection.md section 1.1); the
        skew is session time, so an accelerated clock widens it as it widens every transit
        time."""
        speed = self.clock.speed if isinstance(self.clock, AcceleratedClock | FollowingClock) else 1
        return to_ms(self.clock.now()) + round(MAX_CLOCK_SKEW_S * max(speed, 1.0) * 1000)

    def _due(self, readings: Sequence[Reading], now: dt.datetime) -> list[Reading]:
        """The readings to evaluate now: those held from earlier passes that are due, the new
        ones up to ``now``, and those past the horizon (for the pipeline to count and refuse).

        A reading stamped a little ahead of the clock (a gateway's clock running ahead) waits
        here until the clock reaches it, so that it cannot make the readings of other streams
        received meanwhile count as out of order.
        """
        horizon = self._horizon_ms()
        due: list[Reading] = []
        held: list[Reading] = []
        for reading in [*self._held, *readings]:
            ahead = now < reading.received_at and to_ms(reading.received_at) <= horizon
            (held if ahead else due).append(reading)
        self._held = held
        return due

    def _log_future(self) -> None:
        """One line now and then for inputs refused as stamped in the future: which stream,
        how many; never one line per input (a gateway with a wrong clock sends many)."""
        refused = sum(pipeline.stats.future for pipeline in self._pipelines.values())
        if refused == self._future_reported:
            return
        streams = [p.stats.future_stream for p in self._pipelines.values() if p.stats.future_stream]
        if not streams:
            return  # commands only so far: each was answered and logged as refused
        if not self._future_logged.ready(asyncio.get_running_loop().time()):
            return
        _log.warning(
            "refused %d input(s) stamped more than %g s ahead of the clock (%d in all; latest "
            "reading stream: %s); readings kept in the store, never evaluated",
            refused - self._future_reported,
            MAX_CLOCK_SKEW_S,
            refused,
            streams[-1],
        )
        self._future_reported = refused

    def _on_backlog(self, change: HighWater) -> None:
        """The spool crossed its high-water mark: the next pass raises or clears the alarm."""
        self._backlog = change
        self._wake.set()

    def _on_store_health(self, health: StoreHealth) -> None:
        """The store began or stopped refusing writes: the next pass raises or clears the alarm."""
        self._store_health = health
        self._wake.set()

    async def _serve_commands(self, commands: CommandChannel, sinks: _Sinks) -> None:
        """Carry out commands in arrival order; closing the stream answers refusals it holds."""
        async with contextlib.aclosing(aiter(commands)) as stream:
            async for command in stream:
                await _to_completion(self._carry_out(command, commands, sinks))

    async def _carry_out(self, command: Command, commands: CommandChannel, sinks: _Sinks) -> None:
        pipeline = self._pipelines.get(command.session)
        if pipeline is None:
            error = KeyError(f"session {command.session} is not monitored here")
            commands.reply(reply_for_error(command, error))
            self.summary.command_errors += 1
            return
        now = self.clock.now()
        # Time first, on its own: what it brings is emitted whatever the command's fate.
        await sinks.alarm_events(command.session, pipeline.advance(now), pipeline.active())
        try:
            events = _carry_out(pipeline, command, now)
        except (ValueError, KeyError) as error:
            if self._refusals_logged.ready(asyncio.get_running_loop().time()):
                _log.warning(
                    "refused %s command %s: %s (%d more refused since the last report)",
                    command.kind,
                    command.command_id,
                    error,
                    self._refusals_logged.take_suppressed(),
                )
            commands.reply(reply_for_error(command, error))
            self.summary.command_errors += 1
            return
        self.summary.commands += 1
        await sinks.alarm_events(command.session, events, pipeline.active())
        commands.reply(reply_ok(command, alarm_events=len(events)))

    async def _flush(self, sinks: _Sinks) -> None:
        """The last readings and events of a run that is ending still reach every sink."""
        if self._pipelines:
            await self._pass(sinks)
        else:
            await sinks.persist(self._readings, self._device_events)


async def _to_completion(work: Coroutine[Any, Any, None]) -> None:
    """Finish ``work`` even if the caller is cancelled (SIGINT/SIGTERM), then let the
    cancellation through: readings and alarm events taken for a pass must reach every sink."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _report_backlog(
    pipeline: DetectionPipeline, moment: dt.datetime, backlog: HighWater
) -> list[AlarmEvent]:
    """The spool's high-water state as the storage-backlog condition of every participant."""
    return pipeline.report(
        STORAGE_BACKLOG.id, moment, met=backlog.over, value=backlog.depth, threshold=backlog.mark
    )


def _restored(
    rules: RuleSet,
    session: str,
    origin: dt.datetime,
    journal: Sequence[JournalEntry],
    horizon: Callable[[], int],
) -> DetectionPipeline:
    """The session's pipeline, its alarms restored from the journal of an earlier run.

    A journal this configuration cannot continue (a rule since removed, a participant gone, a
    damaged entry) is reported and set aside; numbering still continues after it, so no two
    events of the session ever share a sequence number.
    """
    pipeline = DetectionPipeline(rules, session=session, origin=origin, horizon=horizon)
    if not journal:
        return pipeline
    try:
        pipeline.restore(AlarmEvent.model_validate_json(entry.event) for entry in journal)
    except ValueError as error:
        last = journal[-1].sequence
        _log.error(
            "session %s: the alarm journal of the last run cannot be restored (%s); its %d "
            "events stay in the store, and alarms start afresh from sequence %d",
            session,
            error,
            len(journal),
            last + 1,
        )
        return DetectionPipeline(
            rules, session=session, origin=origin, sequence_start=last + 1, horizon=horizon
        )
    active = pipeline.active()
    _log.info(
        "session %s: restored %d active alarm(s) (%d acknowledged) from %d journal events; "
        "alarm sequence continues at %d; baseline-relative rules wait for the next dose marker",
        session,
        len(active),
        sum(event.state is AlarmState.ACKNOWLEDGED for event in active),
        len(journal),
        pipeline.lifecycle.next_sequence,
    )
    return pipeline


async def _log_counters(metrics: Metrics) -> None:
    """The /metrics counters in the log too, once a minute: a log is often all a site keeps."""
    while True:
        await asyncio.sleep(COUNTERS_LOG_INTERVAL_S)
        counters = " ".join(
            f"{name.removeprefix('monitor_')}={value:g}" for name, value in metrics.values().items()
        )
        _log.info("counters: %s", counters)


def _as_float(read: Callable[[], float]) -> Callable[[], float]:
    return lambda: float(read())


def _evaluate(
    pipeline: DetectionPipeline,
    readings: Sequence[Reading],
    markers: Sequence[DoseMarker],
    now: dt.datetime,
) -> list[AlarmEvent]:
    """Readings (in time order) with the markers that fall among them, then time up to now."""
    events: list[AlarmEvent] = []
    rest = list(readings)
    for marker in markers:
        split = next((i for i, r in enumerate(rest) if r.received_at > marker.given_at), len(rest))
        events += pipeline.feed(rest[:split])
        events += pipeline.mark_dose(marker.participant, marker.given_at)
        rest = rest[split:]
    events += pipeline.feed(rest)
    return events + pipeline.advance(now)


def _received(reading: Reading) -> dt.datetime:
    return reading.received_at


def _carry_out(
    pipeline: DetectionPipeline, command: Command, moment: dt.datetime
) -> list[AlarmEvent]:
    """One staff command on the session's detection; lifecycle errors name the problem."""
    if isinstance(command, AcknowledgeCommand):
        return pipeline.acknowledge(str(command.alarm_id), command.staff, moment)
    if isinstance(command, PauseCommand):
        return pipeline.pause(command.participant, command.staff, command.duration_s, moment)
    if isinstance(command, ResumeCommand):
        return pipeline.resume(command.participant, command.staff, moment)
    if isinstance(command, DoseCommand):
        return pipeline.mark_dose(command.participant, command.given_at)
    if isinstance(command, ConsciousnessCommand):
        return pipeline.set_consciousness(
            command.participant, command.observed_at, Consciousness(command.level)
        )
    msg = f"unknown command {command!r}"
    raise ValueError(msg)


@dataclasses.dataclass(slots=True)
class _Sinks:
    """Where readings and alarm events go; one place, so nothing can skip a sink."""

    site: str
    store: HoldingSpool
    alarms: AlarmPublisher
    vitals: GatewayPublisher | None  # None when the readings came from gateways over MQTT
    record: dict[str, JsonlWriter]
    summary: ServiceSummary
    observers: tuple[
        Callable[[Reading], None] | None,
        Callable[[DeviceEvent], None] | None,
        Callable[[str, Sequence[AlarmEvent]], None] | None,
    ]

    async def persist(self, readings: Sequence[Reading], events: Sequence[DeviceEvent]) -> None:
        if not readings and not events:
            return
        on_reading, on_device_event, _ = self.observers
        records: list[Reading | DeviceEvent] = [*readings, *events]
        await self.store.accept([to_point(record, site=self.site) for record in records])
        for reading in readings:
            self._write("readings.jsonl", reading)
            if on_reading is not None:
                on_reading(reading)
        if readings and self.vitals is not None:
            self.vitals.readings_by_participant(readings, max(r.received_at for r in readings))
        for event in events:
            if self.vitals is not None:
                self.vitals.device(event)
            self._write("device-events.jsonl", event)
            if on_device_event is not None:
                on_device_event(event)
        self.summary.readings += len(readings)
        self.summary.device_events += len(events)

    async def alarm_events(
        self,
        session: str,
        events: Sequence[AlarmEvent],
        active: Sequence[AlarmEvent],
    ) -> None:
        if not events:
            return
        for event in events:
            _log.warning("%s", _describe(event), extra=_fields(event))
            self._write("alarms.jsonl", event)
            self.summary.by_priority[event.priority.value] += 1
        self.summary.alarm_events += len(events)
        await self.store.accept(
            [to_point(event, site=self.site) for event in events],
            journal=[JournalEntry(e.session, e.sequence, e.model_dump_json()) for e in events],
            precious=True,
        )
        self.alarms.publish(session, events, active, events[-1].occurred_at)
        on_alarms = self.observers[2]
        if on_alarms is not None:
            on_alarms(session, active)

    def snapshot(self, session: str, active: Sequence[AlarmEvent], as_of: dt.datetime) -> None:
        """The session's alarms as they stand (at start: restored ones too), for late viewers."""
        self.alarms.snapshot(session, active, as_of)
        on_alarms = self.observers[2]
        if on_alarms is not None:
            on_alarms(session, active)

    def _write(self, name: str, model: Reading | DeviceEvent | AlarmEvent) -> None:
        writer = self.record.get(name)
        if writer is not None:
            writer.put(model)


def _fields(event: AlarmEvent) -> dict[str, object]:
    """An alarm transition's identity as fields of its JSON log line (``--log-format json``).

    Every transition logs at WARNING, raised or cleared, high or low: something staff must
    see at the default level, yet no fault of the program (ERROR is kept for those).
    """
    return {
        "session": event.session,
        "participant": event.participant,
        "rule": event.rule,
        "priority": event.priority.value,
        "state": event.state.value,
        "sequence": event.sequence,
    }


def _describe(event: AlarmEvent) -> str:
    """One log line per transition: pseudonymous code, rule, state, what it showed."""
    flags = [
        flag
        for flag, on in (
            ("latched", event.condition_cleared and event.state is AlarmState.ACTIVE),
            ("paused", event.paused),
            (f"escalation {event.escalation_level}", event.escalation_level > 0),
        )
        if on
    ]
    extra = f" [{', '.join(flags)}]" if flags else ""
    by = f" by {event.acknowledged_by}" if event.acknowledged_by else ""
    return (
        f"alarm #{event.sequence} {event.session}/{event.participant} {event.rule} "
        f"{event.priority.value} {event.state.value}{by}{extra}: {event.message}"
    )

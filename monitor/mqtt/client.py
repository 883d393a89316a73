"""The broker connection: the only place that touches aiomqtt.

:class:`MqttLink` is an async context manager that stays useful while the broker is not: it
connects in the background, reconnects with capped, jittered backoff, and keeps every message in
its :class:`~monitor.mqtt.outbox.Outbox` until the broker has acknowledged it, so
:meth:`MqttLink.publish` never blocks and never loses a QoS 1 message to an outage (within the
outbox's bound). Each connection is a fresh aiomqtt client with the same client id and a persistent
session (MQTT 5 ``clean_start = False`` with a session expiry, or 3.1.1 ``clean_session = False``),
so the broker keeps QoS 1 subscriptions and queues commands while the service is away.

:class:`CommandChannel` turns the command topics into a stream of parsed commands that nothing
can stop: garbage is counted and answered (coalesced per session), duplicates are answered again
without being carried out twice. It reads on a link of its own
(``MqttLink.from_settings(..., intake=True)``: another client id and persistent session), so a
backlog or a flood of commands queues at the broker behind commands only, never in front of the
readings the detector needs or the alarms it sends.

:class:`VitalsFeed` does the same for the gateways' readings and device events: parsed,
deduplicated and counted (lost, late, malformed), handed to callbacks as a BLE connector would.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import enum
import logging
import math
import random
import socket
import ssl
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, SecretStr, ValidationError

from monitor.backoff import Backoff
from monitor.clock import Clock, SystemClock
from monitor.models import AlarmEvent, DeviceEvent, Reading
from monitor.mqtt.outbox import Outbox, Outgoing, Priority
from monitor.mqtt.payloads import (
    MAX_BATCH_READINGS,
    ActiveAlarms,
    AlarmMessage,
    Command,
    CommandError,
    CommandReply,
    DeviceStatus,
    DuplicateKeyError,
    ErrorCode,
    ServiceState,
    ServiceStatus,
    StatusReason,
    VitalsBatch,
    describe_validation_error,
    load_json,
    parse_command,
)
from monitor.mqtt.settings import MQTT_PASSWORD_ENV, BrokerSettings
from monitor.mqtt.staff import StaffDirectory
from monitor.mqtt.topics import Topics, command_target, topic_matches
from monitor.mqtt.tracking import BatchNumbering, EscalationTracker, SequenceTracker
from monitor.throttle import LogThrottle
from monitor.tls import TlsFiles, tls_context

__all__ = [
    "BATCH_INTERVAL_S",
    "COMMAND_INTAKE_CAPACITY",
    "COMMAND_INTAKE_SUFFIX",
    "DEFAULT_OUTBOX_CAPACITY",
    "DETECTOR_NAME",
    "INTAKE_BATCH",
    "RECONNECT_BACKOFF",
    "REFUSAL_REPLY_INTERVAL_S",
    "SESSION_INTAKE_CAPACITY",
    "AlarmPublisher",
    "BrokerUnusableError",
    "CommandChannel",
    "CommandStats",
    "FeedStats",
    "GatewayPublisher",
    "Incoming",
    "LinkStats",
    "Malformed",
    "MqttLink",
    "Subscription",
    "VitalsFeed",
]

_log = logging.getLogger("monitor.mqtt")
_M = TypeVar("_M", bound=BaseModel)

DETECTOR_NAME = "detector"
"""The detector's name on the status topic and in the batches of ``monitor run``'s own wearables."""
BATCH_INTERVAL_S = 0.25
"""Wall time readings gather before a gateway publishes them or a detector evaluates them."""


DEFAULT_OUTBOX_CAPACITY = 50_000
"""About 14 hours of one reading batch per second, or a long outage of a busy site."""

REFUSAL_REPLY_INTERVAL_S = 1.0
"""Per session, at most one reply to refused (unparseable) commands per this much wall time: the
first refusal is answered at once, the ones after it within the interval by one summary reply at
its end (``CommandReply.answers`` says how many it answers)."""
COMMAND_INTAKE_CAPACITY = 1_000
"""Commands received and not yet handled; beyond it the newest is dropped, counted and logged
(the broker holds a backlog, this only bounds what the service holds in memory)."""
SESSION_INTAKE_CAPACITY = 200
"""Commands of one session waiting their turn; beyond it the session's newest is dropped (counted,
logged), so a flood on one session cannot take the others' places."""
INTAKE_BATCH = 64
"""Commands handled before the channel yields to the event loop, so a backlog is taken in
slices between which detection and publishing run."""
COMMAND_INTAKE_SUFFIX = "-commands"
"""The command intake's client id is the service's followed by this."""

_UNSUPPORTED_PROTOCOL = 132  # MQTT 5 reason code; paho maps a 3.1.1 broker's refusal (1) to it
_REFUSALS_FOR_GOOD = {
    133: "the client id is not valid",
    134: "bad user name or password",
    135: "not authorised",
    138: "this client is banned",
    140: "bad authentication method",
}
"""CONNACK reason codes (MQTT 5, and paho's mapping of 3.1.1's 2, 4 and 5) that the same
credentials will get again on every attempt: retrying cannot help, a person has to act."""
_CONNECTION_ERRORS = (aiomqtt.MqttError, OSError, ssl.SSLError)
Protocol = Literal["auto", "5", "3.1.1"]
_STABLE_S = 2.0
"""A connection that lasts less than this counts as a failed attempt for the backoff, so two
services sharing a client id (which take the session from each other) do not spin."""
RECONNECT_BACKOFF = Backoff(initial_s=0.2, max_s=4.0)
"""Reconnect delays: short, because a link is back about ``max_s`` plus one connect after the
broker returns, and an alarm waits for it."""
_NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)  # an alarm must not wait for Nagle


class _Client(aiomqtt.Client):
    """aiomqtt's client, safe to cancel while it connects.

    Cancelling ``__aenter__`` mid-handshake (a sibling link found the broker unusable, a signal)
    cancels its connection future, but paho's callbacks still fire on the open socket and call
    ``exception()`` or ``set_exception()`` on that cancelled future: a traceback from a loop
    callback. A connection attempt nobody waits for any more has nothing left to report.
    """

    def _on_connect(self, *args: Any, **kwargs: Any) -> None:
        if not self._connected.cancelled():
            super()._on_connect(*args, **kwargs)

    def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
        if not self._connected.cancelled():
            super()._on_disconnect(*args, **kwargs)


class BrokerUnusableError(Exception):
    """The broker cannot be used as configured (wrong credentials, an untrusted certificate).

    Such a failure comes back on every attempt, so the link ends with this instead of retrying
    until someone reads its warnings: a monitor that delivers nothing must stop and say why.
    The message names the broker and the cause, never the password.
    """


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message received on a subscription (aiomqtt's type stays inside this module)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(slots=True)
class LinkStats:
    """Counters for metrics and the status page; never reset while the link lives."""

    connected: bool = False
    protocol: str | None = None
    session_present: bool | None = None
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    enqueued: int = 0
    published: int = 0
    queued: int = 0
    queued_max: int = 0
    superseded: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {p.name.lower(): 0 for p in Priority})
    redelivered: int = 0
    rejected_by_broker: int = 0
    received: int = 0
    unrouted: int = 0
    latency_last_ms: float = 0.0
    latency_max_ms: float = 0.0
    latency_total_ms: float = 0.0

    @property
    def latency_mean_ms(self) -> float:
        """Mean time from :meth:`MqttLink.publish` to the broker's acknowledgement."""
        return self.latency_total_ms / self.published if self.published else 0.0


class Subscription:
    """Messages matching one topic filter, across reconnects, in arrival order.

    Use filters that do not overlap: over MQTT 5 a broker may deliver a message once per
    matching subscription, and every copy reaches every matching :class:`Subscription`.

    The queue is bounded: a consumer that stops reading must not eat the service's memory. When it
    is full the newest message is dropped, counted in :attr:`dropped` and logged at ERROR level.
    """

    def __init__(self, topic_filter: str, qos: int, capacity: int, clock: Clock) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        self.dropped = 0
        self.received = 0
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=capacity)
        self._clock = clock
        self._throttle = LogThrottle(10.0)

    def _offer(self, message: Incoming) -> None:
        self.received += 1
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            if self._throttle.ready(self._clock.monotonic()):
                _log.error(
                    "subscription %s is full (%d messages): dropped %d message(s) so far",
                    self.topic_filter,
                    self._queue.maxsize,
                    self.dropped,
                )

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Incoming:
        return await self._queue.get()

    def __len__(self) -> int:
        return self._queue.qsize()

    def get_nowait(self) -> Incoming | None:
        """The next message if one is waiting, else ``None``."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None


def _tls_context(files: TlsFiles | None) -> ssl.SSLContext:
    """Blocking (reads certificate files): run it in a thread."""
    return tls_context() if files is None else files.context()


class MqttLink:
    """A broker connection that survives the broker: outbox, reconnects, subscriptions, status.

    With ``status_topic`` set, the link has a last will (retained ``offline`` /
    ``connection_lost``), publishes a retained ``online`` on every connect before anything else,
    and a retained ``offline`` / ``shutdown`` as the last message of a clean stop. A connection
    the link gives up on (an operation timed out) is dropped without a DISCONNECT packet, so the
    broker publishes the will: the status says offline whenever the link is not up.
    ``retired_filters`` are unsubscribed on every connect: filters an older version subscribed
    in the same persistent session, which the broker would otherwise go on delivering. After every
    connect it also sends the latest retained message of each topic again (snapshots, device
    status), after the backlog, so retained state a crashed broker lost comes back.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: SecretStr | None = None,
        tls: bool = False,
        tls_files: TlsFiles | None = None,
        status_topic: str | None = None,
        service: str = "monitor",
        protocol: Protocol = "auto",
        outbox_capacity: int = DEFAULT_OUTBOX_CAPACITY,
        window: int = 32,
        backoff: Backoff | None = None,
        keepalive_s: int = 15,
        timeout_s: float = 5.0,
        ack_timeout_s: float = 30.0,
        session_expiry_s: int = 86_400,
        drain_timeout_s: float = 5.0,
        retired_filters: Sequence[str] = (),
        clock: Clock | None = None,
    ) -> None:
        if not client_id:
            msg = "a persistent session needs a stable, non-empty client id"
            raise ValueError(msg)
        self.host = host
        self.port = port
        self.client_id = client_id
        self.stats = LinkStats()
        self._username = username
        self._password = password
        self._tls = tls or tls_files is not None
        self._tls_files = tls_files
        self._tls_context: ssl.SSLContext | None = None
        self._status_topic = status_topic
        self._service = service
        self._protocol: aiomqtt.ProtocolVersion = (
            aiomqtt.ProtocolVersion.V311 if protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5
        )
        self._fallback = protocol == "auto"
        self._outbox = Outbox(outbox_capacity)
        self._window = window
        self._backoff = backoff or RECONNECT_BACKOFF
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._ack_timeout_s = ack_timeout_s
        self._session_expiry_s = session_expiry_s
        self._drain_timeout_s = drain_timeout_s
        self._retired_filters = tuple(retired_filters)
        self._clock: Clock = clock or SystemClock()
        self._rng = random.Random()  # noqa: S311 - jitter, not secrecy
        self._subscriptions: list[Subscription] = []
        self._retained: dict[str, tuple[bytes, int, Priority]] = {}
        self._state = asyncio.Condition()
        self._wake = asyncio.Event()
        self._subscriptions_changed = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._closing = False
        self._overflow_log = LogThrottle(10.0)
        self._reject_log = LogThrottle(10.0)
        self._high_water_warned = False
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: BrokerSettings,
        *,
        topics: Topics,
        service: str,
        status: bool = True,
        intake: bool = False,
        **options: Any,
    ) -> MqttLink:
        """A link to the broker the site's settings name.

        ``status=False`` for a role the contract gives no status topic: a gateway's broker user
        may write only readings and devices, so the broker would refuse every ``online`` (an
        error in the log on each connect) and drop the last will. ``intake=True`` is the
        service's command intake: the service's client id followed by ``-commands``, so its
        persistent session (and whatever backlog of commands the broker queues there) is its own,
        and no status (the service's one link says whether it is up).
        """
        client_id = settings.client_id or f"monitor-{topics.site}-{service}"
        return cls(
            host=settings.host,
            port=settings.port,
            client_id=f"{client_id}{COMMAND_INTAKE_SUFFIX}" if intake else client_id,
            username=settings.username,
            password=settings.password,
            tls=settings.tls,
            tls_files=settings.tls_files,
            status_topic=topics.status(service) if status and not intake else None,
            service=service,
            **options,
        )

    # --- the caller's side ---------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether a connection is up right now (it can drop the next moment)."""
        return self.stats.connected

    @property
    def queued(self) -> int:
        """Messages in the outbox: waiting or sent and not yet acknowledged."""
        return len(self._outbox)

    def publish(
        self,
        topic: str,
        payload: bytes | BaseModel,
        *,
        qos: int = 1,
        retain: bool = False,
        priority: Priority = Priority.TELEMETRY,
    ) -> bool:
        """Queue a message; returns at once. ``False`` if the full outbox had to refuse it."""
        if qos not in (0, 1):
            msg = f"the link publishes at QoS 0 or 1, not {qos}"
            raise ValueError(msg)
        body = payload.model_dump_json().encode() if isinstance(payload, BaseModel) else payload
        if retain and not body:
            msg = "an empty retained message would delete the retained state; publish a value"
            raise ValueError(msg)
        now = self._clock.monotonic()
        if self._closing and self._runner is not None and self._runner.done():
            _log.error("publish on %s after the link closed: not sent", topic)
            self.stats.dropped[priority.name.lower()] += 1
            return False
        if retain and topic != self._status_topic:
            self._retained[topic] = (body, qos, priority)
        result = self._outbox.put(topic, body, qos=qos, retain=retain, priority=priority, now=now)
        self.stats.enqueued += 1
        if result.superseded is not None:
            self.stats.superseded += 1
        lost = result.evicted.priority if result.evicted is not None else None
        if result.rejected:
            lost = priority
        if lost is not None:
            self.stats.dropped[lost.name.lower()] += 1
            self._report_overflow(now)
        self._update_depth()
        self._wake.set()
        return not result.rejected

    def subscribe(self, topic_filter: str, *, qos: int = 1, capacity: int = 10_000) -> Subscription:
        """A stream of the messages matching ``topic_filter``; (re)subscribed on every connect."""
        subscription = Subscription(topic_filter, qos, capacity, self._clock)
        self._subscriptions.append(subscription)
        self._subscriptions_changed.set()
        return subscription

    async def until_unusable(self) -> None:
        """Raise :class:`BrokerUnusableError` once the link has given up on its broker.

        The link's task group cancels the task that entered the link for that, but one
        cancellation can be lost on the way (Python 3.11's ``wait_for``, used by libraries the
        caller awaits, may swallow a cancellation that races a result): a caller that awaits
        this in its own task group learns of the failure whatever happened to the cancellation.
        """
        assert self._runner is not None, "enter the link first"
        await asyncio.wait({self._runner})
        failure = None if self._runner.cancelled() else self._runner.exception()
        if isinstance(failure, BrokerUnusableError):
            raise BrokerUnusableError(str(failure))
        await asyncio.Event().wait()  # the link ended for another reason: nothing to report

    async def wait_connected(self) -> None:
        """Until a connection is up (and the online status and subscriptions are in place)."""
        async with self._state:
            await self._state.wait_for(lambda: self.stats.connected)

    async def wait_disconnected(self) -> None:
        """Until the current connection has gone."""
        async with self._state:
            await self._state.wait_for(lambda: not self.stats.connected)

    async def drain(self) -> None:
        """Until every queued message has been acknowledged by the broker."""
        while len(self._outbox):
            self._empty.clear()
            await self._empty.wait()

    async def __aenter__(self) -> Self:
        if self._tls:
            self._tls_context = await asyncio.to_thread(_tls_context, self._tls_files)
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._runner = self._group.create_task(self._run(), name=f"mqtt-{self.client_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Say offline, give the outbox ``drain_timeout_s`` to empty, then disconnect cleanly.

        A link that ended with :class:`BrokerUnusableError` (it cancelled the task that entered
        it) raises that error itself, not wrapped in an exception group, so a caller can catch it.
        """
        assert self._group is not None and self._runner is not None
        self._closing = True
        if not self._runner.done():
            if self._status_topic is not None:
                self.publish(
                    self._status_topic,
                    self._status(ServiceState.OFFLINE, StatusReason.SHUTDOWN),
                    retain=True,
                    priority=Priority.STATE,
                )
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._drain_timeout_s):
                        await self.drain()
            except asyncio.CancelledError as cancelled:
                if not self._runner.done():
                    raise  # cancelled from outside (a signal): that is the news
                # The runner failed while we drained and its group cancelled us for it: hand
                # the cancellation to the group, which takes it back and raises the failure.
                exc_type, exc, tb = type(cancelled), cancelled, cancelled.__traceback__
        if len(self._outbox):
            _log.error(
                "closing the MQTT link with %d message(s) the broker never acknowledged",
                len(self._outbox),
            )
        self._runner.cancel()
        try:
            await self._group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            unusable, rest = group.split(BrokerUnusableError)
            cause = _first_leaf(unusable)
            if cause is None or rest is not None:
                raise
            raise cause from None
        return None

    # --- the connection ------------------------------------------------------------------------

    def _status(self, state: ServiceState, reason: StatusReason) -> ServiceStatus:
        return ServiceStatus(
            service=self._service, client_id=self.client_id, state=state, reason=reason
        )

    def _new_client(self) -> aiomqtt.Client:
        v5 = self._protocol is aiomqtt.ProtocolVersion.V5
        will = None
        if self._status_topic is not None:
            offline = self._status(ServiceState.OFFLINE, StatusReason.CONNECTION_LOST)
            will = aiomqtt.Will(
                self._status_topic, offline.model_dump_json().encode(), qos=1, retain=True
            )
        properties = None
        if v5:
            properties = _properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry_s
        client = _Client(
            self.host,
            self.port,
            username=self._username,
            password=None if self._password is None else self._password.get_secret_value(),
            identifier=self.client_id,
            protocol=self._protocol,
            will=will,
            clean_session=None if v5 else False,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            keepalive=self._keepalive_s,
            timeout=self._timeout_s,
            max_inflight_messages=self._window,
            tls_context=self._tls_context,
            socket_options=_NO_DELAY,
        )
        client.pending_calls_threshold = self._window + 16  # a full window is normal here
        self._watch(client)
        return client

    def _watch(self, client: aiomqtt.Client) -> None:
        """Hook paho's callbacks for what aiomqtt does not pass on.

        The session-present flag says whether the broker kept our session (else commands sent
        while we were away are gone), and an MQTT 5 PUBACK can refuse a message (not authorised):
        aiomqtt treats both as success, and a detector whose alarms the broker refuses must say
        so. Over MQTT 3.1.1 a refused publish is indistinguishable from a delivered one.
        """
        inner: paho.Client = client._client
        on_connect = inner.on_connect
        on_publish = inner.on_publish

        def connected(*args: Any) -> None:
            flags = args[2]
            self.stats.session_present = bool(getattr(flags, "session_present", False))
            if on_connect is not None:
                on_connect(*args)

        def published(*args: Any) -> None:
            reason = args[3]
            if isinstance(reason, ReasonCode) and reason.is_failure:
                self.stats.rejected_by_broker += 1
                if self._reject_log.ready(self._clock.monotonic()):
                    _log.error(
                        "the broker refused a message (%s); %d refused so far: check the ACL",
                        reason,
                        self.stats.rejected_by_broker,
                    )
            if on_publish is not None:
                on_publish(*args)

        inner.on_connect = connected
        inner.on_publish = published

    async def _set_connected(self, connected: bool) -> None:
        async with self._state:
            self.stats.connected = connected
            self._state.notify_all()

    async def _run(self) -> None:
        attempt = 0
        while True:
            client = self._new_client()
            connected_at: float | None = None
            failure: BaseException | None = None
            try:
                async with client:
                    connected_at = self._clock.monotonic()
                    try:
                        await self._serve(client)
                    except (*_CONNECTION_ERRORS, BaseExceptionGroup):
                        _drop(client)
                        raise
            except _CONNECTION_ERRORS as exc:
                failure = exc
            except BaseExceptionGroup as group:
                matched, rest = group.split(_CONNECTION_ERRORS)
                if rest is not None:
                    raise rest from None
                failure = _first_leaf(matched)
            finally:
                if self.stats.connected:
                    await self._set_connected(False)
                back = self._outbox.requeue()
                self.stats.redelivered += back
                if not len(self._outbox):
                    self._empty.set()
            if connected_at is not None:
                self.stats.disconnects += 1
                _log.warning("MQTT connection to %s:%d lost: %s", self.host, self.port, failure)
                if self._clock.monotonic() - connected_at >= _STABLE_S:
                    attempt = 0
                    continue  # reconnect at once; back off only when connecting keeps failing
            else:
                self.stats.connect_failures += 1
            if self._should_fall_back(failure):
                _log.info("%s:%d does not speak MQTT 5; using 3.1.1", self.host, self.port)
                self._protocol = aiomqtt.ProtocolVersion.V311
                self._fallback = False
                continue
            cause = _for_good(failure)
            if cause is not None:
                msg = f"MQTT broker {self.host}:{self.port}: {cause}"
                raise BrokerUnusableError(msg)
            delay = self._backoff.delay(attempt, self._rng)
            attempt += 1
            _log.warning(
                "cannot connect to MQTT broker %s:%d (%s); retrying in %.1f s",
                self.host,
                self.port,
                failure,
                delay,
            )
            await self._clock.sleep(delay)

    def _should_fall_back(self, failure: BaseException | None) -> bool:
        return self._fallback and _reason_code(failure) in (1, _UNSUPPORTED_PROTOCOL)

    async def _serve(self, client: aiomqtt.Client) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read(client))
            self._subscriptions_changed.clear()
            subscribed = 0
            while subscribed < len(self._subscriptions):  # some may be added meanwhile
                await self._subscribe(client, self._subscriptions[subscribed])
                subscribed += 1
            for topic_filter in self._retired_filters:
                await client.unsubscribe(topic_filter)
            if self._status_topic is not None:
                online = self._status(ServiceState.ONLINE, StatusReason.CONNECTED)
                await client.publish(
                    self._status_topic,
                    online.model_dump_json().encode(),
                    qos=1,
                    retain=True,
                    properties=self._publish_properties(),
                )
            self.stats.connects += 1
            self.stats.reconnects = self.stats.connects - 1
            self.stats.protocol = "5" if self._protocol is aiomqtt.ProtocolVersion.V5 else "3.1.1"
            if self.stats.session_present is False and self.stats.connects > 1:
                _log.warning(
                    "the broker kept no session for %s: messages sent to it while it was away "
                    "are lost",
                    self.client_id,
                )
            await self._set_connected(True)
            _log.info(
                "connected to MQTT broker %s:%d as %s (MQTT %s), %d message(s) queued",
                self.host,
                self.port,
                self.client_id,
                self.stats.protocol,
                len(self._outbox),
            )
            self._restate()
            group.create_task(self._resubscribe(client, subscribed))
            group.create_task(self._send(client))

    def _restate(self) -> None:
        """Queue the latest retained message of every topic again, unless one is queued.

        A broker that crashed may have lost retained messages saved after its last autosave, and
        a late dashboard must still find the current snapshot there: sending the latest state
        again on each connect costs one message per retained topic and makes it true again.
        """
        now = self._clock.monotonic()
        for topic, (body, qos, priority) in self._retained.items():
            if not self._outbox.holds_retained(topic):
                self._outbox.put(topic, body, qos=qos, retain=True, priority=priority, now=now)
        self._update_depth()

    async def _read(self, client: aiomqtt.Client) -> None:
        """Route incoming messages; ends with MqttError when the connection drops."""
        async for message in client.messages:
            self.stats.received += 1
            payload = message.payload
            incoming = Incoming(
                topic=message.topic.value,
                payload=payload if isinstance(payload, bytes) else str(payload).encode(),
                qos=message.qos,
                retain=message.retain,
            )
            routed = False
            for subscription in self._subscriptions:
                if topic_matches(incoming.topic, subscription.topic_filter):
                    subscription._offer(incoming)
                    routed = True
            if not routed:
                self.stats.unrouted += 1

    async def _resubscribe(self, client: aiomqtt.Client, done: int) -> None:
        """Subscribe filters added while connected (the first ``done`` are subscribed)."""
        while True:
            await self._subscriptions_changed.wait()
            self._subscriptions_changed.clear()
            for subscription in self._subscriptions[done:]:
                await self._subscribe(client, subscription)
            done = len(self._subscriptions)

    async def _subscribe(self, client: aiomqtt.Client, subscription: Subscription) -> None:
        granted = await client.subscribe(subscription.topic_filter, qos=subscription.qos)
        refused = [
            code
            for code in granted
            if (code.is_failure if isinstance(code, ReasonCode) else code >= 0x80)
        ]
        if refused:
            _log.error(
                "the broker refused the subscription to %s (%s): check the ACL",
                subscription.topic_filter,
                refused[0],
            )

    async def _send(self, client: aiomqtt.Client) -> None:
        """Hand queued messages to the connection in order, at most ``window`` unacknowledged."""
        window = asyncio.Semaphore(self._window)
        properties = self._publish_properties()
        async with asyncio.TaskGroup() as group:
            while True:
                await window.acquire()
                message = self._outbox.take()
                while message is None:
                    self._wake.clear()
                    message = self._outbox.take()
                    if message is None:
                        await self._wake.wait()
                        message = self._outbox.take()
                # tasks start in creation order and hand their message to paho before their first
                # await, so the wire order is the outbox order
                group.create_task(self._deliver(client, message, window, properties))

    async def _deliver(
        self,
        client: aiomqtt.Client,
        message: Outgoing,
        window: asyncio.Semaphore,
        properties: Properties | None,
    ) -> None:
        await client.publish(
            message.topic,
            message.payload,
            qos=message.qos,
            retain=message.retain,
            properties=properties,
            timeout=self._ack_timeout_s,
        )
        self._outbox.acknowledged(message.key)
        window.release()
        latency_ms = (self._clock.monotonic() - message.enqueued_at) * 1000
        self.stats.published += 1
        self.stats.latency_last_ms = latency_ms
        self.stats.latency_max_ms = max(self.stats.latency_max_ms, latency_ms)
        self.stats.latency_total_ms += latency_ms
        self._update_depth()
        if not len(self._outbox):
            self._empty.set()

    def _publish_properties(self) -> Properties | None:
        if self._protocol is not aiomqtt.ProtocolVersion.V5:
            return None
        properties = _properties(PacketTypes.PUBLISH)
        properties.PayloadFormatIndicator = 1
        properties.ContentType = "application/json"
        return properties

    def _update_depth(self) -> None:
        depth = len(self._outbox)
        self.stats.queued = depth
        self.stats.queued_max = max(self.stats.queued_max, depth)
        capacity = self._outbox.capacity
        if depth >= 0.8 * capacity and not self._high_water_warned:
            self._high_water_warned = True
            _log.warning(
                "MQTT outbox %d%% full (%d of %d)", 100 * depth // capacity, depth, capacity
            )
        elif depth < 0.5 * capacity:
            self._high_water_warned = False

    def _report_overflow(self, now: float) -> None:
        if self._overflow_log.ready(now):
            _log.error(
                "MQTT outbox full (%d messages, broker %s): dropped so far %s",
                self._outbox.capacity,
                "connected" if self.stats.connected else "unreachable",
                ", ".join(f"{name} {count}" for name, count in self.stats.dropped.items()),
            )


def _drop(client: aiomqtt.Client) -> None:
    """End a connection the link gives up on without a DISCONNECT packet.

    aiomqtt leaves a failed connection with a normal DISCONNECT, after which the broker discards
    the last will: a detector that timed out would go on showing ``online``. Shutting the socket
    makes the broker see a lost connection and publish the will (MQTT 3.1.1 and 5 alike).
    """
    sock = client._client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _reason_code(failure: BaseException | None) -> int | None:
    """The CONNACK (or other MQTT) reason code of a failure, if it carries one."""
    if not isinstance(failure, aiomqtt.MqttCodeError):
        return None
    rc = failure.rc
    return rc.value if isinstance(rc, ReasonCode) else rc


def _for_good(failure: BaseException | None) -> str | None:
    """Why ``failure`` will happen again on every attempt, or ``None`` if it may pass.

    A refused CONNACK of :data:`_REFUSALS_FOR_GOOD`, or a broker certificate that does not verify
    (aiomqtt hides the :class:`ssl.SSLCertVerificationError` as the context of its MqttError).
    Anything else (refused or reset connections, timeouts, a broker restarting) may pass.
    """
    code = _reason_code(failure)
    if isinstance(failure, MqttConnectError) and code in _REFUSALS_FOR_GOOD:
        return (
            f"the broker refused the connection: {_REFUSALS_FOR_GOOD[code]} (reason {code}); "
            f"check the user in the URL, {MQTT_PASSWORD_ENV} and the broker's users and ACL"
        )
    seen: BaseException | None = failure
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate verification failed ({seen.verify_message or seen.reason}); "
                "check mqtt.tls.ca_file and the host name in the URL"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _first_leaf(group: BaseExceptionGroup[BaseException] | None) -> BaseException | None:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]  # type: ignore[assignment]
    return group


# --- the detector's side ------------------------------------------------------------------------


@dataclass(slots=True)
class CommandStats:
    """What came in on the command topics."""

    received: int = 0
    commands: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # the same command again: its first reply was published again
    replies: int = 0
    error_replies: int = 0  # replies to refused commands, summaries included
    refusals_coalesced: int = 0  # refused commands answered by a summary, not a reply of their own


@dataclass(slots=True)
class _Held:
    """Refusals of one session waiting for the summary reply due at ``due``."""

    due: float
    first: CommandError
    codes: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def count(self) -> int:
        return self.codes.total()

    def reply(self, interval_s: float) -> CommandReply:
        """One reply answering every held refusal (the refusal's own reply when there is one)."""
        if self.count == 1:
            return self.first.reply()
        tally = ", ".join(f"{code} {n}" for code, n in self.codes.most_common())
        return CommandReply(
            command_id=None,
            session=self.first.session,
            kind=None,
            ok=False,
            error=ErrorCode(self.codes.most_common(1)[0][0]),
            reason=f"{self.count} commands refused within {interval_s:g} s, none carried out "
            f"({tally})",
            answers=self.count,
        )


@dataclass(slots=True)
class _Answer:
    """A command taken, as compared with a later one of the same id, and its reply once sent."""

    command: dict[str, Any]
    reply: CommandReply | None = None


def _sameness(command: Command) -> dict[str, Any]:
    """What makes a command the same command: everything but ``issued_at`` (a retry may be
    stamped anew; it still asks for the same thing)."""
    return command.model_dump(exclude={"issued_at"})


class CommandChannel:
    """Commands from staff: parsed, authorised, deduplicated, answered; garbage never stops it.

    Iterating yields only valid, new commands whose sender may give them (``staff``, see
    :class:`~monitor.mqtt.staff.StaffDirectory`), each session's in the order they arrived; the
    service carries each out and answers with :meth:`reply` (``reply_ok`` /
    ``reply_for_error``). Give it a link of its own (``MqttLink.from_settings(..., intake=True)``):
    the broker then queues a backlog or a flood of commands behind commands only, and replies
    never wait in the alarms' outbox.

    Intake is bounded: at most ``capacity`` received commands are held, at most
    ``session_capacity`` of one session (the topic's session level); beyond that the newest is
    dropped, counted in :attr:`dropped` and logged at ERROR level. Sessions take turns, one
    command each, so a flood on one delays the others by at most one command per flooded session;
    a session's commands keep their order. The channel yields to the event loop every
    ``INTAKE_BATCH`` messages. A command whose sender may not give it, or that reuses a
    ``command_id``, gets its own refusal. A command that does not parse is refused; per
    session (reply topic) the first refusal is answered at once and the ones within the next
    ``refusal_interval_s`` by one summary reply at its end, so a flood of N junk commands costs a
    reply a second, not N. Every refusal is counted per error code and summarised in the log.
    A redelivered command (same session and ``command_id``, as QoS 1 allows) is not yielded
    again; its earlier reply is published again. A ``command_id`` seen before with a different
    command is refused, never answered with the first command's reply.
    """

    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        staff: StaffDirectory,
        *,
        refusal_interval_s: float = REFUSAL_REPLY_INTERVAL_S,
        capacity: int = COMMAND_INTAKE_CAPACITY,
        session_capacity: int = SESSION_INTAKE_CAPACITY,
        remember: int = 4096,
        clock: Clock | None = None,
    ) -> None:
        self.topics = topics
        self.stats = CommandStats()
        self._link = link
        self._subscription = link.subscribe(topics.commands_filter, qos=1, capacity=capacity)
        self._capacity = capacity
        self._session_capacity = session_capacity
        self._turns: OrderedDict[str, collections.deque[Incoming]] = OrderedDict()
        self._waiting = 0  # messages in self._turns
        self._turn_drops = 0
        self._drop_log = LogThrottle(10.0)
        self._clock: Clock = clock or SystemClock()
        self._interval_s = refusal_interval_s
        self._answered: dict[str | None, float] = {}  # session -> when a refusal was last answered
        self._held: dict[str | None, _Held] = {}
        self._remember = remember
        self._seen: OrderedDict[tuple[str, str], _Answer] = OrderedDict()
        self._staff = staff
        self._log = LogThrottle(10.0)

    @property
    def dropped(self) -> int:
        """Commands the full intake had to drop (each logged, none carried out or answered)."""
        return self._subscription.dropped + self._turn_drops

    @property
    def backlog(self) -> int:
        """Commands received and not yet handled."""
        return len(self._subscription) + self._waiting

    @property
    def connected(self) -> bool:
        """Whether the channel's link is up (commands reach the service and replies leave)."""
        return self._link.is_connected

    def __aiter__(self) -> AsyncGenerator[Command, None]:
        return self._commands()

    async def _commands(self) -> AsyncGenerator[Command, None]:
        handled = 0
        try:
            while True:
                message = await self._next()
                if message is None:
                    continue
                handled += 1
                if handled % INTAKE_BATCH == 0:
                    await asyncio.sleep(0)  # a backlog is taken in slices
                command = self._accept(message)
                if command is not None:
                    yield command
        finally:
            self._answer_held(math.inf)

    async def _next(self) -> Incoming | None:
        """The next message, sessions in turn, or ``None`` once a summary reply fell due."""
        now = self._clock.monotonic()
        self._answer_held(now)
        while (waiting := self._subscription.get_nowait()) is not None:
            self._queue(waiting)
        if self._turns:
            return self._next_turn()
        due = min((held.due for held in self._held.values()), default=None)
        if due is None:
            return await anext(self._subscription)
        try:
            async with asyncio.timeout(max(0.0, due - now)):
                return await anext(self._subscription)
        except TimeoutError:
            return None

    def _queue(self, message: Incoming) -> None:
        """Behind the earlier commands of its session (the topic's level, as yet unchecked)."""
        target = command_target(message.topic)
        session = "" if target is None else target.session
        queue = self._turns.get(session)
        if queue is None:
            queue = self._turns[session] = collections.deque()
        if len(queue) >= self._session_capacity or self._waiting >= self._capacity:
            self._turn_drops += 1
            if self._drop_log.ready(self._clock.monotonic()):
                _log.error(
                    "command intake full (%d of one session, %d in all): dropped %d command(s) "
                    "so far, neither carried out nor answered",
                    self._session_capacity,
                    self._capacity,
                    self.dropped,
                )
            if not queue:
                del self._turns[session]
            return
        queue.append(message)
        self._waiting += 1

    def _next_turn(self) -> Incoming:
        session, queue = next(iter(self._turns.items()))
        message = queue.popleft()
        self._waiting -= 1
        if queue:
            self._turns.move_to_end(session)
        else:
            del self._turns[session]
        return message

    def _accept(self, message: Incoming) -> Command | None:
        self.stats.received += 1
        parsed = parse_command(message.topic, message.payload, retained=message.retain)
        if isinstance(parsed, CommandError):
            self._refuse(parsed)
            return None
        refused = self._staff.check(message.topic, parsed)
        if refused is not None:
            self._refuse(refused, answer_each=True)
            return None
        key = (parsed.session, parsed.command_id)
        earlier = self._seen.get(key)
        if earlier is not None and earlier.command != _sameness(parsed):
            self._refuse(
                CommandError.refusing(
                    parsed,
                    message.topic,
                    ErrorCode.COMMAND_ID_REUSED,
                    "command_id reused for a different command",
                ),
                answer_each=True,
            )
            return None
        if earlier is not None:
            self.stats.duplicates += 1
            if earlier.reply is not None:
                self._publish(earlier.reply)
            return None
        self._seen[key] = _Answer(_sameness(parsed))
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        self.stats.commands += 1
        return parsed

    def reply(self, reply: CommandReply) -> None:
        """Publish the outcome of a command (always: it answers a real command)."""
        if reply.session is not None and reply.command_id is not None:
            answer = self._seen.get((reply.session, reply.command_id))
            if answer is not None:
                answer.reply = reply
        self._publish(reply)

    def _publish(self, reply: CommandReply) -> None:
        self.stats.replies += 1
        self._link.publish(self.topics.replies(reply.session), reply, priority=Priority.REPLY)

    def _refuse(self, error: CommandError, *, answer_each: bool = False) -> None:
        """Count and log a refusal and answer it: a well-formed command someone sent
        (``answer_each``) gets its own reply, junk is answered in per-session summaries."""
        code = error.code.value
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        now = self._clock.monotonic()
        if self._log.ready(now):
            # the session and kind as parsed, not the raw topic: its levels could hold anything
            _log.warning(
                "refused a %s command for session %s: %s (%s); %d more refused since the last "
                "report",
                error.kind or "unknown",
                error.session or "unknown",
                code,
                error.message,
                self._log.take_suppressed(),
            )
        if answer_each:
            self.stats.error_replies += 1
            self._publish(error.reply())
            return
        session = error.session
        held = self._held.get(session)
        answered = self._answered.get(session)
        if held is None and (answered is None or now - answered >= self._interval_s):
            self._answered[session] = now
            self.stats.error_replies += 1
            self._publish(error.reply())
            return
        if held is None:
            assert answered is not None
            held = self._held[session] = _Held(answered + self._interval_s, error)
        held.codes[code] += 1
        self.stats.refusals_coalesced += 1

    def _answer_held(self, now: float) -> None:
        """Publish the summaries due by ``now``; forget sessions quiet for an interval."""
        for session, held in list(self._held.items()):
            if held.due <= now:
                del self._held[session]
                self._answered[session] = min(now, held.due)
                self.stats.error_replies += 1
                self._publish(held.reply(self._interval_s))
        for session, answered in list(self._answered.items()):
            if now - answered >= self._interval_s and session not in self._held:
                del self._answered[session]


class GatewayPublisher:
    """Readings and device events out, as a gateway (or the service's own connector) sends them."""

    def __init__(self, link: MqttLink, topics: Topics, numbering: BatchNumbering) -> None:
        self._link = link
        self._topics = topics
        self.numbering = numbering

    def readings(self, readings: Sequence[Reading], sent_at: dt.datetime) -> VitalsBatch:
        """One numbered batch of one participant's readings (QoS 1)."""
        batch = self.numbering.batch(readings, sent_at)
        self._link.publish(self._topics.readings(batch.session, batch.participant), batch)
        return batch

    def readings_by_participant(
        self, readings: Sequence[Reading], sent_at: dt.datetime
    ) -> list[VitalsBatch]:
        """Readings of any participants: one batch per participant in arrival order, split at
        ``MAX_BATCH_READINGS`` (a burst after a reconnect can exceed one message)."""
        by_participant: dict[tuple[str, str], list[Reading]] = {}
        for reading in readings:
            by_participant.setdefault((reading.session, reading.participant), []).append(reading)
        return [
            self.readings(stream[start : start + MAX_BATCH_READINGS], sent_at)
            for stream in by_participant.values()
            for start in range(0, len(stream), MAX_BATCH_READINGS)
        ]

    def device(self, event: DeviceEvent) -> None:
        """A device event, retained per device: its ``state`` is the link's current state."""
        self._link.publish(
            self._topics.device(event.session, event.participant, event.device),
            DeviceStatus(event=event),
            retain=True,
        )


class Malformed(enum.StrEnum):
    """Why :class:`VitalsFeed` dropped a message; the keys of :attr:`FeedStats.malformed`."""

    INVALID_TOPIC = "invalid_topic"  # not a readings or device topic of this site
    INVALID_JSON = "invalid_json"  # not UTF-8 JSON
    DUPLICATE_KEY = "duplicate_key"  # an object has a key twice (which value counts is unclear)
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    INVALID_PAYLOAD = "invalid_payload"  # JSON that does not match the payload model
    TOPIC_MISMATCH = "topic_mismatch"  # the payload names another session, participant, device
    INTERNAL = "internal"  # parsing failed in an unexpected way (a bug: report it)


@dataclass(slots=True)
class FeedStats:
    """What came in on the readings and device topics (the batch numbering is in
    :attr:`VitalsFeed.sequence`: lost, late, duplicate batches, gateway restarts)."""

    messages: int = 0
    batches: int = 0  # new batches passed on
    readings: int = 0
    device_events: int = 0
    device_repeats: int = 0  # a device's latest event again: retained, restated, redelivered
    malformed: dict[str, int] = field(default_factory=dict)


class VitalsFeed:
    """Readings and device events from the site's gateways, handed out as a BLE connector does.

    The detector role's input: the same two callbacks as
    :class:`~monitor.devices.connector.Connector`, called once per new reading and device event,
    so a consumer that collects a connector's output into lists between detection passes takes a
    feed unchanged::

        feed = VitalsFeed(link, topics, readings.append, device_events.append)
        group.create_task(feed.run())  # until cancelled

    QoS 1 delivers at least once: a batch :class:`SequenceTracker` calls a duplicate is skipped
    (lost and late batches are counted there), and a device event equal to the latest one of its
    device is skipped (retained messages come again on every resubscribe, and a gateway restates
    them after every reconnect). The first message per device may be the broker's retained one,
    from before the feed listened: its ``occurred_at`` says how old it is. Garbage (bad JSON,
    another schema, a payload that contradicts its topic) is counted by :class:`Malformed` and
    logged at most every ``log_interval_s``, naming fields but never echoing values; nothing a
    publisher sends makes :meth:`run` raise. ``on_batch`` sees each new batch before its
    readings are handed out (its gateway, numbering and ``sent_at``).
    """

    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        on_reading: Callable[[Reading], None],
        on_device_event: Callable[[DeviceEvent], None],
        *,
        capacity: int = 10_000,
        remember_devices: int = 4096,
        log_interval_s: float = 10.0,
        clock: Clock | None = None,
        on_batch: Callable[[VitalsBatch], None] | None = None,
    ) -> None:
        self.topics = topics
        self._on_batch = on_batch
        self.stats = FeedStats()
        self.sequence = SequenceTracker()
        self._on_reading = on_reading
        self._on_device_event = on_device_event
        self._subscriptions = (
            link.subscribe(topics.readings_filter, qos=1, capacity=capacity),
            link.subscribe(topics.devices_filter, qos=1, capacity=capacity),
        )
        self._clock: Clock = clock or SystemClock()
        self._remember = remember_devices
        self._latest: OrderedDict[str, DeviceEvent] = OrderedDict()
        self._malformed_log = LogThrottle(log_interval_s)
        self._loss_log = LogThrottle(log_interval_s)

    @property
    def dropped(self) -> int:
        """Messages the full subscription queues had to drop (a consumer that fell behind)."""
        return sum(subscription.dropped for subscription in self._subscriptions)

    async def run(self) -> None:
        """Receive until cancelled; the link keeps the subscriptions across reconnects."""
        async with asyncio.TaskGroup() as group:
            for subscription in self._subscriptions:
                group.create_task(self._consume(subscription), name="vitals-feed")

    async def _consume(self, subscription: Subscription) -> None:
        async for message in subscription:
            self.receive(message)

    def receive(self, message: Incoming) -> None:
        """One message from the broker (:meth:`run` calls this); never raises on its content."""
        self.stats.messages += 1
        levels = message.topic.split("/")
        if topic_matches(message.topic, self.topics.readings_filter):
            batch = self._parse(VitalsBatch, message, "readings")
            if batch is None:
                return
            if levels[-2:] != [batch.session, batch.participant]:
                self._refuse("readings", Malformed.TOPIC_MISMATCH, "session or participant")
                return
            self._accept_batch(batch)
        elif topic_matches(message.topic, self.topics.devices_filter):
            status = self._parse(DeviceStatus, message, "device")
            if status is None:
                return
            event = status.event
            if levels[-3:] != [event.session, event.participant, event.device]:
                self._refuse("device", Malformed.TOPIC_MISMATCH, "session, participant or device")
                return
            self._accept_device_event(message.topic, event)
        else:
            self._refuse("unknown", Malformed.INVALID_TOPIC, "not a readings or device topic")

    def _parse(self, model: type[_M], message: Incoming, what: str) -> _M | None:
        try:
            load_json(message.payload)
        except DuplicateKeyError as error:
            self._refuse(what, Malformed.DUPLICATE_KEY, str(error))
            return None
        except (ValueError, RecursionError):
            self._refuse(what, Malformed.INVALID_JSON, "not UTF-8 JSON")
            return None
        try:
            return model.model_validate_json(message.payload)
        except ValidationError as error:
            self._refuse(what, _malformed(error), describe_validation_error(error))
        except Exception as error:  # garbage must never stop the feed
            self._refuse(what, Malformed.INTERNAL, type(error).__name__)
        return None

    def _accept_batch(self, batch: VitalsBatch) -> None:
        lost = self.sequence.stats.lost
        if not self.sequence.observe(batch):
            return
        if self.sequence.stats.lost > lost and self._loss_log.ready(self._clock.monotonic()):
            _log.warning(
                "reading batches missing from gateway %s (%s/%s): %d lost so far",
                batch.gateway,
                batch.session,
                batch.participant,
                self.sequence.stats.lost,
            )
        self.stats.batches += 1
        self.stats.readings += len(batch.readings)
        if self._on_batch is not None:
            self._on_batch(batch)
        for reading in batch.readings:
            self._on_reading(reading)

    def _accept_device_event(self, topic: str, event: DeviceEvent) -> None:
        if self._latest.get(topic) == event:
            self.stats.device_repeats += 1
            return
        self._latest[topic] = event
        self._latest.move_to_end(topic)
        while len(self._latest) > self._remember:
            self._latest.popitem(last=False)
        self.stats.device_events += 1
        self._on_device_event(event)

    def _refuse(self, what: str, reason: Malformed, detail: str) -> None:
        """Count and (rate-limited) log; the topic and payload are not logged: they could hold
        anything, names included."""
        self.stats.malformed[reason.value] = self.stats.malformed.get(reason.value, 0) + 1
        if self._malformed_log.ready(self._clock.monotonic()):
            _log.warning(
                "dropped a malformed %s message: %s (%s); %d more dropped since the last report",
                what,
                reason.value,
                detail,
                self._malformed_log.take_suppressed(),
            )


def _malformed(error: ValidationError) -> Malformed:
    errors = error.errors(include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return Malformed.INVALID_JSON
    if any(e["loc"][:1] == ("schema_version",) for e in errors):
        return Malformed.UNSUPPORTED_SCHEMA_VERSION
    return Malformed.INVALID_PAYLOAD


class AlarmPublisher:
    """Alarm events out: the alarm topic, the escalation topic when it applies, then the snapshot.

    One call per batch of events from the pipeline, with the pipeline's ``active()`` after them, so
    the retained snapshot always follows the events it includes, in the same ordered outbox.
    """

    def __init__(self, link: MqttLink, topics: Topics) -> None:
        self._link = link
        self._topics = topics
        self.escalations = EscalationTracker()
        self._sequence: dict[str, int] = {}

    def publish(
        self,
        session: str,
        events: Sequence[AlarmEvent],
        active: Sequence[AlarmEvent],
        as_of: dt.datetime,
    ) -> None:
        """Every event (QoS 1), escalations, and the session's new snapshot (retained)."""
        for event in events:
            self._link.publish(
                self._topics.alarms(event.session, event.participant),
                AlarmMessage(event=event),
                priority=Priority.ALARM,
            )
            escalation = self.escalations.route(event)
            if escalation is not None:
                self._link.publish(
                    self._topics.escalations(event.session, event.participant),
                    escalation,
                    priority=Priority.ALARM,
                )
        if events or session not in self._sequence:
            self.snapshot(
                session, active, as_of, sequence=max((e.sequence for e in events), default=None)
            )

    def snapshot(
        self,
        session: str,
        active: Sequence[AlarmEvent],
        as_of: dt.datetime,
        *,
        sequence: int | None = None,
    ) -> None:
        """Publish the retained snapshot (at start-up too: a stale one from the last run stays
        on the broker until replaced)."""
        last = max(
            [self._sequence.get(session, 0), *(a.sequence for a in active)]
            + ([] if sequence is None else [sequence])
        )
        self._sequence[session] = last
        self._link.publish(
            self._topics.active_alarms(session),
            ActiveAlarms(session=session, as_of=as_of, sequence=last, alarms=tuple(active)),
            retain=True,
            priority=Priority.STATE,
        )

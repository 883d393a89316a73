"""InfluxDB: the schema (readings, alarm events, device events as points) and the writer.

Points are serialised once, when they are accepted into the spool, by influxdb-client's own
``Point.to_line_protocol()``; the writer then only moves bytes, through one of two endpoints:

- ``api = "v2"``: ``/api/v2/write`` through the client's ``InfluxDBClientAsync`` (InfluxDB 1.8+,
  2.x, 3.x), ``Authorization: Token ...``;
- ``api = "v1"``: ``/write?db=...`` with aiohttp, for InfluxDB 1.x before 1.8 (Debian ships
  1.6.7, which has no v2 endpoint), with HTTP Basic auth from a ``user:password`` token.

The async write API does not batch, retry or survive a restart, so the spool does all three: the
writer takes the oldest pending points a batch at a time and deletes them from the spool only once
InfluxDB has acknowledged them. What a failure means decides what happens to the batch:

- connection errors, timeouts, 5xx, 429, and 401/403/404 (credentials, database or bucket: a
  configuration problem, not a bad point) keep it pending and retry with capped, jittered
  exponential backoff, for as long as it takes;
- 400, 413 and 422 say the points themselves are bad (a field type conflict, a syntax error, too
  large): the batch is split in halves until the rejected points are alone, and those are
  quarantined in the spool, logged and counted, so one bad point never blocks the rest.

Every point is idempotent (InfluxDB overwrites a point with the same measurement, tags and time),
so resending a batch after an ambiguous failure, or half of one after a partial write, is safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal, NoReturn, Protocol, Self, cast

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from pydantic import SecretStr

from monitor.backoff import Backoff
from monitor.clock import Clock, SystemClock
from monitor.models import AlarmEvent, DeviceEvent, Reading
from monitor.storage.settings import INFLUX_TOKEN_ENV, InfluxSettings
from monitor.storage.spool import Batch, PointKey, Spool, SpoolError, SpoolPoint
from monitor.throttle import LogThrottle
from monitor.tls import tls_context

__all__ = [
    "ALARM_MEASUREMENT",
    "DEVICE_MEASUREMENT",
    "VITALS_MEASUREMENT",
    "FieldValue",
    "InfluxWriteError",
    "InfluxWriter",
    "WriterStatus",
    "alarm_point",
    "classify_status",
    "device_point",
    "make_point",
    "reading_point",
    "to_point",
]

log = logging.getLogger(__name__)

VITALS_MEASUREMENT = "vitals"
ALARM_MEASUREMENT = "alarm_events"
DEVICE_MEASUREMENT = "device_status"

_MESSAGE_CHARS = 300
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_POINT: Any = Point  # the client's Point is unannotated; Any keeps its calls honest for mypy

FieldValue = float | int | bool | str | None
"""A field as the serialiser takes it; ``None`` (and a non-finite float) leaves the field out."""


# --- schema --------------------------------------------------------------------------------


def _ns(moment: dt.datetime) -> int:
    """Exact integer nanoseconds since the epoch (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat()


def make_point(
    measurement: str,
    tags: Mapping[str, str | None],
    fields: Mapping[str, FieldValue],
    time_ns: int,
) -> SpoolPoint:
    """One point, serialised by influxdb-client, with the identity the spool deduplicates on."""
    point: Any = _POINT(measurement)
    present: dict[str, str] = {name: tag for name, tag in tags.items() if tag}
    for name, tag in present.items():
        point.tag(name, tag)
    for name, field in fields.items():
        point.field(name, field)
    point.time(time_ns, WritePrecision.NS)
    line: str = point.to_line_protocol()
    return SpoolPoint(PointKey.of(measurement, present.items(), time_ns), line)


def reading_point(reading: Reading, *, site: str) -> SpoolPoint:
    """A reading at its receive time (the service's clock; a device clock may be unset or off)."""
    fields: dict[str, FieldValue] = {
        parameter.value: None if value is None else float(value)
        for parameter, value in reading.values.items()
    }
    fields["quality"] = ",".join(sorted(flag.value for flag in reading.quality))
    fields["usable"] = reading.usable
    fields["measured_at"] = _iso(reading.measured_at)
    tags = {
        "site": site,
        "session": reading.session,
        "participant": reading.participant,
        "device": reading.device,
        "kind": reading.kind.value,
    }
    return make_point(VITALS_MEASUREMENT, tags, fields, _ns(reading.received_at))


def alarm_point(event: AlarmEvent, *, site: str) -> SpoolPoint:
    """One alarm transition at the time it happened; ``sequence`` orders a session's events."""
    tags = {
        "site": site,
        "session": event.session,
        "participant": event.participant,
        "rule": event.rule,
        "priority": event.priority.value,
        "category": event.category.value,
        "state": event.state.value,
        # Several transitions can share an instant and every tag above (escalation steps due at
        # one tick); without this they would be one point, and InfluxDB would keep only the last.
        "seq": str(event.sequence),
    }
    fields: dict[str, FieldValue] = {
        "alarm_id": str(event.alarm_id),
        "sequence": event.sequence,
        "message": event.message,
        "parameter": None if event.parameter is None else event.parameter.value,
        "value": None if event.value is None else float(event.value),
        "threshold": None if event.threshold is None else float(event.threshold),
        "escalation_level": event.escalation_level,
        "acknowledged_by": event.acknowledged_by,
        "acknowledged_at": _iso(event.acknowledged_at),
        "raised_at": _iso(event.raised_at),
        "paused": event.paused,
        "condition_cleared": event.condition_cleared,
    }
    return make_point(ALARM_MEASUREMENT, tags, fields, _ns(event.occurred_at))


def device_point(event: DeviceEvent, *, site: str) -> SpoolPoint:
    """A link change or technical condition; a malformed payload is kept whole, in hex."""
    tags = {
        "site": site,
        "session": event.session,
        "participant": event.participant,
        "device": event.device,
        "device_kind": event.device_kind.value,
        "event": event.event.value,
        "state": event.state.value,
    }
    fields: dict[str, FieldValue] = {
        "detail": event.detail,
        "gap_s": None if event.gap_s is None else float(event.gap_s),
        "battery_percent": None if event.battery_percent is None else float(event.battery_percent),
        "characteristic": event.characteristic,
        "payload_hex": event.payload_hex,
        "count": event.count,
    }
    return make_point(DEVICE_MEASUREMENT, tags, fields, _ns(event.occurred_at))


def to_point(record: Reading | AlarmEvent | DeviceEvent, *, site: str) -> SpoolPoint:
    """The point for any record the service persists."""
    if isinstance(record, Reading):
        return reading_point(record, site=site)
    if isinstance(record, AlarmEvent):
        return alarm_point(record, site=site)
    return device_point(record, site=site)


# --- failures and backoff ------------------------------------------------------------------


class InfluxWriteError(Exception):
    """A write that did not land: ``bad_points`` says whether retrying the same bytes is futile."""

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        bad_points: bool,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status  # None: no HTTP answer (refused, reset, timed out)
        self.message = message
        self.bad_points = bad_points
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        status = "no response" if self.status is None else f"HTTP {self.status}"
        return f"{status}: {self.message}"


def classify_status(status: int, message: str, retry_after: str | None = None) -> InfluxWriteError:
    """Only 400, 413 and 422 blame the points; anything else is the server's or the setup's."""
    delay: float | None = None
    if retry_after is not None:
        try:
            delay = max(0.0, float(retry_after))
        except ValueError:
            delay = None
    hint = ""
    if status in (401, 403):
        hint = f" (check {INFLUX_TOKEN_ENV})"
    elif status == 404:
        hint = " (does the database or bucket exist, and is the api version right?)"
    text = message.strip()[:_MESSAGE_CHARS] + hint
    return InfluxWriteError(status, text, bad_points=status in (400, 413, 422), retry_after_s=delay)


# --- transports ----------------------------------------------------------------------------


class _Transport(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, body: bytes) -> None:
        """Deliver ns-precision line protocol, or raise :class:`InfluxWriteError`."""
        ...


def _ssl_context(config: InfluxSettings) -> ssl.SSLContext | None:
    if config.ca_file is None:
        return None
    return tls_context(config.ca_file)


class _V1Transport:
    """``POST /write?db=&precision=ns`` (InfluxDB 1.x), with aiohttp."""

    def __init__(self, config: InfluxSettings, token: SecretStr | None, timeout_s: float) -> None:
        self._url = config.url.rstrip("/") + "/write"
        self._params = {"db": config.bucket, "precision": "ns"}
        self._auth: aiohttp.BasicAuth | None = None
        if token is not None:
            user, colon, password = token.get_secret_value().partition(":")
            if not colon or not user:
                msg = f'with api = "v1", {INFLUX_TOKEN_ENV} must be "user:password"'
                raise ValueError(msg)
            self._auth = aiohttp.BasicAuth(user, password)
        self._ssl = _ssl_context(config)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auth=self._auth
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def write(self, body: bytes) -> None:
        assert self._session is not None
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        try:
            async with self._session.post(
                self._url, params=self._params, data=body, headers=headers
            ) as response:
                if 200 <= response.status < 300:
                    return
                text = await response.text(errors="replace")
                message = response.headers.get("X-Influxdb-Error") or _error_text(text)
                raise classify_status(response.status, message, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise InfluxWriteError(None, _describe(err), bad_points=False) from err


class _V2Transport:
    """``POST /api/v2/write`` through influxdb-client's async write API."""

    def __init__(self, config: InfluxSettings, token: SecretStr | None, timeout_s: float) -> None:
        if config.org is None:
            msg = 'api = "v2" needs an org'
            raise ValueError(msg)
        self._config = config
        self._org: str = config.org
        self._token = token
        self._timeout_ms = max(1, round(timeout_s * 1000))
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None

    async def open(self) -> None:
        extra: dict[str, object] = {}
        if self._config.ca_file is not None:
            extra["ssl_ca_cert"] = str(self._config.ca_file)
        self._client = InfluxDBClientAsync(
            url=self._config.url,
            token=self._token.get_secret_value() if self._token is not None else "",
            org=self._org,
            timeout=self._timeout_ms,
            enable_gzip=False,
            **extra,
        )
        self._write_api = self._client.write_api()

    async def close(self) -> None:
        client, self._client = self._client, None
        self._write_api = None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]

    async def write(self, body: bytes) -> None:
        assert self._write_api is not None
        try:
            accepted = await self._write_api.write(
                bucket=self._config.bucket,
                org=self._org,
                record=body,
                write_precision=cast("WritePrecision", WritePrecision.NS),
            )
        except ApiException as err:
            status = int(err.status or 0)
            if status == 0:
                raise InfluxWriteError(None, _describe(err), bad_points=False) from err
            retry_after = err.headers.get("Retry-After") if err.headers else None
            raise classify_status(status, str(err.message or err.reason), retry_after) from err
        except (InfluxDBError, aiohttp.ClientError, TimeoutError, OSError) as err:
            raise InfluxWriteError(None, _describe(err), bad_points=False) from err
        if not accepted:
            raise InfluxWriteError(None, "unexpected success status", bad_points=False)


def _error_text(text: str) -> str:
    """InfluxDB 1.x answers ``{"error": "..."}``, 2.x ``{"code": ..., "message": "..."}``."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or text)
    return text


def _describe(err: BaseException) -> str:
    return (str(err) or type(err).__name__)[:_MESSAGE_CHARS]


# --- the writer ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class WriterStatus:
    """What staff and logs need to know about the link to InfluxDB."""

    available: bool | None  # None until the first write was tried
    points_written: int
    points_quarantined: int
    retries: int
    last_error: str | None


class InfluxWriter:
    """Drains a :class:`Spool` into InfluxDB; owns the HTTP session as an async context manager.

    ``run()`` is the service's long-lived task (cancel it to stop: the batch in flight stays in
    the spool). ``drain()`` writes until the spool is empty, for shutdown (under a timeout) and
    tests. ``on_availability`` runs on each change between reachable and unreachable.
    """

    def __init__(
        self,
        spool: Spool,
        config: InfluxSettings,
        token: SecretStr | None,
        *,
        batch_size: int = 5_000,
        backoff: Backoff | None = None,
        request_timeout_s: float = 10.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_availability: Callable[[bool], None] | None = None,
    ) -> None:
        if batch_size < 1:
            msg = f"batch_size must be at least 1, got {batch_size}"
            raise ValueError(msg)
        self.config = config
        self.batch_size = batch_size
        self._spool = spool
        self._transport: _Transport = (
            _V1Transport(config, token, request_timeout_s)
            if config.api == "v1"
            else _V2Transport(config, token, request_timeout_s)
        )
        self._backoff = backoff if backoff is not None else Backoff()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.SystemRandom()
        self._on_availability = on_availability
        self._lock = asyncio.Lock()
        self._open = False
        self._available: bool | None = None
        self._written = 0
        self._quarantined = 0
        self._retries = 0
        self._last_error: str | None = None
        self._spool_refusals = LogThrottle(60.0)

    @property
    def api(self) -> Literal["v1", "v2"]:
        return self.config.api

    @property
    def status(self) -> WriterStatus:
        return WriterStatus(
            available=self._available,
            points_written=self._written,
            points_quarantined=self._quarantined,
            retries=self._retries,
            last_error=self._last_error,
        )

    async def __aenter__(self) -> Self:
        await self._transport.open()
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        await self._transport.close()

    async def run(self) -> NoReturn:
        """Write whatever the spool holds, then wait for more; forever."""
        while True:
            await self._spool.wait_for_points()
            try:
                await self._write_next_batch()
            except SpoolError as error:
                # The spool could not record a delivery (a full disk): the points stay pending
                # and go again, which InfluxDB takes as the same points, never as new ones.
                if self._spool_refusals.ready(self._clock.monotonic()):
                    log.error("the spool refuses writes (%s); delivered points go again", error)
                await self._clock.sleep(self._backoff.delay(0, self._rng))

    async def drain(self) -> None:
        """Write until the spool holds no pending points (retrying through outages)."""
        while self._spool.depth:
            await self._write_next_batch()

    async def _write_next_batch(self) -> None:
        if not self._open:
            msg = "the writer is not open (use it as an async context manager)"
            raise RuntimeError(msg)
        async with self._lock:
            batch = await self._spool.next_batch(self.batch_size)
            if batch:
                await self._deliver(batch)

    async def _deliver(self, batch: Batch) -> None:
        """Send ``batch``, bisecting on rejection so only the offending points are quarantined."""
        todo = [batch]
        while todo:
            part = todo.pop()
            try:
                await self._send(part)
            except InfluxWriteError as failure:
                if len(part) > 1:
                    first, second = part.split()
                    todo += [second, first]
                    continue
                await self._spool.quarantine(part, str(failure))
                self._quarantined += len(part)
                point = part.points[0]
                log.error(
                    "InfluxDB rejected a %s point at %d (%s); quarantined in the spool "
                    "(%d quarantined)",
                    point.key.measurement,
                    point.key.time_ns,
                    failure,
                    self._spool.quarantined,
                )
                continue
            await self._spool.mark_delivered(part)
            self._written += len(part)

    async def _send(self, batch: Batch) -> None:
        """Retry until InfluxDB takes the batch or blames its points (then raise)."""
        attempt = 0
        body = batch.body
        while True:
            try:
                await self._transport.write(body)
            except InfluxWriteError as failure:
                self._last_error = str(failure)
                if failure.bad_points:
                    self._set_available(True, failure)
                    raise
                self._set_available(False, failure)
                delay = self._backoff.delay(attempt, self._rng)
                if failure.retry_after_s is not None:
                    delay = min(self._backoff.max_s, max(delay, failure.retry_after_s))
                attempt += 1
                self._retries += 1
                log.debug("InfluxDB write failed (%s); retry %d in %.2f s", failure, attempt, delay)
                await self._clock.sleep(delay)
                continue
            self._set_available(True, None)
            return

    def _set_available(self, available: bool, failure: InfluxWriteError | None) -> None:
        if available == self._available:
            return
        self._available = available
        if available:
            log.info(
                "InfluxDB at %s (api %s) is accepting writes (%d pending in the spool)",
                self.config.url,
                self.config.api,
                self._spool.depth,
            )
        else:
            log.warning(
                "InfluxDB at %s (api %s) is not accepting writes (%s); points stay in the spool "
                "(%d pending) and the writer keeps retrying",
                self.config.url,
                self.config.api,
                failure,
                self._spool.depth,
            )
        if self._on_availability is not None:
            self._on_availability(available)

"""Counters and gauges for Prometheus, and the small HTTP server that exposes them.

The service already carries enough outside libraries; a scrape endpoint needs a few dozen lines of
text formatting and an ``asyncio`` server, not ``prometheus_client`` or an HTTP framework. The
server answers only ``GET``/``HEAD`` on a fixed table of routes and closes every connection after
one response, so it keeps no per-client state a slow or hostile client could pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Literal, Self

__all__ = [
    "METRICS_CONTENT_TYPE",
    "Counter",
    "Gauge",
    "HttpServer",
    "Metrics",
    "Route",
    "metrics_route",
]

_log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Route = Callable[[], Awaitable[tuple[int, str, bytes]]]
"""A page: returns (HTTP status, content type, body). Routes take no request: GET has no input."""

_PREFIX = "monitor_"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 method token
_VERSION = re.compile(r"^HTTP/1\.[01]$")
_MAX_SAFE_INTEGER = 2**53


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < _MAX_SAFE_INTEGER:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Family:
    """One metric name with its samples, keyed by label values in declared label order."""

    kind: Literal["counter", "gauge"]

    def __init__(self, name: str, help_text: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        if not self.labels:
            self._values[()] = 0.0

    def _key(self, labels: Mapping[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            expected = ", ".join(self.labels) or "none"
            given = ", ".join(sorted(labels)) or "none"
            msg = f"{self.name} takes labels ({expected}), got ({given})"
            raise ValueError(msg)
        return tuple(str(labels[name]) for name in self.labels)

    def samples(self) -> list[tuple[str, float]]:
        order = sorted(range(len(self.labels)), key=lambda i: self.labels[i])
        rendered: list[tuple[str, float]] = []
        for key, value in self._values.items():
            if not key:
                rendered.append(("", value))
                continue
            pairs = ",".join(f'{self.labels[i]}="{_escape_label_value(key[i])}"' for i in order)
            rendered.append((f"{{{pairs}}}", value))
        return sorted(rendered)


class Counter(_Family):
    """A value that only goes up: events counted since start-up."""

    kind = "counter"

    def inc(self, amount: float = 1, **labels: str) -> None:
        if amount < 0 or math.isnan(amount):
            msg = f"{self.name} is a counter: it cannot go down (amount {amount})"
            raise ValueError(msg)
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """For tests and the dashboard; 0 for a label set never incremented."""
        return self._values.get(self._key(labels), 0.0)


class Gauge(_Family):
    """A value that goes up and down: set from the owner when it changes."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        self._values[self._key(labels)] = float(value)

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """For tests and the dashboard; 0 for a label set never set."""
        return self._values.get(self._key(labels), 0.0)


class _FunctionMetric:
    """A value read at scrape time, so a count or depth owned elsewhere is never stale or
    double-kept: a gauge, or a counter when the owner only ever adds to it."""

    def __init__(
        self,
        name: str,
        help_text: str,
        fn: Callable[[], float],
        kind: Literal["counter", "gauge"],
    ) -> None:
        self.name = name
        self.help = help_text
        self.kind = kind
        self._fn = fn

    def samples(self) -> list[tuple[str, float]]:
        try:
            value = float(self._fn())
        except Exception:
            # A broken reader must not take the whole scrape down; NaN keeps the series visible.
            _log.exception("metric %s: reading its value failed", self.name)
            value = math.nan
        return [("", value)]


class Metrics:
    """The registry: every metric the service exposes, rendered in one scrape.

    Names are written in full (``monitor_readings_total``) so a dashboard's query can be found in
    the code with grep; the registry only checks the prefix. Everything runs on the event loop, so
    there is no locking; ``gauge_fn``/``counter_fn`` callables must be cheap and must not block.
    """

    def __init__(self) -> None:
        self._families: dict[str, _Family | _FunctionMetric] = {}

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        counter = Counter(self._check(name, labels), help, labels)
        self._families[name] = counter
        return counter

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        gauge = Gauge(self._check(name, labels), help, labels)
        self._families[name] = gauge
        return gauge

    def gauge_fn(self, name: str, help: str, fn: Callable[[], float]) -> None:
        self._families[self._check(name, ())] = _FunctionMetric(name, help, fn, "gauge")

    def counter_fn(self, name: str, help: str, fn: Callable[[], float]) -> None:
        """A total kept elsewhere that only grows (Prometheus computes rates from it)."""
        self._families[self._check(name, ())] = _FunctionMetric(name, help, fn, "counter")

    def values(self) -> dict[str, float]:
        """Every unlabelled metric's current value, by name (for the periodic log line)."""
        return {
            name: value
            for name, family in sorted(self._families.items())
            for labels, value in family.samples()
            if not labels
        }

    def render(self) -> str:
        """The text exposition format 0.0.4, metrics and samples sorted so scrapes diff cleanly."""
        lines: list[str] = []
        for name in sorted(self._families):
            family = self._families[name]
            lines.append(f"# HELP {name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {name} {family.kind}")
            lines += [f"{name}{labels} {_format_value(v)}" for labels, v in family.samples()]
        return "\n".join(lines) + "\n" if lines else ""

    def _check(self, name: str, labels: Sequence[str]) -> str:
        if not _NAME.match(name) or not name.startswith(_PREFIX):
            msg = f"metric name {name!r} must match {_NAME.pattern} and start with {_PREFIX!r}"
            raise ValueError(msg)
        if name in self._families:
            msg = f"metric {name!r} is already registered"
            raise ValueError(msg)
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__"):
                msg = f"{name}: invalid label name {label!r}"
                raise ValueError(msg)
        if len(set(labels)) != len(labels):
            msg = f"{name}: duplicate label names in {tuple(labels)}"
            raise ValueError(msg)
        return name


def metrics_route(metrics: Metrics) -> Route:
    """The ``/metrics`` page for :class:`HttpServer`."""

    async def scrape() -> tuple[int, str, bytes]:
        return 200, METRICS_CONTENT_TYPE, metrics.render().encode("utf-8")

    return scrape


class _BadRequestError(Exception):
    def __init__(self, status: http.HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


class HttpServer:
    """A minimal HTTP/1.1 server for a fixed table of ``GET`` pages.

    Each connection gets one request, one response and is closed. Reading the request has one
    deadline (``read_timeout_s``) for the request line and all headers together, so a client that
    trickles bytes cannot hold a connection longer than a silent one; request line and header block
    are size-limited and connections beyond ``max_clients`` are closed at once.
    With ``port=0`` pass a single address as ``host``: each address of a name such as
    ``localhost`` would get its own free port, and :attr:`port` reports the first.
    """

    def __init__(
        self,
        host: str,
        port: int,
        routes: Mapping[str, Route],
        *,
        read_timeout_s: float = 5.0,
        write_timeout_s: float = 10.0,
        max_request_line: int = 8192,
        max_header_bytes: int = 16384,
        max_headers: int = 100,
        max_clients: int = 64,
    ) -> None:
        for path in routes:
            if not path.startswith("/"):
                msg = f"route {path!r} must start with '/'"
                raise ValueError(msg)
        self.host = host
        self.port = port
        self._routes = dict(routes)
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._max_request_line = max_request_line
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[object]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=max(self._max_request_line, 1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        _log.info("HTTP server listening on %s:%d", self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._clients) >= self._max_clients or task is None:
            writer.close()
            return
        self._clients.add(task)
        try:
            response = await self._respond(reader)
            if response is not None:
                async with asyncio.timeout(self._write_timeout_s):
                    writer.write(response)
                    await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as err:
            _log.debug("HTTP client dropped: %r", err)
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(self._write_timeout_s):
                    await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> bytes | None:
        """The full response to the one request on this connection; None if the client left."""
        try:
            async with asyncio.timeout(self._read_timeout_s):
                method, path = await self._read_request(reader)
        except TimeoutError:
            return _response(http.HTTPStatus.REQUEST_TIMEOUT)
        except _BadRequestError as err:
            return _response(err.status)
        except asyncio.IncompleteReadError as err:
            return _response(http.HTTPStatus.BAD_REQUEST) if err.partial else None
        route = self._routes.get(path)
        if route is None:
            return _response(http.HTTPStatus.NOT_FOUND)
        if method not in {"GET", "HEAD"}:
            return _response(http.HTTPStatus.METHOD_NOT_ALLOWED)
        try:
            status, content_type, body = await route()
            return _response(
                http.HTTPStatus(status), body, content_type=content_type, head=method == "HEAD"
            )
        except Exception:
            _log.exception("HTTP route %s failed", path)
            return _response(http.HTTPStatus.INTERNAL_SERVER_ERROR)

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        line = await self._read_line(
            reader, self._max_request_line, http.HTTPStatus.REQUEST_URI_TOO_LONG
        )
        parts = line.split(" ")
        if len(parts) != 3 or not _TOKEN.match(parts[0]) or not _VERSION.match(parts[2]):
            raise _BadRequestError(http.HTTPStatus.BAD_REQUEST)
        method, target, _ = parts
        if not target.startswith("/"):
            raise _BadRequestError(http.HTTPStatus.BAD_REQUEST)
        too_large = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        header_bytes = 0
        for _count in range(self._max_headers + 1):
            header = await self._read_line(reader, self._max_header_bytes, too_large)
            if not header:
                return method, target.split("?", 1)[0]
            header_bytes += len(header)
            if header_bytes > self._max_header_bytes:
                raise _BadRequestError(too_large)
            name, colon, _value = header.partition(":")
            if not colon or not _TOKEN.match(name):
                raise _BadRequestError(http.HTTPStatus.BAD_REQUEST)
        raise _BadRequestError(too_large)

    @staticmethod
    async def _read_line(
        reader: asyncio.StreamReader, limit: int, too_long: http.HTTPStatus
    ) -> str:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _BadRequestError(too_long) from None
        if len(raw) > limit:
            raise _BadRequestError(too_long)
        try:
            return raw.rstrip(b"\r\n").decode("ascii")
        except UnicodeDecodeError:
            raise _BadRequestError(http.HTTPStatus.BAD_REQUEST) from None


def _response(
    status: http.HTTPStatus,
    body: bytes | None = None,
    *,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
) -> bytes:
    if body is None:
        body = f"{status.value} {status.phrase}\n".encode()
    headers = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store",
    ]
    if status is http.HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append("Allow: GET, HEAD")
    head_bytes = ("\r\n".join(headers) + "\r\n\r\n").encode("ascii")
    return head_bytes if head else head_bytes + body

"""A v2-to-1.x write translator, so the v2 write path can be tested against Debian's InfluxDB.

Debian ships InfluxDB 1.6.7, which has only the 1.x ``/write`` endpoint; ``/api/v2/write`` came
with 1.8. Rather than fake the v2 client's side, this small aiohttp proxy on a free loopback port
stands in for the part of a v2 server the writer uses: it accepts
``POST /api/v2/write?org=&bucket=&precision=`` with ``Authorization: Token <token>`` (and answers
401 to anything else, so the test proves the header is sent), forwards the body unchanged to the
real server's ``/write?db=<bucket>&precision=<precision>``, and translates the answer back: the
status as is, a 1.x ``{"error": ...}`` body as a v2 ``{"code": ..., "message": ...}`` one, and an
unreachable upstream as 503. It can serve HTTPS (``ssl_context``) for the CA-file path.
Everything the writer sends, including its line protocol, still
reaches and is judged by the real InfluxDB.
"""

from __future__ import annotations

import json
import ssl
from typing import Self

import aiohttp
from aiohttp import web

_PRECISIONS = {"ns": "ns", "us": "u", "ms": "ms", "s": "s"}


class InfluxV2Shim:
    """``async with InfluxV2Shim(upstream, token) as shim``; aim a v2 writer at ``shim.url``."""

    def __init__(
        self, upstream_url: str, token: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.token = token
        self.ssl_context = ssl_context
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/api/v2/write", self._write)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _write(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Token {self.token}":
            return _v2_error(401, "unauthorized", "unauthorized access")
        bucket = request.query.get("bucket")
        if not bucket or "org" not in request.query:
            return _v2_error(400, "invalid", "org and bucket are required")
        precision = _PRECISIONS.get(request.query.get("precision", "ns"))
        if precision is None:
            return _v2_error(400, "invalid", "unknown precision")
        body = await request.read()
        assert self._session is not None
        try:
            async with self._session.post(
                f"{self.upstream_url}/write",
                params={"db": bucket, "precision": precision},
                data=body,
            ) as upstream:
                text = await upstream.text()
                if upstream.status < 300:
                    return web.Response(status=204)
                try:
                    message = str(json.loads(text).get("error", text))
                except ValueError:
                    message = text
                code = "invalid" if upstream.status < 500 else "internal error"
                return _v2_error(upstream.status, code, message)
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            return _v2_error(503, "unavailable", f"upstream unreachable: {err}")


def _v2_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)

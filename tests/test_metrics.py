"""The metrics registry's exposition text and the HTTP server that serves it."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from monitor.metrics import METRICS_CONTENT_TYPE, HttpServer, Metrics, metrics_route


def sample_metrics() -> Metrics:
    metrics = Metrics()
    readings = metrics.counter(
        "monitor_readings_total", "Readings received, by kind.", labels=("kind", "session")
    )
    readings.inc(kind="spo2", session="S-1")
    readings.inc(3, kind="heart_rate", session="S-1")
    readings.inc(kind="heart_rate", session="S-1")
    metrics.counter("monitor_rejected_total", "Payloads rejected.")
    links = metrics.gauge("monitor_devices_connected", "Devices with a live link.", ("room",))
    links.set(4, room="room-b")
    links.set(2.5, room="room-a")
    depth = [7]
    metrics.gauge_fn("monitor_spool_depth", "Readings waiting in the spool.", lambda: depth[0])
    depth[0] = 9
    return metrics


def test_render_is_the_exposition_format_sorted() -> None:
    assert sample_metrics().render() == (
        "# HELP monitor_devices_connected Devices with a live link.\n"
        "# TYPE monitor_devices_connected gauge\n"
        'monitor_devices_connected{room="room-a"} 2.5\n'
        'monitor_devices_connected{room="room-b"} 4\n'
        "# HELP monitor_readings_total Readings received, by kind.\n"
        "# TYPE monitor_readings_total counter\n"
        'monitor_readings_total{kind="heart_rate",session="S-1"} 4\n'
        'monitor_readings_total{kind="spo2",session="S-1"} 1\n'
        "# HELP monitor_rejected_total Payloads rejected.\n"
        "# TYPE monitor_rejected_total counter\n"
        "monitor_rejected_total 0\n"
        "# HELP monitor_spool_depth Readings waiting in the spool.\n"
        "# TYPE monitor_spool_depth gauge\n"
        "monitor_spool_depth 9\n"
    )


def test_label_values_and_help_are_escaped() -> None:
    metrics = Metrics()
    gauge = metrics.gauge("monitor_x", 'Help with \\ and\nnewline and "quotes".', ("detail",))
    gauge.set(1, detail='a "b" \\ c\nd')
    assert metrics.render() == (
        '# HELP monitor_x Help with \\\\ and\\nnewline and "quotes".\n'
        "# TYPE monitor_x gauge\n"
        'monitor_x{detail="a \\"b\\" \\\\ c\\nd"} 1\n'
    )


def test_label_names_render_sorted_and_special_values() -> None:
    metrics = Metrics()
    gauge = metrics.gauge("monitor_y", "y", ("zone", "alpha"))
    gauge.set(float("inf"), zone="z", alpha="a")
    gauge.set(0.1, zone="a", alpha="b")
    assert metrics.render().splitlines()[2:] == [
        'monitor_y{alpha="a",zone="z"} +Inf',
        'monitor_y{alpha="b",zone="a"} 0.1',
    ]


def test_a_failing_gauge_function_renders_nan_and_the_rest() -> None:
    metrics = Metrics()

    def broken() -> float:
        raise RuntimeError("spool closed")

    metrics.gauge_fn("monitor_broken", "b", broken)
    metrics.counter("monitor_ok_total", "ok").inc()
    assert "monitor_broken NaN\n" in metrics.render()
    assert metrics.render().endswith("monitor_ok_total 1\n")


def test_misuse_is_refused() -> None:
    metrics = Metrics()
    counter = metrics.counter("monitor_a_total", "a", ("kind",))
    with pytest.raises(ValueError, match="start with"):
        metrics.counter("readings_total", "no prefix")
    with pytest.raises(ValueError, match="already registered"):
        metrics.gauge("monitor_a_total", "again")
    with pytest.raises(ValueError, match="invalid label"):
        metrics.gauge("monitor_b", "b", ("bad-label",))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(room="r")
    with pytest.raises(ValueError, match="cannot go down"):
        counter.inc(-1, kind="k")
    assert metrics.render().count("\n") == 2  # HELP and TYPE, no sample yet


# --- HTTP ----------------------------------------------------------------------------------


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_get_metrics_with_urllib() -> None:
    metrics = sample_metrics()
    async with HttpServer("127.0.0.1", 0, {"/metrics": metrics_route(metrics)}) as server:
        assert server.port > 0
        url = f"http://127.0.0.1:{server.port}/metrics"

        def fetch() -> tuple[int, str | None, str | None, bytes]:
            with urllib.request.urlopen(url, timeout=10) as response:
                return (
                    response.status,
                    response.headers["Content-Type"],
                    response.headers["Connection"],
                    response.read(),
                )

        status, content_type, connection, body = await asyncio.to_thread(fetch)
    assert status == 200
    assert content_type == METRICS_CONTENT_TYPE
    assert connection == "close"
    assert body.decode() == metrics.render()


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_head_has_headers_and_no_body() -> None:
    metrics = sample_metrics()
    async with HttpServer("127.0.0.1", 0, {"/metrics": metrics_route(metrics)}) as server:
        response = await raw_request(server.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert status_of(response) == 200
    assert f"Content-Length: {len(metrics.render())}".encode() in head
    assert body == b""


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_unknown_path_other_method_and_garbage() -> None:
    metrics = Metrics()
    async with HttpServer("127.0.0.1", 0, {"/metrics": metrics_route(metrics)}) as server:
        port = server.port
        not_found = await raw_request(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        post = await raw_request(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        garbage = await raw_request(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        no_version = await raw_request(port, b"GET /metrics\r\n\r\n")
        bad_header = await raw_request(port, b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n")
        query = await raw_request(port, b"GET /metrics?x=1 HTTP/1.0\n\n")

        def fetch_missing() -> int:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/missing", timeout=10)
            except urllib.error.HTTPError as err:
                return err.code
            return 200

        assert await asyncio.to_thread(fetch_missing) == 404
    assert status_of(not_found) == 404
    assert status_of(post) == 405
    assert b"Allow: GET, HEAD\r\n" in post
    assert status_of(garbage) == 400
    assert status_of(no_version) == 400
    assert status_of(bad_header) == 400
    assert status_of(query) == 200


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_oversized_request_line_and_headers_are_refused() -> None:
    routes = {"/metrics": metrics_route(Metrics())}
    async with HttpServer(
        "127.0.0.1", 0, routes, max_request_line=256, max_header_bytes=512, max_headers=4
    ) as server:
        long_line = await raw_request(server.port, b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\n\r\n")
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(10))
        many_headers = await raw_request(server.port, b"GET /metrics HTTP/1.1\r\n" + many + b"\r\n")
        big = b"X-Big: " + b"b" * 2000 + b"\r\n"
        big_header = await raw_request(server.port, b"GET /metrics HTTP/1.1\r\n" + big + b"\r\n")
    assert status_of(long_line) == 414
    assert status_of(many_headers) == 431
    assert status_of(big_header) == 431


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_silent_client_is_dropped_without_blocking_others() -> None:
    metrics = sample_metrics()
    routes = {"/metrics": metrics_route(metrics)}
    async with HttpServer("127.0.0.1", 0, routes, read_timeout_s=1.0) as server:
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.port)
        trickle_reader, trickle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        trickle_writer.write(b"GET /metr")
        await trickle_writer.drain()

        other = await raw_request(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status_of(other) == 200
        assert not silent_reader.at_eof()

        dropped = await silent_reader.read()  # returns once the server closes the connection
        trickled = await trickle_reader.read()
        for writer in (silent_writer, trickle_writer):
            writer.close()
            await writer.wait_closed()
    assert status_of(dropped) == 408
    assert status_of(trickled) == 408


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_leaving_the_context_closes_open_connections() -> None:
    routes = {"/metrics": metrics_route(Metrics())}
    async with HttpServer("127.0.0.1", 0, routes, read_timeout_s=60) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        response = await raw_request(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status_of(response) == 200
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_failing_route_is_a_500() -> None:
    async def broken() -> tuple[int, str, bytes]:
        raise RuntimeError("boom")

    async with HttpServer("127.0.0.1", 0, {"/broken": broken}) as server:
        response = await raw_request(server.port, b"GET /broken HTTP/1.1\r\n\r\n")
    assert status_of(response) == 500


def test_function_counters_are_typed_counters_and_values_feed_the_log_line() -> None:
    metrics = Metrics()
    seen = [3]
    metrics.counter_fn("monitor_readings_total", "Readings received.", lambda: seen[0])
    metrics.gauge_fn("monitor_spool_depth", "Points waiting.", lambda: 2)
    metrics.counter("monitor_by_kind_total", "By kind.", labels=("kind",)).inc(kind="hr")
    assert "# TYPE monitor_readings_total counter\nmonitor_readings_total 3\n" in metrics.render()
    seen[0] = 5
    assert metrics.values() == {"monitor_readings_total": 5.0, "monitor_spool_depth": 2.0}

"""pulse.service puts the ops routes where PULSE_OPS_PORT says, over real sockets.

``serving_api`` is the one call an API service (ingest, ws-gateway) makes; ``serving_ops``
the one a worker makes. Ingest's own process test is in services/ingest/tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from pulse.service import Lifecycle, serving_api, serving_ops
from pulse.settings import PulseSettings
from pulse_dev.testing import free_port


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def _api() -> web.Application:
    app = web.Application()

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/hello", hello)
    return app


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        return resp.status


async def test_separate_ops_port_takes_metrics_off_the_api_port(
    http: aiohttp.ClientSession,
) -> None:
    api_port, ops_port = free_port(), free_port()
    settings = PulseSettings(http_host="127.0.0.1", http_port=api_port, ops_port=ops_port)
    lifecycle = Lifecycle(settings)
    api, ops = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ops_port}"
    async with serving_api(_api(), lifecycle):
        assert [await _status(http, f"{api}{p}") for p in ("/hello", "/healthz", "/readyz")] == [
            200,
            200,
            200,
        ]
        assert await _status(http, f"{api}/metrics") == 404
        assert [await _status(http, f"{ops}{p}") for p in ("/metrics", "/healthz", "/readyz")] == [
            200,
            200,
            200,
        ]
        assert await _status(http, f"{ops}/hello") == 404
        lifecycle.stopping.set()
        assert await _status(http, f"{ops}/readyz") == 503  # draining: out of the endpoints
    with pytest.raises(aiohttp.ClientConnectionError):
        await _status(http, f"{ops}/healthz")


async def test_without_an_ops_port_everything_is_on_the_api_port(
    http: aiohttp.ClientSession,
) -> None:
    port = free_port()
    lifecycle = Lifecycle(PulseSettings(http_host="127.0.0.1", http_port=port))
    async with serving_api(_api(), lifecycle):
        for path in ("/hello", "/healthz", "/readyz", "/metrics"):
            assert await _status(http, f"http://127.0.0.1:{port}{path}") == 200, path


async def test_a_worker_serves_its_ops_routes_on_the_ops_port_when_set(
    http: aiohttp.ClientSession,
) -> None:
    http_port, ops_port = free_port(), free_port()
    settings = PulseSettings(http_host="127.0.0.1", http_port=http_port, ops_port=ops_port)
    async with serving_ops(Lifecycle(settings)):
        assert await _status(http, f"http://127.0.0.1:{ops_port}/metrics") == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await _status(http, f"http://127.0.0.1:{http_port}/healthz")


async def test_readyz_answers_while_a_part_starting_late_adds_its_check(
    http: aiohttp.ClientSession,
) -> None:
    """A worker's queue consumer adds its check once it starts, which may be while a probe's
    checks run: the probe answers (503 until every check passes), never 500."""
    port = free_port()
    lifecycle = Lifecycle(PulseSettings(http_host="127.0.0.1", http_port=port))

    async def slow_and_adding() -> None:
        await asyncio.sleep(0.1)
        lifecycle.add_check("queue", failing)

    async def failing() -> None:
        raise RuntimeError("queue not there yet")

    lifecycle.add_check("redis", slow_and_adding)
    async with serving_ops(lifecycle):
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            first = (resp.status, (await resp.json())["checks"])
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            second = (resp.status, (await resp.json())["checks"])
    assert first == (200, {"redis": "ok"})
    assert second == (503, {"redis": "ok", "queue": "RuntimeError: queue not there yet"})

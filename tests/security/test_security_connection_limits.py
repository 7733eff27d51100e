"""Connection limits of one gateway process: in all (503 + Retry-After) and per user (429).

A user's runaway tabs or a leaked token must not take a process's capacity from everyone
else, and a full process must say so at the handshake, so the client's backoff or the load
balancer sends the connection elsewhere — never accept it and fall over later.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from pulse_dev.testing import GatewayFactory, RunningGateway

SECRET = "connection-limits-secret-4b1d7e0a9c2f"
MAX_CONNECTIONS = 4
PER_USER = 2


@pytest.fixture(scope="module")
def small_gateway(module_gateways: GatewayFactory) -> RunningGateway:
    return module_gateways.start(
        secret=SECRET,
        PULSE_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        PULSE_MAX_CONNECTIONS_PER_USER=str(PER_USER),
    )


async def _refused(http: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    """The handshake status of a connection that must be refused, and its Retry-After."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url)
    headers: Mapping[str, str] = refused.value.headers or {}
    return refused.value.status, headers.get("Retry-After")


async def _still_answers(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str('{"op":"ping"}')
    assert (await ws.receive_json(timeout=5))["op"] == "pong"


async def test_per_user_and_per_process_limits_hold_and_free_up(
    small_gateway: RunningGateway, mint: Any
) -> None:
    def ws_url(sub: str) -> str:
        return f"{small_gateway.ws}?token={mint(SECRET, sub=sub, roles=[])}"

    async with aiohttp.ClientSession() as http, AsyncExitStack() as held:
        alice = [await held.enter_async_context(http.ws_connect(ws_url("alice"))) for _ in "ab"]

        # a third session of alice: refused, over WebSocket and over SSE alike
        assert (await _refused(http, ws_url("alice")))[0] == 429
        sse = f"{small_gateway.http}/sse?channels=account:alice&token={mint(SECRET, sub='alice')}"
        async with http.get(sse) as resp:
            assert resp.status == 429
            assert (await resp.json())["type"] == "https://pulse.dev/problems/too-many-connections"

        bob = [await held.enter_async_context(http.ws_connect(ws_url("bob"))) for _ in "ab"]

        # the process is full: anyone else is told to come back (503 + Retry-After)
        status, retry_after = await _refused(http, ws_url("carol"))
        assert (status, retry_after) == (503, "1")

        # the refusals disturbed nobody already connected
        for ws in (*alice, *bob):
            await _still_answers(ws)

        # a closed connection gives its place back, to its user and to the process
        await alice[0].close()
        async with http.ws_connect(ws_url("carol")) as carol:
            await _still_answers(carol)
        async with http.ws_connect(ws_url("alice")) as again:
            await _still_answers(again)

        async with http.get(f"{small_gateway.http}/metrics") as resp:
            metrics = await resp.text()
        assert 'pulse_ws_connections_refused_total{reason="per_user"} 2.0' in metrics
        assert 'pulse_ws_connections_refused_total{reason="capacity"} 1.0' in metrics

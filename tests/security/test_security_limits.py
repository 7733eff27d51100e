"""Size and count limits hold on real processes: what a client can make a service hold.

Covered elsewhere (see tests/security/README.md): ingest's 413 for a large body, with and
without Content-Length (services/ingest/tests/test_ingest_api.py), the gateway's 1009 for a
frame over ``PULSE_MAX_MESSAGE_BYTES`` and 4029 for a flood of operations
(services/ws-gateway/tests/test_ws_gateway_service.py).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from pulse.topology import TopologyOutputs
from pulse_dev.testing import free_port

pytestmark = pytest.mark.timeout(60)

MAX_SUBSCRIPTIONS = 5  # the gateway's setting in tests/security/conftest.py


async def _send(ws: aiohttp.ClientWebSocketResponse, **frame: Any) -> dict[str, Any]:
    await ws.send_str(orjson.dumps(frame).decode())
    return dict(orjson.loads((await ws.receive(5)).data))


async def test_gateway_limits_per_connection(
    gateway: Any, http: aiohttp.ClientSession, mint: Any
) -> None:
    token = mint(sub="limits", roles=["ops"])
    async with http.ws_connect(f"{gateway.ws}?token={token}") as ws:
        for n in range(MAX_SUBSCRIPTIONS):
            assert (await _send(ws, op="subscribe", channel=f"account:l{n}"))["op"] == "subscribed"
        over = await _send(ws, op="subscribe", channel="account:one-too-many")
        assert (over["op"], over["code"]) == ("error", "limit_exceeded")
        big = await _send(ws, op="publish", channel="account:l0", data={"x": "y" * 5000})
        assert (big["op"], big["code"]) == ("error", "too_large")
        long_token = await _send(ws, op="refresh", token="x" * 20_000)
        assert (long_token["op"], long_token["code"]) == ("error", "bad_request")
        assert await _send(ws, op="ping") == {"op": "pong"}

    bearer = {"Authorization": f"Bearer {token}"}
    many = ",".join(f"account:s{n}" for n in range(MAX_SUBSCRIPTIONS + 1))
    async with http.get(f"{gateway.http}/sse", params={"channels": many}, headers=bearer) as resp:
        assert resp.status == 400
    history = f"{gateway.http}/v1/channels/payments/history"
    for limit in ("0", "1001", "-1", "1e3", "x"):
        async with http.get(history, params={"limit": limit}, headers=bearer) as resp:
            assert resp.status == 400, limit
    assert gateway.process.proc.poll() is None


async def test_oversized_headers_and_urls_are_refused_and_ingest_carries_on(
    topology: TopologyOutputs, service_process: Any
) -> None:
    port = free_port()
    ingest = service_process("ingest", PULSE_HTTP_PORT=str(port)).start(wait_port=port)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        for headers, path in (
            ({"X-Big": "x" * 64 * 1024}, "/healthz"),
            ({f"X-H{n}": "v" for n in range(500)}, "/healthz"),
            ({"Idempotency-Key": "k" * 20_000}, "/v1/payments"),
            ({}, "/v1/payments/" + "a" * 64 * 1024),
        ):
            try:
                async with http.get(base + path, headers=headers) as resp:
                    status = resp.status
            except aiohttp.ClientError:
                status = 0  # the server may also just drop such a request
            assert status in {0, 400, 404, 413, 414, 431}, (path[:40], status)
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
    assert ingest.stop() == 0
    # The client's bytes were at fault: no error line, no traceback for anyone to be paged by.
    lines = [orjson.loads(line) for line in ingest.logs().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line.get("level") in ("error", "critical")]
    assert any(str(line.get("event", "")).startswith("bad request refused") for line in lines)

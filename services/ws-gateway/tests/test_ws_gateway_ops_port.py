"""``PULSE_OPS_PORT``: the gateway as a real process with its metrics on an internal port.

The chart exposes 8090 through the Service and the Ingress, and 9090 only to Prometheus and the
kubelet. With an ops port set, ``/metrics`` is there and not on the public port; ``/healthz``
and ``/readyz`` answer on both; WebSockets are served on the public port only.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import aiohttp
import orjson

from pulse.auth import issue_token
from pulse_dev.testing import ServiceProcess, free_port

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "ops-port-test-secret-0123456789abcdef"


async def _status(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.text()


async def test_gateway_metrics_only_on_the_ops_port_websockets_only_on_the_public_one(
    redis_url: str, tmp_path: Path
) -> None:
    api_port, ops_port = free_port(), free_port()
    env = {
        "REDIS_URL": redis_url,
        "PULSE_REDIS_PREFIX": f"pulse:ops{uuid.uuid4().hex[:8]}:",
        "PULSE_HTTP_PORT": str(api_port),
        "PULSE_OPS_PORT": str(ops_port),
        "PULSE_JWT_SECRET": SECRET,
    }
    proc = ServiceProcess("ws_gateway", env, tmp_path / "ws_gateway.log").start(wait_port=api_port)
    api, ops = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ops_port}"
    token = issue_token(SECRET, sub="ops-user", roles=["ops"], ttl_seconds=60)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            async with http.ws_connect(f"{api}/ws?token={token}") as ws:
                await ws.send_str(orjson.dumps({"op": "ping"}).decode())
                assert orjson.loads((await ws.receive()).data)["op"] == "pong"

                status, text = await _status(http, f"{ops}/metrics")
                assert status == 200
                assert "pulse_ws_connections 1.0" in text

            status, text = await _status(http, f"{api}/metrics")
            assert status == 404
            assert "pulse_" not in text
            for base in (api, ops):
                assert (await _status(http, f"{base}/healthz"))[0] == 200
                status, text = await _status(http, f"{base}/readyz")
                assert status == 200, text
            assert (await _status(http, f"{ops}/ws?token={token}"))[0] == 404
        assert proc.stop() == 0
    finally:
        proc.kill()

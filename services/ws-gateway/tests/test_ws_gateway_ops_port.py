"""``PULSE_OPS_PORT``: the gateway as a real process with its metrics on an internal port.

The chart exposes 8090 through the Service and the Ingress, and 9090 only to Prometheus and the
kubelet. With an ops port set, ``/metrics`` is there and not on the public port; ``/healthz``
and ``/readyz`` answer on both; WebSockets are served on the public port only.
"""

from __future__ import annotations

import aiohttp
import orjson

from pulse_dev.testing import GatewayFactory, free_port


async def _status(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.text()


async def test_gateway_metrics_only_on_the_ops_port_websockets_only_on_the_public_one(
    gateways: GatewayFactory,
) -> None:
    ops_port = free_port()
    gateway = gateways.start(PULSE_OPS_PORT=str(ops_port))
    api, ops = gateway.http, f"http://127.0.0.1:{ops_port}"
    token = gateway.token("ops-user", ["ops"], ttl=60)
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
        assert gateway.process.stop() == 0
    finally:
        gateway.kill()

"""``PULSE_OPS_PORT``: the gateway as a real process with its metrics on an internal port.

The chart exposes 8090 through the Service and the Ingress, and 9090 only to Prometheus and the
kubelet. With an ops port set, ``/metrics`` is there and not on the public port; ``/healthz``
and ``/readyz`` answer on both; WebSockets are served on the public port only.
"""

from __future__ import annotations

import aiohttp
import orjson

from pulse_dev.testing import (
    GatewayFactory,
    assert_metrics_on_ops_port_only,
    free_port,
    status_and_text,
)


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

                metrics = await assert_metrics_on_ops_port_only(http, api, ops)
                assert "pulse_ws_connections 1.0" in metrics

            assert (await status_and_text(http, f"{ops}/ws?token={token}"))[0] == 404
        assert gateway.process.stop() == 0
    finally:
        gateway.kill()

"""``PULSE_OPS_PORT``: ingest as a real process with its metrics on an internal port.

In a cluster the public port is reachable through the Service and the Ingress; the ops port
only by Prometheus and the kubelet (the chart's NetworkPolicy). So with an ops port set,
``/metrics`` must be there and not on the public port, while ``/healthz`` and ``/readyz``
answer on both (load balancers probe the public one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pulse.auth import issue_token
from pulse.settings import DEV_JWT_SECRET
from pulse.topology import TopologyOutputs
from pulse_dev.testing import assert_metrics_on_ops_port_only, free_port, status_and_text

BODY = {"account_id": "acct-ops", "amount": "3.00", "currency": "EUR", "merchant_id": "m-1"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def test_metrics_only_on_the_ops_port_health_on_both(
    topology: TopologyOutputs, service_process: Any, http: aiohttp.ClientSession
) -> None:
    api_port, ops_port = free_port(), free_port()
    proc = service_process(
        "ingest", PULSE_HTTP_PORT=str(api_port), PULSE_OPS_PORT=str(ops_port)
    ).start(wait_port=api_port)
    api, ops = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ops_port}"

    token = issue_token(DEV_JWT_SECRET, sub="acct-ops")
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{api}/v1/payments", json=BODY, headers=headers) as resp:
        assert resp.status == 201, await resp.text()

    metrics = await assert_metrics_on_ops_port_only(http, api, ops)
    assert 'pulse_payments_created_total{outcome="created"} 1.0' in metrics
    assert "pulse_build_info" in metrics

    # the API itself is not on the ops port
    async with http.post(f"{ops}/v1/payments", json=BODY) as resp:
        assert resp.status == 404
    assert proc.stop() == 0


async def test_an_ops_port_equal_to_the_api_port_keeps_one_port(
    topology: TopologyOutputs, service_process: Any, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    proc = service_process("ingest", PULSE_HTTP_PORT=str(port), PULSE_OPS_PORT=str(port)).start(
        wait_port=port
    )
    status, text = await status_and_text(http, f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert "pulse_build_info" in text
    assert proc.stop() == 0

"""Ingest throughput through the API vs. a bare PutItem loop against the same emulator."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import apply_topology
from pulse_dev.emulators import AWS_TEST_CREDENTIALS, free_port, start_moto, stop_process
from pulse_dev.load import random_payment, random_payment_item
from pulse_dev.testing import ServiceProcess

CONCURRENCY = 16
REQUESTS = 400
ROUNDS = 6


def _bare_put_loop(settings: PulseSettings, n: int) -> float:
    """Conditional PutItems of payment-shaped items with CONCURRENCY threads; ops/s."""
    ddb = aws_client("dynamodb", settings, max_pool=CONCURRENCY * 2)
    table = settings.names.payments_table

    def put(_: int) -> None:
        item = random_payment_item()
        ddb.put_item(
            TableName=table, Item=item, ConditionExpression="attribute_not_exists(payment_id)"
        )

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(put, range(n)))
    return n / (time.perf_counter() - start)


async def _api_loop(url: str, n: int) -> float:
    """POST /v1/payments with CONCURRENCY concurrent clients; requests/s (all must be 201)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            queue.get_nowait()
            async with session.post(url, json=random_payment()) as resp:
                await resp.read()
                failures += resp.status != 201

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return n / elapsed


def bench_ingest() -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    port = free_port()
    moto = start_moto(port, work / "moto.log")
    env = {
        **AWS_TEST_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "PULSE_RESOURCE_PREFIX": "bench-",
        "PULSE_LOG_LEVEL": "warning",
    }
    os.environ.update(env)
    settings = PulseSettings()
    apply_topology(settings)
    http_port = free_port()
    ingest = ServiceProcess(
        "ingest", {**env, "PULSE_HTTP_PORT": str(http_port)}, work / "ingest.log"
    ).start(wait_port=http_port)
    url = f"http://127.0.0.1:{http_port}/v1/payments"
    print(
        f"setup: moto server, ingest process, {CONCURRENCY} concurrent clients, "
        f"{REQUESTS} requests per round, {ROUNDS} rounds of both loops (order alternating); "
        "ratio = median of the per-round ratios, so drift in the emulator cancels out"
    )
    try:
        _bare_put_loop(settings, 50)  # warm-up both paths
        asyncio.run(_api_loop(url, 50))
        bare, api = [], []
        for round_no in range(ROUNDS):
            if round_no % 2:
                api.append(asyncio.run(_api_loop(url, REQUESTS)))
                bare.append(_bare_put_loop(settings, REQUESTS))
            else:
                bare.append(_bare_put_loop(settings, REQUESTS))
                api.append(asyncio.run(_api_loop(url, REQUESTS)))
    finally:
        ingest.stop()
        stop_process(moto)
    print(f"bare PutItem: {', '.join(f'{b:.0f}' for b in bare)} ops/s")
    print(f"ingest API:   {', '.join(f'{a:.0f}' for a in api)} req/s")
    figures = {
        "ingest.api_rps": statistics.median(api),
        "ingest.putitem_rps": statistics.median(bare),
        "ingest.ratio": statistics.median(a / b for a, b in zip(api, bare, strict=True)),
    }
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    return figures

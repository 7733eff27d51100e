"""Garbage-collection pauses of a ws-gateway whose clients come and go:
``python bench/gateway_churn.py [--held N] [--per-second R] [--seconds S]``.

Two runs of one gateway process, first with CPython's collector as it comes
(``PULSE_GC_FREEZE_INTERVAL_SECONDS=0``), then with the gateway's default (connections
frozen out of full collections every second). Each run opens N connections (default
10,000) subscribed to ``stats`` with the websockets client, then every second closes R of
them (default 100) at random and opens as many, for S seconds (default 60). Printed from
the gateway's own ``pulse_gc_pause_seconds`` over the churn: full collections and the time
they took, the pauses over 25 ms (each one stalls every client), the Python heap, RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench_gateway import LONG_PAUSE_S, GcPauses, _rss_kb, gateway_env
from pulse.auth import issue_token
from pulse.channels import STATS
from pulse.settings import DEV_JWT_SECRET
from pulse_dev.emulators import free_port, local_redis, stop_process
from pulse_dev.testing import ServiceProcess
from service_metrics import read_metrics, sample

USERS = 50  # tokens the connections share (the gateway caches verified tokens)
OPEN_AT_ONCE = 100


@dataclass
class Churned:
    """What one run's gateway reported over the churn."""

    replaced: int
    full: float
    full_ms: float
    long: float
    blocks: float
    sweeps: float
    rss_kb: int


async def _opened(url: str) -> ClientConnection:
    ws = await connect(url, max_queue=None)
    await ws.send(orjson.dumps({"op": "subscribe", "channel": STATS}).decode())
    await ws.recv()
    return ws


async def _churn(port: int, pid: int, args: argparse.Namespace) -> Churned:
    tokens = [
        issue_token(DEV_JWT_SECRET, sub=f"churn-{i}", roles=["ops"], ttl_seconds=3600)
        for i in range(USERS)
    ]

    def url() -> str:
        return f"ws://127.0.0.1:{port}/ws?token={random.choice(tokens)}"

    metrics = f"http://127.0.0.1:{port}/metrics"
    held: list[ClientConnection] = []
    for start in range(0, args.held, OPEN_AT_ONCE):
        batch = min(OPEN_AT_ONCE, args.held - start)
        held += await asyncio.gather(*(_opened(url()) for _ in range(batch)))
    before = read_metrics(metrics)
    replaced = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.seconds:
            tick = time.monotonic()
            picked = random.sample(range(len(held)), min(args.per_second, len(held)))
            await asyncio.gather(*(held[i].close() for i in picked))
            fresh = await asyncio.gather(*(_opened(url()) for _ in picked))
            for i, ws in zip(picked, fresh, strict=True):
                held[i] = ws
            replaced += len(picked)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        after = read_metrics(metrics)
    finally:
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    pauses = GcPauses.between(before, after)
    return Churned(
        replaced=replaced,
        full=pauses.counts["2"],
        full_ms=pauses.ms["2"],
        long=pauses.long,
        blocks=sample(after, "pulse_python_allocated_blocks"),
        sweeps=sample(after, "pulse_gc_full_sweeps_total"),
        rss_kb=_rss_kb(pid),
    )


def _run(interval: str, redis_url: str, work: Path, args: argparse.Namespace) -> Churned:
    port = free_port()
    env = gateway_env(port, f"benchchurn-{uuid.uuid4().hex[:8]}:", redis_url, args.held)
    env["PULSE_GC_FREEZE_INTERVAL_SECONDS"] = interval
    gateway = ServiceProcess("ws_gateway", env, work / f"ws-gateway-{interval}.log")
    gateway.start(wait_port=port)
    try:
        assert gateway.proc is not None
        return asyncio.run(_churn(port, gateway.proc.pid, args))
    finally:
        gateway.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--held", type=int, default=10_000, help="connections held")
    parser.add_argument("--per-second", type=int, default=100, help="replaced every second")
    parser.add_argument("--seconds", type=int, default=60, help="how long the churn lasts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-churn-"))
    redis_url, redis_proc = local_redis(work)
    try:
        runs = {interval: _run(interval, redis_url, work, args) for interval in ("0", "1")}
    finally:
        if redis_proc is not None:
            stop_process(redis_proc)
    for interval, run in runs.items():
        print(
            f"PULSE_GC_FREEZE_INTERVAL_SECONDS={interval}: {args.held} connections held, "
            f"{run.replaced} replaced in {args.seconds} s: {run.full:.0f} full collections "
            f"({run.full_ms:.0f} ms), {run.long:.0f} pauses over {LONG_PAUSE_S * 1000:.0f} ms; "
            f"Python heap {run.blocks:.0f} blocks, sweeps {run.sweeps:.0f}, RSS {run.rss_kb} kB"
        )
    for interval, name in (("0", "cpython"), ("1", "frozen")):
        print(f"churn.{name}_pauses_over_25ms: {runs[interval].long:.0f}")
        print(f"churn.{name}_full_collection_ms: {runs[interval].full_ms:.0f}")


if __name__ == "__main__":
    main()

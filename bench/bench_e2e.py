"""End-to-end latency: POST -> created / updated at a WebSocket client, at a steady rate."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from pulse.auth import issue_token
from pulse.settings import DEV_JWT_SECRET
from pulse_dev.devstack import DevStackProcess
from pulse_dev.load import AccountTokens, percentile, run_load

RATE = 50.0
DURATION = 20.0
SETTLE = 10.0


async def _measure(stack: DevStackProcess) -> dict[str, float]:
    token = issue_token(DEV_JWT_SECRET, sub="bench", roles=["ops"])
    arrivals: dict[str, dict[str, float]] = {}

    async with connect(f"{stack.gateway_url}?token={token}", max_size=2**22) as ws:
        await ws.send('{"op":"subscribe","channel":"payments"}')
        await ws.recv()

        async def listen() -> None:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("op") != "event":
                    continue
                event = frame["event"]
                pid = event.get("subject")
                arrivals.setdefault(pid, {}).setdefault(event["type"], time.time())

        listener = asyncio.create_task(listen())
        result = await run_load(
            stack.ingest_url,
            tokens=AccountTokens(DEV_JWT_SECRET),
            rate=RATE,
            duration=DURATION,
            seed=1,
            progress=sys.stdout.isatty(),
        )
        deadline = time.monotonic() + SETTLE
        pending = {pid for pid, _ in result.payments}
        while time.monotonic() < deadline and any(
            "pulse.payment.updated" not in arrivals.get(p, {}) for p in pending
        ):
            await asyncio.sleep(0.2)
        listener.cancel()

    created, updated, missing = [], [], 0
    for pid, sent_at in result.payments:
        seen = arrivals.get(pid, {})
        if "pulse.payment.created" not in seen or "pulse.payment.updated" not in seen:
            missing += 1
            continue
        created.append((seen["pulse.payment.created"] - sent_at) * 1000)
        updated.append((seen["pulse.payment.updated"] - sent_at) * 1000)
    print(
        f"sent {result.sent}, accepted {len(result.payments)}, "
        f"complete at the client {len(created)}, missing {missing}"
    )
    return {
        "e2e.created_p50_ms": percentile(created, 50),
        "e2e.created_p99_ms": percentile(created, 99),
        "e2e.updated_p50_ms": percentile(updated, 50),
        "e2e.updated_p99_ms": percentile(updated, 99),
        "e2e.missing": float(missing),
    }


def bench_e2e() -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    stack = DevStackProcess(work / "pulse-dev.log", prefix="benche2e-")
    print(
        f"setup: pulse dev (moto, Redis, five services), {RATE:g} payments/s for "
        f"{DURATION:g} s, one ops WebSocket client on `payments`"
    )
    stack.start(extra_args=["--log-level", "warning"])
    try:
        figures = asyncio.run(_measure(stack))
    finally:
        stack.stop()
    for name, value in figures.items():
        print(f"{name}: {value:.1f}")
    return figures

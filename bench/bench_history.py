"""History: what an idle account channel costs Redis, and that nothing of it outlives its
lifetime.

A Redis of its own (no persistence). ACCOUNTS account channels each get EVENTS events of
a payment's life (random payment bodies, as the stream processor appends them), through
:meth:`ChannelPublisher.append_many` with the default ``account`` history size and the
lifetime shortened to LIFETIME seconds. Then:

- ``history.redis_bytes_per_idle_account``: the ``MEMORY USAGE`` of every key under the
  channels' hash tags (stream, epoch, once-per-event guards), summed, per account — what
  each account active within its lifetime holds in Redis;
- ``history.keys_left_after_ttl``: once the channels have been idle for their lifetime
  (and a little more), the keys under those tags that ``SCAN`` still finds (goal: 0).

Then recovery from the durable record (:mod:`history_durable`):
``history.durable_recovered_ratio`` (goal 1.0) and ``history.durable_replay_ms_p99`` for a
100-event gap, against a replay of as many events from Redis in the same run.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

import redis.asyncio as aioredis

from history_durable import bench_durable_recovery
from pulse.channels import ChannelAppend, ChannelPublisher
from pulse.events import PAYMENT_CREATED, new_event
from pulse.history_limits import DEFAULT_LIMITS, HistoryLimit, HistoryLimits
from pulse_dev.emulators import free_port, start_redis, wait_for_port
from pulse_dev.load import random_payment

ACCOUNTS: Final = 1_000
EVENTS: Final = 4  # per account: two payments, each created and updated
LIFETIME: Final = 2  # seconds (the default is a day)
BATCH: Final = 500
LIMITS: Final = HistoryLimits(
    account=HistoryLimit(size=DEFAULT_LIMITS["account"].size, ttl_seconds=LIFETIME)
)


def _appends(prefix: str, rng: random.Random) -> list[ChannelAppend]:
    appends = []
    for n in range(ACCOUNTS * EVENTS):
        body = random_payment(rng)
        event = new_event(
            type=PAYMENT_CREATED,
            source="/bench",
            data={**body, "payment_id": f"p{n // 2}", "status": "PENDING"},
        )
        appends.append(ChannelAppend(event, [f"account:{prefix}{n % ACCOUNTS}"]))
    return appends


async def _keys(client: aioredis.Redis, pattern: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=pattern, count=1000)]


async def _measure(url: str) -> dict[str, float]:
    client = aioredis.Redis.from_url(url)
    publisher = ChannelPublisher(client, "pulse:", history=LIMITS)
    accounts = f"a{uuid.uuid4().hex[:6]}-"
    pattern = f"{publisher.keys.prefix}{{ch:account:{accounts}*"  # every account's keys
    try:
        appends = _appends(accounts, random.Random(7))
        start = time.monotonic()
        for i in range(0, len(appends), BATCH):
            await publisher.append_many(appends[i : i + BATCH])
        written = await _keys(client, pattern)
        sizes = [await client.memory_usage(key, samples=0) or 0 for key in written]
        # Idle from the last append on: wait out the lifetime, and a little more.
        await asyncio.sleep(max(0.0, start + LIFETIME + 1.0 - time.monotonic()))
        left = await _keys(client, pattern)
    finally:
        await client.aclose()
    print(f"keys written: {len(written)} ({len(written) / ACCOUNTS:.1f} per account)")
    return {
        "history.redis_bytes_per_idle_account": sum(sizes) / ACCOUNTS,
        "history.keys_left_after_ttl": len(left),
    }


def bench_history() -> dict[str, float]:
    print(
        f"setup: a Redis of its own; {ACCOUNTS} account channels x {EVENTS} payment events "
        f"(append_many batches of {BATCH}), account history size "
        f"{DEFAULT_LIMITS['account'].size}, lifetime shortened to {LIFETIME} s "
        f"(default {DEFAULT_LIMITS['account'].ttl_seconds} s); MEMORY USAGE of every key "
        "under the channels' tags, then SCAN after the lifetime"
    )
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-history-"))
    port = free_port()
    redis_proc = start_redis(port, work)
    try:
        wait_for_port(port)
        figures = asyncio.run(_measure(f"redis://127.0.0.1:{port}/0"))
    finally:
        redis_proc.terminate()
        redis_proc.wait()
    figures.update(bench_durable_recovery())
    for name, value in figures.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    return figures

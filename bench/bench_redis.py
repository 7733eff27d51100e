"""Redis: what WAIT costs channel appends, on a master with one replica.

A master and its replica (the data nodes of :func:`pulse_dev.redis_servers.start_sentinel_group`,
on this machine: replication costs a loopback round trip, not a network's). Two paths:

- batch: :meth:`ChannelPublisher.append_many` of BATCH payment events, each to ``payments``
  and its account's channel with the stream processor's counter increments — a script call
  per channel and one for the counters, one pipeline per batch, ended by ``WAIT 1`` when
  asked (the stream processor's hot path);
- single: one :meth:`ChannelPublisher.append` at a time to an account channel (the
  notify and fraud workers' path), each its own round trip and ``WAIT``.

ROUNDS rounds of each path with WAIT 0 and WAIT 1, the order alternating from round to
round; each ratio is the median of the per-round ratios (a slow spell of the shared machine
hits both sides of a round).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Final

import redis.asyncio as aioredis

from pulse.channels import ChannelAppend, ChannelPublisher
from pulse.events import PAYMENT_CREATED, new_event
from pulse.replication import Replication
from pulse_dev.load import random_payment
from pulse_dev.redis_servers import start_sentinel_group
from stream_processor.stats import StatsKeys, counter_increments

BATCH: Final = 100
BATCHES: Final = 20  # per round and setting: 2,000 events
SINGLES: Final = 2_000
ROUNDS: Final = 7
PREFIX: Final = "pulse:bench-redis:"


def _appends(rng: random.Random, count: int) -> list[ChannelAppend]:
    keys = StatsKeys(PREFIX)
    appends = []
    for _ in range(count):
        body = random_payment(rng)
        event = new_event(
            type=PAYMENT_CREATED,
            source="/bench",
            data={**body, "payment_id": f"p{rng.getrandbits(48)}", "status": "PENDING"},
        )
        channels = ["payments", f"account:{body['account_id']}"]
        appends.append(ChannelAppend(event, channels, counters=counter_increments(event, keys)))
    return appends


async def _batch_rate(publisher: ChannelPublisher, rng: random.Random) -> float:
    batches = [_appends(rng, BATCH) for _ in range(BATCHES)]
    start = time.perf_counter()
    for batch in batches:
        await publisher.append_many(batch)
    return BATCH * BATCHES / (time.perf_counter() - start)


async def _single_rate(publisher: ChannelPublisher, rng: random.Random) -> float:
    appends = _appends(rng, SINGLES)
    start = time.perf_counter()
    for append in appends:
        await publisher.append(append.event, append.channels[1:])
    return SINGLES / (time.perf_counter() - start)


async def _measure(url: str) -> dict[str, float]:
    client = aioredis.Redis.from_url(url)
    publishers = {
        replicas: ChannelPublisher(client, PREFIX, replication=Replication(replicas, 1000))
        for replicas in (0, 1)
    }
    rng = random.Random(7)
    rates: dict[tuple[str, int], list[float]] = {}
    try:
        await _batch_rate(publishers[0], rng)  # warm up: scripts loaded, streams created
        for round_ in range(ROUNDS):
            order = (0, 1) if round_ % 2 == 0 else (1, 0)
            for replicas in order:
                publisher = publishers[replicas]
                rates.setdefault(("batch", replicas), []).append(await _batch_rate(publisher, rng))
                rates.setdefault(("single", replicas), []).append(
                    await _single_rate(publisher, rng)
                )
    finally:
        await client.aclose()
    figures: dict[str, float] = {}
    for path in ("batch", "single"):
        wait0, wait1 = rates[path, 0], rates[path, 1]
        figures[f"redis.{path}_appends_per_s_wait0"] = statistics.median(wait0)
        figures[f"redis.{path}_appends_per_s_wait1"] = statistics.median(wait1)
        figures[f"redis.{path}_wait1_ratio"] = statistics.median(
            one / zero for zero, one in zip(wait0, wait1, strict=True)
        )
    return figures


def bench_redis() -> dict[str, float]:
    print(
        f"setup: Redis master + 1 replica on loopback; batch: {BATCHES} x append_many({BATCH}) "
        f"(payments + account channel + counters); single: {SINGLES} "
        f"sequential appends to one account channel; WAIT 0 vs WAIT 1 (1000 ms), {ROUNDS} "
        "alternating rounds, medians"
    )
    group = start_sentinel_group(Path(tempfile.mkdtemp(prefix="pulse-bench-redis-")), sentinels=1)
    try:
        figures = asyncio.run(_measure(group.master().url))
    finally:
        group.stop()
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    return figures

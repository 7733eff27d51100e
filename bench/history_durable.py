"""History, durable part: subscribers whose offsets predate their account channel's Redis
history, recovered from the audit table by a real gateway.

A Redis of its own, the AWS emulator with Pulse's topology, one ws-gateway process.
SUBSCRIBERS account channels each get 1 + GAP payment events through the stream
processor's own effects (:class:`stream_processor.effects.BatchEffects`: the Redis append,
then SNS and the audit row with its channel position). Each subscriber holds the offset of
its channel's first event; then its Redis history goes, a third each way: trimmed to
nothing (``XTRIM MAXLEN 0``), expired (the account lifetime shortened to LIFETIME s, left
idle past it), or lost (every key of the channel deleted, as when Redis comes back empty).
The new epochs are made and left to settle (``PULSE_DURABLE_SETTLE_SECONDS``=SETTLE) before
anyone subscribes. Then one at a time each subscribes with its offset and epoch:

- ``history.durable_recovered_ratio``: those that get ``recovered:true`` and the GAP events
  after their offset, every one, once, in order (goal 1.0);
- ``history.durable_replay_ms_p99``: from sending ``subscribe`` to the GAP-th event read;
- baseline in the same run: ``history.redis_replay_ms_p99``, the same GAP events replayed
  from an intact Redis history (BASELINE channels), and the ratio of the two p99s.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from pulse.auth import issue_token
from pulse.channels import ChannelKeys, ChannelPosition, ChannelPublisher, channel_epoch
from pulse.clients import aws_client
from pulse.events import PAYMENT_CREATED, new_event
from pulse.history_limits import HistoryLimit, HistoryLimits
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse.topology_apply import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    free_port,
    start_moto,
    start_redis,
    stop_process,
    wait_for_port,
)
from pulse_dev.load import percentile
from pulse_dev.testing import ServiceProcess
from service_metrics import read_metrics, sample
from stream_processor.effects import AuditTrail, BatchEffects, ProcessedEvent, TopicPublisher

SUBSCRIBERS: Final = 60
BASELINE: Final = 20
GAP: Final = 100
LIFETIME: Final = 2
SETTLE: Final = 1.0
KINDS: Final = ("trimmed", "expired", "lost")
KEPT: Final = 3600  # the lifetime of the other channels' histories
SHORT: Final = HistoryLimits(account=HistoryLimit(size=1000, ttl_seconds=LIFETIME))
LONG: Final = HistoryLimits(account=HistoryLimit(size=1000, ttl_seconds=KEPT))
_sequence = iter(range(10**6, 10**9))


class Channel:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.account = f"bench-{uuid.uuid4().hex[:10]}"
        self.name = f"account:{self.account}"
        self.since: ChannelPosition | None = None
        self.ids: list[str] = []  # the GAP events after ``since``

    async def fill(self, effects: BatchEffects) -> None:
        processed = [
            ProcessedEvent(
                new_event(
                    type=PAYMENT_CREATED,
                    source="/bench",
                    subject=f"pay_{uuid.uuid4().hex}",
                    data={"account_id": self.account, "amount": "1.00", "n": n},
                ),
                sequence_number=str(next(_sequence)),
                event_name="INSERT",
            )
            for n in range(1 + GAP)
        ]
        await effects.apply(processed)
        self.since = processed[0].channel_positions[self.name]
        self.ids = [p.event.id for p in processed[1:]]


async def _forget(redis: aioredis.Redis, keys: ChannelKeys, channel: Channel) -> None:
    if channel.kind == "trimmed":
        await redis.xtrim(keys.history(channel.name), maxlen=0, approximate=False)
    elif channel.kind == "lost":
        async for key in redis.scan_iter(match=f"{keys.tag(channel.name)}*"):
            await redis.delete(key)


async def _subscribe(url: str, channel: Channel) -> tuple[bool, float]:
    """Whether ``channel``'s subscriber got every event after its offset, once, in order,
    with ``recovered:true``; and how long from ``subscribe`` to the last one (ms)."""
    assert channel.since is not None
    token = issue_token(DEV_JWT_SECRET, sub=channel.account, ttl_seconds=600)
    async with connect(f"{url}?token={token}", max_size=None) as ws:
        start = time.perf_counter()
        await ws.send(
            orjson.dumps(
                {
                    "op": "subscribe",
                    "channel": channel.name,
                    "since": channel.since.offset,
                    "epoch": channel.since.epoch,
                }
            ).decode()
        )
        subscribed = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        ids: list[str] = []
        while len(ids) < GAP:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame.get("op") == "event":
                ids.append(frame["event"]["id"])
        elapsed = (time.perf_counter() - start) * 1000
    return bool(subscribed.get("recovered")) and ids == channel.ids, elapsed


async def _measure(env: dict[str, str], gateway_url: str, metrics_url: str) -> dict[str, float]:
    settings = PulseSettings()  # from the environment set by the caller
    topology = apply_topology(settings)
    redis = aioredis.Redis.from_url(env["REDIS_URL"])
    topic = TopicPublisher(aws_client("sns", settings), topology.topic_arn)
    audit = AuditTrail(aws_client("dynamodb", settings), settings.names.events_table, ttl_days=1)
    prefix = env["PULSE_REDIS_PREFIX"]
    effects = {
        lifetime: BatchEffects(topic, ChannelPublisher(redis, prefix, history=limits), audit)
        for lifetime, limits in ((LIFETIME, SHORT), (KEPT, LONG))
    }
    keys = ChannelKeys(prefix)
    try:
        channels = [Channel(KINDS[i % len(KINDS)]) for i in range(SUBSCRIBERS)]
        baseline = [Channel("intact") for _ in range(BASELINE)]
        for channel in channels + baseline:
            await channel.fill(effects[LIFETIME if channel.kind == "expired" else KEPT])
        started = time.monotonic()
        for channel in channels:
            await _forget(redis, keys, channel)
        # Expired: idle past the lifetime (and a little more) — the baseline is read first.
        redis_ms = [(await _subscribe(gateway_url, channel))[1] for channel in baseline]
        await asyncio.sleep(max(0.0, started + LIFETIME + 1.0 - time.monotonic()))
        for channel in channels:  # the new epochs, as the next event or reader makes them
            await channel_epoch(redis, keys, channel.name, ttl_seconds=KEPT)
        await asyncio.sleep(SETTLE + 0.5)
        results = [await _subscribe(gateway_url, channel) for channel in channels]
    finally:
        await redis.aclose()
    reading = read_metrics(metrics_url)
    reads = sample(reading, "pulse_ws_durable_read_duration_seconds_count")
    read_s = sample(reading, "pulse_ws_durable_read_duration_seconds_sum")
    print(
        f"audit table reads: {reads:.0f}, mean {read_s / reads * 1000 if reads else 0:.1f} ms "
        "(the emulator's Query looks at every row of the table)"
    )
    durable_p99 = percentile([ms for _, ms in results], 99)
    redis_p99 = percentile(redis_ms, 99)
    by_kind = {
        kind: sum(ok for (ok, _), c in zip(results, channels, strict=True) if c.kind == kind)
        for kind in KINDS
    }
    print(f"recovered by kind: {by_kind} (of {SUBSCRIBERS // len(KINDS)} each)")
    print(
        f"durable replay ms p50 {percentile([ms for _, ms in results], 50):.1f}, "
        f"redis replay ms p50 {percentile(redis_ms, 50):.1f}"
    )
    return {
        "history.durable_recovered_ratio": sum(ok for ok, _ in results) / len(results),
        "history.durable_replay_ms_p99": durable_p99,
        "history.redis_replay_ms_p99": redis_p99,
        "history.durable_vs_redis_replay_ratio": durable_p99 / redis_p99 if redis_p99 else 0.0,
    }


def bench_durable_recovery() -> dict[str, float]:
    print(
        f"setup: a Redis of its own, the AWS emulator, one ws-gateway; {SUBSCRIBERS} account "
        f"channels x {1 + GAP} payment events through the stream processor's effects, each "
        f"subscriber holding the first event's offset; its Redis history then trimmed, "
        f"expired (lifetime {LIFETIME} s) or lost, a third each, the new epochs settled "
        f"({SETTLE} s); one subscribe at a time, timed from subscribe to the {GAP}th event; "
        f"baseline: {BASELINE} channels replaying {GAP} events from an intact Redis history",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-durable-"))
    redis_port, moto_port, port = free_port(), free_port(), free_port()
    redis_proc = start_redis(redis_port, work)
    moto = start_moto(moto_port, work / "moto.log")
    env = {
        **AWS_TEST_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "PULSE_RESOURCE_PREFIX": f"bench{uuid.uuid4().hex[:6]}-",
        "PULSE_REDIS_PREFIX": "pulse:",
        "PULSE_HISTORY": orjson.dumps({"account": {"size": 1000, "ttl_seconds": KEPT}}).decode(),
        "PULSE_DURABLE_SETTLE_SECONDS": str(SETTLE),
        "PULSE_HTTP_PORT": str(port),
        "PULSE_HTTP_HOST": "127.0.0.1",
        "PULSE_LOG_LEVEL": "warning",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    gateway = ServiceProcess("ws_gateway", env, work / "ws-gateway.log")
    try:
        wait_for_port(redis_port)
        wait_for_port(moto_port)
        gateway.start(wait_port=port)
        return asyncio.run(
            _measure(env, f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}/metrics")
        )
    finally:
        gateway.kill()
        stop_process(moto)
        redis_proc.terminate()
        redis_proc.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

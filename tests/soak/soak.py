"""The soak (``make soak``, ``SOAK_MINUTES`` minutes, 30 by default): steady traffic for a
long time, then two questions — did any service's memory keep growing, and did any event
go missing?

Setup: one process per service (the chaos suite's harness: real moto, real Redis, every
service its own process), 20 payments/s through ingest, a webhook endpoint per account,
and WebSocket clients: an ops client on ``payments`` and ``alerts`` and one client per
account that each leave now and then and come back with ``since``/``epoch``, plus a churn
of short-lived clients (one every half second, subscribed 2 to 10 s, then gone).

Memory: every service process's RSS (``VmRSS``) is sampled every 10 s. After a warm-up
(a fifth of the run, at most 5 minutes) a least-squares line gives the growth in KiB per
hour. A service grows without bound when both the whole window's slope and its second
half's slope exceed the threshold (default 20 MiB/h: about 300 bytes kept per payment at
20/s) and it grew by more than 4 MiB in the window (less is allocator noise, so a short
run cannot fail on slope alone). A process that only warms up (caches filling, pools
growing) flattens in the second half and passes. The emulator's and Redis's memory is
reported beside, not judged, with Redis's keys by kind: what Pulse keeps there per event.

Events: after the traffic stops the system settles, then every payment must have reached
the steady clients (created, updated, and the account's notification; non-approved
decisions on ``alerts``) and the webhook receiver exactly once; the counters must equal the
payments posted; a random sample of 100 audit trails must hold created and updated once.
Channel histories are bounded (10,000 entries), so they are not checked over a long run.

The last line is ``soak.rss_growth_kb_per_h: <the largest service's growth>``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

# The harness lives beside the chaos suite, which shares it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "chaos"))

from harness import (
    Ledger,
    Posted,
    Poster,
    Rig,
    Stack,
    Tally,
    Topology,
    WatchingClient,
    log,
    parse_with_workdir,
    rss_kb,
    running,
    say,
)
from websockets.asyncio.client import connect

from pulse.auth import issue_token
from pulse.settings import DEV_JWT_SECRET

ACCOUNTS = [f"soak-{c}" for c in "abcdef"]
SAMPLE_SECONDS = 10.0
SETTLE_SECONDS = 120.0
AUDIT_SAMPLE = 100
# Growth below this over the whole window is allocator noise, whatever its slope: a run
# must be long enough for a leak to exceed it (at the threshold, 12 minutes after warm-up).
NOISE_KB = 4096


@dataclass
class Samples:
    """RSS samples of one service: (seconds since start, KiB)."""

    points: list[tuple[float, int]] = field(default_factory=list)


def slope_kb_per_h(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of KiB over time, per hour (0 with fewer than 3 points)."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (r - mean_r) for t, r in points)
    return cov / var * 3600


@dataclass
class Growth:
    service: str
    first_kb: int
    last_kb: int
    kb_per_h: float
    second_half_kb_per_h: float

    @property
    def judged(self) -> bool:
        """Pulse's services are; the emulator and Redis (named in brackets) are not."""
        return not self.service.startswith("(")

    def unbounded(self, threshold: float) -> bool:
        return (
            self.judged
            and self.kb_per_h > threshold
            and self.second_half_kb_per_h > threshold
            and self.last_kb - self.first_kb > NOISE_KB
        )


def growth_of(service: str, samples: Samples, warmup_s: float) -> Growth:
    window = [(t, r) for t, r in samples.points if t >= warmup_s]
    half = [(t, r) for t, r in window if t >= (window[0][0] + window[-1][0]) / 2] if window else []
    return Growth(
        service,
        window[0][1] if window else 0,
        window[-1][1] if window else 0,
        slope_kb_per_h(window),
        slope_kb_per_h(half),
    )


async def sample_rss(stack: Stack, samples: dict[str, Samples], stopping: asyncio.Event) -> None:
    """Sample every service's RSS until ``stopping`` (the end of the traffic)."""
    start = time.monotonic()
    while not stopping.is_set():
        now = time.monotonic() - start
        pids = {name: stack.pid(name) for name in stack.replicas} | stack.dependency_pids()
        for name, pid in pids.items():
            kb = rss_kb(pid) if pid is not None else None
            if kb is not None:
                samples.setdefault(name, Samples()).points.append((now, kb))
        with_timeout = asyncio.create_task(stopping.wait())
        await asyncio.wait({with_timeout}, timeout=SAMPLE_SECONDS)
        with_timeout.cancel()


async def wander(client: WatchingClient, stopping: asyncio.Event, rng: random.Random) -> None:
    """Leave every 20 to 60 s and come back (the client's run loop reconnects with since)."""
    while not stopping.is_set():
        await asyncio.sleep(rng.uniform(20, 60))
        await client.leave()


@dataclass
class Churn:
    connections: int = 0
    failures: int = 0


async def churn(gateway: str, stopping: asyncio.Event, rng: random.Random, stats: Churn) -> None:
    """Short-lived clients: connect, subscribe, stay 2 to 10 s, leave; one every 0.5 s."""

    async def visit() -> None:
        account = rng.choice(ACCOUNTS)
        token = issue_token(DEV_JWT_SECRET, sub=account, roles=[], ttl_seconds=600)
        try:
            async with connect(f"{gateway}?token={token}", open_timeout=10) as ws:
                await ws.send(f'{{"op":"subscribe","channel":"account:{account}"}}')
                stats.connections += 1
                async with asyncio.timeout(rng.uniform(2, 10)):
                    async for _ in ws:
                        pass
        except TimeoutError:
            return
        except Exception:
            stats.failures += 1

    visits: set[asyncio.Task[None]] = set()
    while not stopping.is_set():
        task = asyncio.create_task(visit())
        visits.add(task)
        task.add_done_callback(visits.discard)
        await asyncio.sleep(0.5)
    await asyncio.gather(*visits, return_exceptions=True)


async def _counters(ledger: Ledger, expected: int, tally: Tally) -> None:
    reading = await ledger.counters()
    for name, actual in reading.events_off(expected).items():
        tally.expect(f"counter events:{name} ({actual} for {expected})", 0)
    if reading.pending:
        tally.expect(f"counter: {reading.pending} still PENDING", 0)


@dataclass
class SoakReport:
    payments: int
    tally: Tally
    growth: list[Growth]
    churn: Churn
    threshold: float
    refused: dict[str, int]
    shutdown: str
    redis_keys: dict[str, tuple[int, int]]


async def redis_keys_by_kind(stack: Stack) -> dict[str, tuple[int, int]]:
    """Key kind (``applied``, ``idem``, ``ch``, …) → (keys, bytes estimated from a sample
    of 100 keys of the kind with ``MEMORY USAGE``)."""
    redis = stack.redis_client()
    prefix = f"pulse:{stack.prefix}"
    counts: Counter[str] = Counter()
    samples: dict[str, list[bytes]] = defaultdict(list)
    try:
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            kind = key.decode().removeprefix(prefix).split(":", 1)[0]
            counts[kind] += 1
            if len(samples[kind]) < 100:
                samples[kind].append(key)
        sizes = {}
        for kind, keys in samples.items():
            usage = [await redis.memory_usage(k) or 0 for k in keys]
            sizes[kind] = round(sum(usage) / len(usage) * counts[kind])
    finally:
        await redis.aclose()
    return {kind: (counts[kind], sizes[kind]) for kind in sorted(counts)}


async def _verify(rig: Rig, payments: list[Posted], rng: random.Random) -> Tally:
    """Wait for the system to settle, then every sink's deliveries (module doc)."""
    ledger = Ledger(rig.stack, rig.clients, rig.receiver, check_history=False, audit_concurrency=2)
    deadline = time.monotonic() + SETTLE_SECONDS
    tally = await ledger.check(payments, audit=False)
    while tally.lost and time.monotonic() < deadline:
        await asyncio.sleep(2)
        tally = await ledger.check(payments, audit=False)
    await asyncio.sleep(12)  # later than a visibility timeout: redeliveries show up
    tally = await ledger.check(payments, audit=False)
    audit = await ledger.check(rng.sample(payments, min(AUDIT_SAMPLE, len(payments))))
    tally.lost += audit.lost
    tally.duplicated += audit.duplicated
    tally.missing += [m for m in audit.missing if m.startswith("audit")]
    await _counters(ledger, len(payments), tally)
    for client in rig.clients:
        for channel, _ in client.not_recovered:
            tally.expect(f"{client.name} told recovered:false on {channel}", 0)
    if rig.receiver.bad_signatures:
        tally.expect(f"{rig.receiver.bad_signatures} bad webhook signatures", 0)
    for name in rig.stack.dead():
        tally.expect(f"{name} exited", 0)
    return tally


async def run_soak(
    workdir: Path, *, minutes: float, rate: float, threshold_kb_per_h: float
) -> SoakReport:
    one_each = Topology(stream_processors=1, fraud_workers=1, notify_workers=1, gateways=1)
    stack = Stack(workdir, one_each)
    rng = random.Random(11)
    gateways = stack.gateway_urls
    clients = [
        WatchingClient.ops("ops", gateways),
        *(WatchingClient.owner(account, gateways) for account in ACCOUNTS),
    ]
    samples: dict[str, Samples] = {}
    churn_stats = Churn()
    poster = Poster(stack.ingest_url, ACCOUNTS, random.Random(5))
    traffic_done = asyncio.Event()
    async with running(stack, clients, ACCOUNTS) as rig:
        background = [
            asyncio.create_task(sample_rss(stack, samples, traffic_done)),
            asyncio.create_task(churn(gateways[0], traffic_done, rng, churn_stats)),
            *(asyncio.create_task(wander(c, traffic_done, rng)) for c in clients),
        ]
        try:
            count = round(minutes * 60 * rate)
            log(f"traffic: {count} payments at {rate:g}/s for {minutes:g} min")
            payments = await poster.post(count, rate, "soak")
        finally:
            traffic_done.set()
            await asyncio.gather(*background, return_exceptions=True)
        log(f"traffic done ({len(payments)} accepted); settling")
        tally = await _verify(rig, payments, rng)
        redis_keys = await redis_keys_by_kind(stack)
    warmup = min(minutes * 60 / 5, 300.0)
    growth = [growth_of(name, s, warmup) for name, s in sorted(samples.items())]
    return SoakReport(
        len(payments),
        tally,
        growth,
        churn_stats,
        threshold_kb_per_h,
        dict(poster.refused),
        stack.shutdown_summary(),
        redis_keys,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20.0, help="payments per second")
    parser.add_argument(
        "--threshold-kb-per-h",
        type=float,
        default=20480.0,
        help="growth above this (whole window and second half) fails the run",
    )
    args, workdir = parse_with_workdir(parser, "soak")
    report = asyncio.run(
        run_soak(
            workdir,
            minutes=args.minutes,
            rate=args.rate,
            threshold_kb_per_h=args.threshold_kb_per_h,
        )
    )
    t = report.tally
    say(
        f"\nsoak: {args.minutes:g} min at {args.rate:g} payments/s; {report.payments} payments; "
        f"{report.churn.connections} short-lived connections ({report.churn.failures} failed); "
        f"logs in {workdir}"
    )
    if report.refused:
        say(f"payments ingest refused: {report.refused}")
    say(f"\n{'service':<20} {'rss_kb first':>12} {'last':>8} {'kb_per_h':>9} {'2nd half':>9}")
    worst = 0.0
    unbounded = []
    for g in report.growth:
        verdict = "UNBOUNDED" if g.unbounded(report.threshold) else ""
        if g.unbounded(report.threshold):
            unbounded.append(g.service)
        if g.judged:
            worst = max(worst, g.kb_per_h)
        say(
            f"{g.service:<20} {g.first_kb:>12} {g.last_kb:>8} {g.kb_per_h:>9.0f} "
            f"{g.second_half_kb_per_h:>9.0f} {verdict}"
        )
    say(
        f"threshold: {report.threshold:.0f} KiB/h (whole window and second half); "
        "(bracketed) dependencies are reported, not judged"
    )
    say(report.shutdown)
    say(
        "redis keys by kind (count, ~bytes; per payment): "
        + "; ".join(
            f"{kind} {n} ~{size // 1024} KiB ({size // max(report.payments, 1)} B)"
            for kind, (n, size) in report.redis_keys.items()
        )
    )
    for line in t.missing[:10]:
        say(f"missing: {line}")
    for line in t.extra[:10]:
        say(f"extra: {line}")
    say(f"\nsoak.payments: {report.payments}")
    say(f"soak.lost: {t.lost}")
    say(f"soak.duplicated: {t.duplicated}")
    say(f"soak.webhook_redeliveries: {t.redelivered}")
    say(f"soak.rss_growth_kb_per_h: {worst:.0f}")
    return 1 if t.lost or t.duplicated or unbounded else 0


if __name__ == "__main__":
    sys.exit(main())

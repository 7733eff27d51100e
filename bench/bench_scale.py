"""Scaling out: how Pulse holds up beyond one shard and beyond one Redis.

Each part is a function returning its figures; :func:`bench_scale` runs them in turn.

Stream split (:func:`stream_split`): the AWS emulator's payments stream starts with four
shards; three stream-processor replicas read it while payments are written straight into
the table and moved on through three updates each (rounds of four new payments with a
50 ms breath between them: about 20 payments/s, 85 events/s, on a busy 2-core machine,
where the emulator is what bounds it). Meanwhile shards split five times, one replica is
killed with SIGKILL and a fourth joins (:func:`pulse_dev.split_run.run_through_splits`).
Then every event is looked for in the ``payments`` channel's history and in its account's
channel.

-> scale.shards (shards the stream lists at the end; goal >= 4), scale.split_lost and
   scale.split_duplicated (events missing or doubled in those histories, both channels
   counted; goal 0 and 0), scale.lease_imbalance (the three live replicas' unfinished
   leases, largest minus smallest, once every event arrived; goal <= 1).

Redis modes (:func:`redis_cluster_ratio`, :func:`redis_failover`): the whole stack (one
replica of each service, the chaos suite's harness: an ops client on ``payments``, a
client per account, a webhook receiver) with Redis as one server, then as a 3-master
cluster with a replica each (appends acknowledged once a replica holds them). The same
load in both: PULSE_BENCH_SCALE_PAYMENTS (600) payments posted at 100/s; the figure is
payments ÷ seconds from the first POST until the clients have read every payment's created
and updated events (the ops client on ``payments``, each owner on its account's channel);
then every sink is checked (channel histories, audit trail, counters, webhooks). Then the
chaos suite's round "kill -9 redis master" (200 payments at 20/s, a master killed two
seconds in, its replica promoted) on a cluster and on a sentinel group (two replicas of
each service).

-> scale.cluster_ratio (cluster payments/s ÷ standalone; goal >= 0.8),
   scale.cluster_failover_lost / _duplicated (goal 0 and 0), scale.cluster_failover_s
   (seconds from the kill until every sink has every payment), scale.sentinel_failover_lost
   (goal 0).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from pulse.settings import PulseSettings
from pulse.topology_apply import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    WHOLE_RUN_HISTORY_ENV,
    free_port,
    start_redis,
    stop_process,
)
from pulse_dev.split_run import SplitRunHooks, run_through_splits
from pulse_dev.stream_emulation import running_emulator
from pulse_dev.stream_scaling import (
    StackStream,
    StreamReplicas,
    delivery_report,
)
from pulse_dev.stream_store import StreamShape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "chaos"))
from faults import ACCOUNTS, run_chaos, settle  # the chaos suite's modules
from harness import (
    CREATED,
    UPDATED,
    Ledger,
    Posted,
    Poster,
    Stack,
    Topology,
    WatchingClient,
    running,
)
from redis_modes import RedisMode

if TYPE_CHECKING:
    from collections.abc import Callable

FIRST_SHARDS = 4
STEPS = 3  # updates of each payment after its creation
# PULSE_BENCH_SCALE_SECONDS: how long payments are written while the replicas change.
SECONDS = float(os.environ.get("PULSE_BENCH_SCALE_SECONDS", "30"))
SETTLE = 120.0
THROUGHPUT_PAYMENTS = int(os.environ.get("PULSE_BENCH_SCALE_PAYMENTS", "600"))
THROUGHPUT_RATE = 100.0


def stream_split() -> dict[str, float]:
    """Three replicas through splits, a crash and a join (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-scale-"))
    prefix = f"bsc{uuid.uuid4().hex[:6]}-"
    redis_port = free_port()
    own_redis = start_redis(redis_port, work)  # its own: nothing to clean up afterwards
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    print(
        f"stream split: emulator stream of {FIRST_SHARDS} shards, 3 stream-processor replicas,"
        f" {SECONDS:g} s of payments (created, then {STEPS} updates each), 5 splits, "
        f"a SIGKILL and a new replica; logs in {work}"
    )
    try:
        with running_emulator(work, StreamShape(shards=FIRST_SHARDS)) as endpoint:
            env = {
                **AWS_TEST_CREDENTIALS,
                "AWS_ENDPOINT_URL": endpoint,
                "REDIS_URL": redis_url,
                "PULSE_RESOURCE_PREFIX": prefix,
                "PULSE_REDIS_PREFIX": f"pulse:{prefix}",
                "PULSE_LOG_LEVEL": "info",
                **WHOLE_RUN_HISTORY_ENV,
            }
            os.environ.update(env)
            return _split_run(PulseSettings(), env, work)
    finally:
        stop_process(own_redis)


def _split_run(settings: PulseSettings, env: dict[str, str], work: Path) -> dict[str, float]:
    stream = StackStream(settings, apply_topology(settings), env["REDIS_URL"])
    script, history = stream.script, stream.history

    def write() -> None:
        script.create(4)
        script.advance([p for p, marks in script.marks.items() if len(marks) <= STEPS])
        time.sleep(0.05)

    def delivered() -> bool:
        report = delivery_report(history("payments"), script.marks)
        return report.delivered == report.expected

    hooks = SplitRunHooks(
        write=write,
        split=stream.split,
        shards=lambda: len(stream.shards()),
        leases=stream.leases,
        delivered=delivered,
    )
    replicas = StreamReplicas(env, work)
    load_before = os.getloadavg()[0]
    try:
        outcome = run_through_splits(replicas, hooks, seconds=SECONDS, settle=SETTLE)
        reports = [delivery_report(history("payments"), script.marks)] + [
            delivery_report(history(f"account:{account}"), marks)
            for account, marks in script.by_account().items()
        ]
        stopped = replicas.stop()
    finally:
        replicas.close()
        stream.redis.close()
    events = reports[0].expected
    print(
        f"stream split: {len(script.marks)} payments, {events} events, {outcome.splits} splits;"
        f" all delivered {outcome.drain_seconds:.1f} s after the writes ended, leases "
        f"{outcome.counts} {outcome.balance_seconds:.1f} s later; out of order "
        f"{sum(len(r.out_of_order) for r in reports)}, read before the parent ended "
        f"{len(outcome.violations)}, exit codes {stopped}; load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after"
    )
    return {
        "scale.shards": outcome.shards,
        "scale.split_lost": sum(r.lost for r in reports),
        "scale.split_duplicated": sum(r.duplicated for r in reports),
        "scale.lease_imbalance": outcome.imbalance,
    }


def _at_clients(clients: list[WatchingClient], payments: list[Posted]) -> bool:
    """Whether every payment's created and updated events reached the ops client (on
    ``payments``) and its owner's client (on its account's channel)."""
    for client in clients:
        mine = [
            p
            for p in payments
            if "payments" in client.channels or f"account:{p.account_id}" in client.channels
        ]
        wanted = {(p.payment_id, t) for p in mine for t in (CREATED, UPDATED)}
        if not wanted <= {(s.payment_id, s.type) for s in client.seen}:
            return False
    return True


async def _throughput(mode: RedisMode, work: Path) -> float:
    """Payments per second through the whole stack with Redis in ``mode``: from the first
    POST until the clients have read every payment's created and updated events. Then the
    chaos suite's ledger checks every sink (histories, audit trail, counters, webhooks)."""
    stack = Stack(work / mode, Topology(1, 1, 1, 1), redis_mode=mode)
    clients = [
        WatchingClient.ops("ops", stack.gateway_urls),
        *(WatchingClient.owner(account, stack.gateway_urls) for account in ACCOUNTS),
    ]
    poster = Poster(stack.ingest_url, ACCOUNTS, random.Random(11))
    async with running(stack, clients, ACCOUNTS) as rig:
        started = time.monotonic()
        payments = await poster.post(THROUGHPUT_PAYMENTS, THROUGHPUT_RATE, mode)
        deadline = started + SETTLE
        while not _at_clients(clients, payments) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
        everywhere = await settle(Ledger(stack, clients, rig.receiver), payments, started)
    if everywhere is None or seconds >= SETTLE:
        raise RuntimeError(f"{mode}: the payments never all arrived; logs in {work / mode}")
    rate = len(payments) / seconds
    print(
        f"redis {mode}: {len(payments)} payments read by the clients in {seconds:.1f} s "
        f"({rate:.1f}/s); at every sink after {everywhere:.1f} s"
    )
    return rate


def redis_cluster_ratio() -> dict[str, float]:
    """The same load with one Redis and with a 3-master cluster (module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-redis-"))
    print(
        f"redis modes: {THROUGHPUT_PAYMENTS} payments at {THROUGHPUT_RATE:g}/s through the "
        f"whole stack, standalone Redis then a 3-master cluster; logs in {work}"
    )
    standalone = asyncio.run(_throughput("standalone", work))
    cluster = asyncio.run(_throughput("cluster", work))
    return {"scale.cluster_ratio": round(cluster / standalone, 3)}


def redis_failover() -> dict[str, float]:
    """A master killed under load, in a cluster and in a sentinel group."""
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-failover-"))
    figures: dict[str, float] = {}
    for mode in ("cluster", "sentinel"):
        report = asyncio.run(
            run_chaos(work / mode, only=["kill -9 redis master"], rate=20.0, redis_mode=mode)
        )
        print(f"redis {mode} failover (logs in {work / mode}):\n{report.table()}")
        (round_,) = report.rounds
        figures[f"scale.{mode}_failover_lost"] = report.lost
        if mode == "cluster":
            figures["scale.cluster_failover_duplicated"] = report.duplicated
            figures["scale.cluster_failover_s"] = round(round_.recover_s or float("nan"), 1)
    return figures


# The parts of the group, in the order they run; each returns its own figures.
PARTS: tuple[Callable[[], dict[str, float]], ...] = (
    stream_split,
    redis_cluster_ratio,
    redis_failover,
)


def bench_scale() -> dict[str, float]:
    figures: dict[str, float] = {}
    for part in PARTS:
        figures.update(part())
    for name, value in figures.items():
        print(f"{name}: {value:g}")
    return figures

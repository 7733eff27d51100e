"""The chaos suite (``make chaos``): faults injected, one after another, into a running
Pulse while payments are in flight, then a check that nothing was lost or doubled.

Each round posts 200 payments through ingest (40/s, each with its own Idempotency-Key,
retried until accepted) and, two seconds in, injects one fault:

- kill -9 of the stream processor holding the shard lease (a replacement starts at once,
  as a new worker, while the second replica takes the lease over);
- kill -9 of a fraud worker and of a notify worker (restarted a second later; the other
  replica keeps consuming);
- webhooks mid-schedule: the webhook receiver answers 503 for about ten seconds, so the
  round's deliveries fail and wait on their retry schedule (``WORKER_ENV`` shortens it),
  and meanwhile a notify worker is killed with -9 and restarted; every event must still
  reach the receiver, with one ``webhook-id`` each;
- kill -9 of a gateway process: its clients reconnect to the other gateway with
  ``since``/``epoch`` and must recover; the killed one is restarted;
- with ``--redis-mode cluster`` or ``sentinel``: kill -9 of a Redis master (in a cluster,
  the one serving the ``payments`` channel) while payments flow; its replica is promoted
  and the old master rejoins as a replica. The services acknowledge an append only once a
  replica holds it (``PULSE_REDIS_WAIT_REPLICAS=1``), so nothing acknowledged is lost;
- standalone only: Redis killed and restarted. Redis runs with ``appendonly yes``,
  ``appendfsync always``: the promise "nothing lost" holds for a Redis that keeps its
  data. An empty Redis loses history, counters and guards by definition; the gateway then
  answers ``recovered:false`` with a new epoch (covered by the gateway's own tests), and
  no suite can claim otherwise;
- the AWS emulator frozen for 10 s (SIGSTOP / SIGCONT): an AWS outage. A *restart* of the
  emulator is skipped and printed as such: moto keeps every table, stream and queue in
  memory, so a restart is the loss of the whole account, which no AWS outage is.

After the round, the suite waits until every payment of the round has, exactly once each,
its ``created`` and ``updated`` (decision) events in the channel histories (``payments`` and
the account's channel), on the audit trail (``GET /v1/payments/{id}/events``), at every
subscribed client (the ops clients on ``payments`` and ``alerts``, one client per account on
``account:{id}``, live or recovered), and its notification at the account client and the
webhook receiver (a distinct ``webhook-id`` each; retries of one id are counted apart as
redeliveries, which the Standard Webhooks receiver drops). Counters are checked over all
rounds: created and updated events equal the payments posted, none left PENDING.

"Time to recover" is from the fault to the moment every payment of the round is complete
everywhere. After the last round a quiet period (longer than the visibility timeout) lets
late redeliveries show up, and every round is checked again: the table holds those final
figures. The last lines are ``chaos.lost: N`` and ``chaos.duplicated: N``; any loss or
duplicate makes the exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    Ledger,
    Posted,
    Poster,
    Rig,
    Stack,
    Tally,
    WatchingClient,
    log,
    parse_with_workdir,
    running,
    say,
)
from redis_modes import MODES, RedisMode

ACCOUNTS = [f"chaos-{c}" for c in "abcdef"]
SETTLE_TIMEOUT_SECONDS = 150.0
QUIET_SECONDS = 15.0

Inject = Callable[[Rig], Awaitable[str]]


@dataclass
class Fault:
    name: str
    inject: Inject | None
    skipped: str = ""
    modes: tuple[RedisMode, ...] = MODES  # the Redis modes the fault applies to


@dataclass
class RoundResult:
    fault: str
    payments: list[Posted] = field(default_factory=list)
    recover_s: float | None = None
    note: str = ""
    skipped: str = ""
    tally: Tally = field(default_factory=Tally)


async def _kill_and_restart(stack: Stack, name: str, down_seconds: float) -> str:
    stack.kill(name)
    await asyncio.sleep(down_seconds)
    await stack.start_replica(name)
    return f"killed {name}"


async def _no_fault(_rig: Rig) -> str:
    return ""


async def _kill_stream_processor(rig: Rig) -> str:
    owners = await asyncio.to_thread(rig.stack.lease_owners)
    holders = {owner.rsplit("-", 1)[0] for owner in owners.values()}
    name = min(holders) if holders else "stream-processor-a"
    return await _kill_and_restart(rig.stack, name, 0.5) + " (the lease holder)"


async def _kill_fraud_worker(rig: Rig) -> str:
    return await _kill_and_restart(rig.stack, "fraud-worker-1", 1.0)


async def _kill_notify_worker(rig: Rig) -> str:
    return await _kill_and_restart(rig.stack, "notify-worker-1", 1.0)


async def _kill_notify_worker_mid_schedule(rig: Rig) -> str:
    """The webhook receiver answers 503 while a notify worker is killed and restarted: the
    round's webhooks are mid-schedule (WORKER_ENV's short one) when the worker dies."""
    receiver = rig.receiver
    receiver.failing = True
    started = time.monotonic()
    try:
        await asyncio.sleep(3.0)  # the round's first attempts fail and wait for retries
        note = await _kill_and_restart(rig.stack, "notify-worker-1", 1.0)
        await asyncio.sleep(3.0)
    finally:
        receiver.failing = False
    down = time.monotonic() - started
    return f"{note} mid-schedule: the receiver answered 503 for {down:.0f} s ({receiver.refused}x)"


async def _kill_gateway(rig: Rig) -> str:
    return await _kill_and_restart(rig.stack, "ws-gateway-1", 2.0)


async def _restart_redis(rig: Rig) -> str:
    server = rig.stack.redis.server
    server.kill()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(server.start)
    return "redis-server kill -9, restarted from its AOF"


async def _restart_redis_empty(rig: Rig) -> str:
    server = rig.stack.redis.server
    server.kill()
    await asyncio.to_thread(server.forget)
    await asyncio.to_thread(server.start)
    return "redis-server kill -9, restarted empty"


async def _kill_redis_master(rig: Rig) -> str:
    done = await asyncio.to_thread(rig.stack.redis.kill_master)
    await asyncio.to_thread(rig.stack.redis.heal)
    return done + "; the old master restarted as a replica"


async def _pause_aws(rig: Rig) -> str:
    rig.stack.aws.pause()
    try:
        await asyncio.sleep(10.0)
    finally:
        rig.stack.aws.resume()
    return "moto frozen 10 s"


FAULTS = [
    Fault("none (baseline)", _no_fault),
    Fault("kill -9 stream-processor", _kill_stream_processor),
    Fault("kill -9 fraud-worker", _kill_fraud_worker),
    Fault("kill -9 notify-worker", _kill_notify_worker),
    Fault("webhooks 503 + kill notify", _kill_notify_worker_mid_schedule),
    Fault("kill -9 ws-gateway", _kill_gateway),
    Fault("restart redis (AOF)", _restart_redis, modes=("standalone",)),
    Fault("kill -9 redis master", _kill_redis_master, modes=("cluster", "sentinel")),
    Fault(
        "restart aws-emulator",
        None,
        skipped=(
            "moto keeps all state in memory and cannot snapshot it; a restart loses every "
            "table, stream and queue (no AWS outage does): see 'pause aws-emulator'"
        ),
    ),
    Fault("pause aws-emulator 10s", _pause_aws),
]
# Not a fault Pulse claims to survive: it shows the suite notices loss, and what a client
# is told when Redis comes back without its data (``recovered:false``, a new epoch).
DATA_LOSS = Fault("restart redis empty (no AOF)", _restart_redis_empty)


@dataclass
class ChaosReport:
    rounds: list[RoundResult]
    counters: Tally
    lost: int
    duplicated: int
    workdir: Path
    shutdown: str = ""

    def table(self) -> str:
        head = f"{'fault':<28} {'payments':>8} {'lost':>5} {'duplicated':>10} {'recover_s':>9}"
        lines = [head + "  notes", "-" * (len(head) + 30)]
        for r in self.rounds:
            if r.skipped:
                lines.append(
                    f"{r.fault:<28} {'-':>8} {'-':>5} {'-':>10} {'-':>9}  skipped: {r.skipped}"
                )
                continue
            recover = f"{r.recover_s:.1f}" if r.recover_s is not None else "never"
            notes = [r.note] if r.note else []
            if r.tally.redelivered:
                notes.append(f"{r.tally.redelivered} webhook redeliveries (same id)")
            if r.tally.lost_at:
                notes.append(f"lost at: {dict(r.tally.lost_at.most_common())}")
            notes += [f"missing: {m}" for m in r.tally.missing[:3]]
            notes += [f"extra: {m}" for m in r.tally.extra[:3]]
            lines.append(
                f"{r.fault:<28} {len(r.payments):>8} {r.tally.lost:>5} "
                f"{r.tally.duplicated:>10} {recover:>9}  {'; '.join(notes)}"
            )
        c = self.counters
        lines.append(
            f"{'counters (all rounds)':<28} {sum(len(r.payments) for r in self.rounds):>8} "
            f"{c.lost:>5} {c.duplicated:>10} {'':>9}  {'; '.join(c.missing + c.extra)}"
        )
        return "\n".join(lines)


async def settle(ledger: Ledger, payments: list[Posted], since: float) -> float | None:
    """Seconds from ``since`` until every sink holds every payment's events; None if never."""
    deadline = since + SETTLE_TIMEOUT_SECONDS
    tally = Tally()
    while time.monotonic() < deadline:
        tally = await ledger.check(payments)
        if tally.lost == 0:
            return time.monotonic() - since
        await asyncio.sleep(1.0)
    log(f"not settled: {tally.lost} missing, e.g. {tally.missing[:5]}")
    for line in await ledger.explain(tally.missing):
        log(f"  {line}")
    return None


async def _counters(ledger: Ledger, expected: int) -> Tally:
    reading = await ledger.counters()
    tally = Tally()
    for name, actual in reading.events_off(expected).items():
        if actual < expected:
            tally.lost += expected - actual
            tally.missing.append(f"events:{name} {actual} < {expected}")
        else:
            tally.duplicated += actual - expected
            tally.extra.append(f"events:{name} {actual} > {expected}")
    if reading.pending:
        tally.lost += reading.pending
        tally.missing.append(f"{reading.pending} counted as still PENDING")
    return tally


def _clients(stack: Stack) -> list[WatchingClient]:
    gateways = stack.gateway_urls
    return [
        WatchingClient.ops("ops-1", gateways),
        WatchingClient.ops("ops-2", gateways, first_gateway=1),
        *(
            WatchingClient.owner(account, gateways, first_gateway=i)
            for i, account in enumerate(ACCOUNTS)
        ),
    ]


async def _round(
    fault: Fault, rig: Rig, ledger: Ledger, poster: Poster, *, count: int, rate: float
) -> RoundResult:
    """Post ``count`` payments, inject the fault two seconds in, wait until all settled."""
    result = RoundResult(fault.name, skipped=fault.skipped)
    if fault.inject is None:
        log(f"{fault.name}: skipped ({fault.skipped})")
        return result
    log(f"{fault.name}: posting {count} payments")
    posting = asyncio.create_task(poster.post(count, rate, fault.name))
    await asyncio.sleep(2.0)
    fault_at = time.monotonic()
    reconnects = sum(c.reconnects for c in rig.clients)
    unrecovered = sum(len(c.not_recovered) for c in rig.clients)
    notes = [await fault.inject(rig)]
    result.payments = await posting
    result.recover_s = await settle(ledger, result.payments, fault_at)
    if dead := rig.stack.dead():
        notes.append(f"exited on their own: {', '.join(dead)}")
    if reconnects := sum(c.reconnects for c in rig.clients) - reconnects:
        notes.append(f"{reconnects} clients reconnected")
    if unrecovered := sum(len(c.not_recovered) for c in rig.clients) - unrecovered:
        notes.append(f"{unrecovered} told recovered:false")
    result.note = "; ".join(n for n in notes if n)
    log(f"{fault.name}: recovered in {result.recover_s}s")
    return result


async def _final_check(rig: Rig, ledger: Ledger, rounds: list[RoundResult]) -> Tally:
    """Every round checked again after the quiet period; the counters' tally."""
    log(f"quiet period {QUIET_SECONDS:.0f}s, then the final check of every round")
    await asyncio.sleep(QUIET_SECONDS)
    ledger.forget_audit()
    for result in rounds:
        if not result.payments:
            continue
        result.tally = await ledger.check(result.payments)
        for missing in result.tally.missing:
            if missing.startswith("audit "):
                rows = await asyncio.to_thread(ledger.audit_rows, missing.split()[1])
                log(f"{missing}: events table holds {rows}")
    counters = await _counters(ledger, sum(len(r.payments) for r in rounds))
    not_recovered = [f"{c.name} {ch}" for c in rig.clients for ch, _ in c.not_recovered]
    if not_recovered:
        counters.missing.append(f"recovered:false at {', '.join(not_recovered)}")
    if rig.receiver.bad_signatures:
        counters.missing.append(f"{rig.receiver.bad_signatures} bad webhook signatures")
    return counters


async def run_chaos(
    workdir: Path,
    *,
    payments_per_round: int = 200,
    rate: float = 40.0,
    only: list[str] | None = None,
    data_loss: bool = False,
    redis_mode: RedisMode = "standalone",
) -> ChaosReport:
    """Run every fault of ``redis_mode`` in turn against a fresh stack under ``workdir``
    (whose Redis runs in that mode); the report."""
    stack = Stack(workdir, redis_mode=redis_mode)
    clients = _clients(stack)
    poster = Poster(stack.ingest_url, ACCOUNTS, random.Random(7))
    faults = [
        f for f in FAULTS if redis_mode in f.modes and (not only or any(o in f.name for o in only))
    ]
    if data_loss and redis_mode == "standalone":
        faults.append(DATA_LOSS)
    async with running(stack, clients, ACCOUNTS) as rig:
        ledger = Ledger(stack, clients, rig.receiver)
        rounds = [
            await _round(fault, rig, ledger, poster, count=payments_per_round, rate=rate)
            for fault in faults
        ]
        counters = await _final_check(rig, ledger, rounds)
    lost = sum(r.tally.lost for r in rounds) + counters.lost
    duplicated = sum(r.tally.duplicated for r in rounds) + counters.duplicated
    return ChaosReport(rounds, counters, lost, duplicated, workdir, stack.shutdown_summary())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=200, help="payments per fault")
    parser.add_argument("--rate", type=float, default=40.0, help="payments per second")
    parser.add_argument("--only", action="append", help="run faults whose name contains this")
    parser.add_argument(
        "--redis-mode",
        choices=MODES,
        default="standalone",
        help="run Redis as one server (AOF), a 3-master cluster or a sentinel group; "
        "cluster and sentinel add the fault 'kill -9 redis master'",
    )
    parser.add_argument(
        "--data-loss",
        action="store_true",
        help="also restart Redis empty (expected to fail: shows what loss looks like)",
    )
    args, workdir = parse_with_workdir(parser, "chaos")
    started = time.monotonic()
    report = asyncio.run(
        run_chaos(
            workdir,
            payments_per_round=args.payments,
            rate=args.rate,
            only=args.only,
            data_loss=args.data_loss,
            redis_mode=args.redis_mode,
        )
    )
    say(
        f"\nchaos ({args.redis_mode} Redis): {len(report.rounds)} faults in "
        f"{time.monotonic() - started:.0f}s; logs in {workdir}"
    )
    say("lost / duplicated count deliveries: one event at one sink, missing or extra\n")
    say(report.table())
    say(f"\n{report.shutdown}")
    say(f"\nchaos.lost: {report.lost}")
    say(f"chaos.duplicated: {report.duplicated}")
    return 1 if report.lost or report.duplicated else 0


if __name__ == "__main__":
    sys.exit(main())

"""The run the stream-processor tests and the ``scale`` benchmark share: three replicas read
while payments flow, shards split five times, one replica is killed (SIGKILL) and a fourth
joins; then the wait for every event, and until every open shard is held by a live replica
with the leases balanced (:func:`run_through_splits`), and what went wrong in it
(:func:`split_run_problems`). The caller binds its stream and clients in
:class:`SplitRunHooks`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pulse_dev.stream_scaling import (
    StreamReplicas,
    lease_counts,
    lease_imbalance,
    lineage_violations,
    unread_leases,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["SplitRunHooks", "SplitRunOutcome", "run_through_splits", "split_run_problems"]


@dataclass(frozen=True)
class SplitRunHooks:
    """What a run drives and reads; each a plain call (the caller binds its clients)."""

    write: Callable[[], None]  # one round of writes (payments created, moved on)
    split: Callable[[], None]  # split a shard of the payments stream now
    shards: Callable[[], int]  # shards the stream lists
    leases: Callable[[], list[dict[str, Any]]]  # the lease items
    delivered: Callable[[], bool]  # every expected event is where it should be


@dataclass(frozen=True)
class SplitRunOutcome:
    shards: int  # listed at the end
    splits: int
    counts: dict[str, int]  # unfinished leases per live replica, once balanced (or not)
    imbalance: int
    unread: list[str]  # unfinished shards no live replica holds, at the end
    violations: list[str]  # shards seen read before their parent ended
    delivered: bool
    drain_seconds: float  # from the end of the writes until everything was delivered
    balance_seconds: float  # from then until every shard was held and the leases balanced


def split_run_problems(
    outcome: SplitRunOutcome, *, first_shards: int, workers: Iterable[str]
) -> list[str]:
    """What went wrong in a run of a stream that started with ``first_shards`` shards and
    should end read by ``workers``: nothing, when the list is empty. (The events are the
    caller's to check: it knows which channels hold them.)"""
    problems = []
    if not outcome.delivered:
        problems.append("not every event was delivered before the deadline")
    if outcome.violations:
        problems.append(f"read before their parent ended: {outcome.violations}")
    if outcome.shards != first_shards + 2 * outcome.splits:
        problems.append(f"{outcome.shards} shards listed after {outcome.splits} splits")
    if sorted(outcome.counts) != sorted(workers):
        problems.append(f"leases held by {sorted(outcome.counts)}")
    if outcome.unread:
        problems.append(f"unfinished shards no live replica holds: {outcome.unread}")
    if outcome.imbalance > 1:
        problems.append(f"lease counts more than one apart: {outcome.counts}")
    return problems


def run_through_splits(
    replicas: StreamReplicas, hooks: SplitRunHooks, *, seconds: float, settle: float = 60.0
) -> SplitRunOutcome:
    """Three replicas (``r1``-``r3``, started here) read while ``hooks.write`` runs for
    ``seconds``; meanwhile shards split five times, ``r2`` is killed (SIGKILL) and ``r4``
    joins. Then wait up to ``settle`` seconds for every event, and until every open shard
    (the first ones, plus one per split) is held by a live replica with the leases balanced."""
    violations: set[str] = set()
    first_shards = hooks.shards()
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            hooks.write()

    for worker in ("r1", "r2", "r3"):
        replicas.start(worker)
    writer = threading.Thread(target=write, name="payments", daemon=True)
    started = time.monotonic()
    writer.start()
    plan = [
        (0.1, hooks.split),
        (0.25, hooks.split),
        (0.4, lambda: replicas.kill("r2")),
        (0.55, hooks.split),
        (0.7, lambda: replicas.start("r4")),
        (0.8, hooks.split),
        (0.9, hooks.split),
    ]
    try:
        for at, action in plan:
            _watch(hooks, violations, until=started + at * seconds)
            action()
        _watch(hooks, violations, until=started + seconds)
    finally:
        stop.set()
        writer.join()
    ended = time.monotonic()
    deadline = ended + settle
    delivered = _watch(hooks, violations, until=deadline, done=hooks.delivered)
    drained = time.monotonic()
    splits = sum(1 for _, action in plan if action is hooks.split)
    while True:
        items = hooks.leases()
        counts = lease_counts(items, replicas.live)
        unread = unread_leases(items, replicas.live)
        held = sum(counts.values()) >= first_shards + splits  # a child not yet leased: wait
        balanced = lease_imbalance(counts) <= 1 and held and not unread
        if balanced or time.monotonic() >= deadline:
            break
        _watch(hooks, violations, until=time.monotonic() + 0.5)
    return SplitRunOutcome(
        shards=hooks.shards(),
        splits=splits,
        counts=counts,
        imbalance=lease_imbalance(counts),
        unread=unread,
        violations=sorted(violations),
        delivered=delivered,
        drain_seconds=drained - ended,
        balance_seconds=time.monotonic() - drained,
    )


def _watch(
    hooks: SplitRunHooks,
    violations: set[str],
    *,
    until: float,
    done: Callable[[], bool] | None = None,
) -> bool:
    """Sample the leases for lineage violations until ``until`` or until ``done()``."""
    while True:
        violations.update(lineage_violations(hooks.leases()))
        if done is not None and done():
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.2)

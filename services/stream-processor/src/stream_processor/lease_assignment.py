"""Which shard leases a worker takes: the KCL lease-taking rules. Pure: no I/O, no clock.

Workers never compare clocks. Each one watches every lease's ``leaseCounter``: a holder
bumps it on every renewal, so a counter that has not moved for ``failover_seconds`` (on
the watcher's own monotonic clock) means its holder stopped — the lease has *expired*
and anyone may take it. A lease with no owner (released on shutdown, or never taken) is
free at once.

Balancing: with ``W`` live workers (distinct owners of unexpired leases, plus this one)
and ``L`` leases, each worker's fair share is ``ceil(L / W)``. A worker below its share
takes free and expired leases first; if there are none, it steals one lease from the
most loaded worker, provided that worker holds more than the share — or holds exactly
the share while this one is at least two below it (so two workers never trade one lease
back and forth). One steal per round keeps the moves gradual.

Taking, renewing and stealing are all conditional writes on the observed ``leaseCounter``
(see :mod:`stream_processor.leases`), so two workers racing for one lease cannot both win.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from stream_processor.leases import Lease

__all__ = ["LeaseObservations", "LeasePlan", "Sighting", "plan_leases"]


@dataclass(frozen=True)
class Sighting:
    """A lease's counter and owner as last seen, when the counter last changed, and when
    this worker first saw the lease at all."""

    counter: int
    owner: str | None
    since: float
    first: float


@dataclass
class LeaseObservations:
    """What one worker has seen of every lease's counter over time (its failure detector)."""

    sightings: dict[str, Sighting] = field(default_factory=dict)

    def observe(self, leases: Iterable[Lease], now: float) -> None:
        """Record a scan of the lease table taken at ``now`` (a monotonic time)."""
        seen: dict[str, Sighting] = {}
        for lease in leases:
            before = self.sightings.get(lease.shard_id)
            if before is not None and (before.counter, before.owner) == (
                lease.counter,
                lease.owner,
            ):
                seen[lease.shard_id] = before
            else:
                first = before.first if before is not None else now
                seen[lease.shard_id] = Sighting(lease.counter, lease.owner, now, first)
        self.sightings = seen

    def seen_before(self, shard_id: str, moment: float) -> bool:
        """True if this worker saw ``shard_id``'s lease in a scan taken before ``moment``."""
        sighting = self.sightings.get(shard_id)
        return sighting is not None and sighting.first < moment

    def expired(self, lease: Lease, now: float, failover_seconds: float) -> bool:
        """True if ``lease`` has no owner or its counter stood still for the failover time."""
        if lease.owner is None:
            return True
        sighting = self.sightings.get(lease.shard_id)
        if sighting is None or sighting.counter != lease.counter:
            return False  # first sight of this counter: give its holder the full failover time
        return now - sighting.since >= failover_seconds


@dataclass(frozen=True)
class LeasePlan:
    """Leases to take this round (each with the counter the take is conditional on)."""

    take: list[Lease] = field(default_factory=list)
    steal: Lease | None = None
    fair_share: int = 0
    workers: int = 1


def plan_leases(
    leases: Mapping[str, Lease],
    candidates: Iterable[str],
    *,
    worker_id: str,
    observations: LeaseObservations,
    now: float,
    failover_seconds: float,
) -> LeasePlan:
    """Decide which of the ``candidates`` (shard ids that may be read now) to take.

    ``leases`` is the current scan; shards without a lease item are not considered (their
    item is created first). The result never includes a lease this worker holds already.
    """
    pool = [leases[s] for s in candidates if s in leases]
    if not pool:
        return LeasePlan()
    live = [lease for lease in pool if not observations.expired(lease, now, failover_seconds)]
    held = Counter(lease.owner for lease in live if lease.owner is not None)
    mine = held.get(worker_id, 0)
    workers = len(set(held) | {worker_id})
    share = math.ceil(len(pool) / workers)
    if mine >= share:
        return LeasePlan(fair_share=share, workers=workers)
    live_ids = {lease.shard_id for lease in live}
    free = sorted(
        (lease for lease in pool if lease.shard_id not in live_ids and lease.owner != worker_id),
        key=lambda lease: lease.shard_id,
    )
    if free:
        return LeasePlan(take=free[: share - mine], fair_share=share, workers=workers)
    others = [(count, owner) for owner, count in held.items() if owner != worker_id]
    if not others:
        return LeasePlan(fair_share=share, workers=workers)
    # Most loaded first; ties broken by name so every worker picks the same victim.
    count, victim = max(others, key=lambda pair: (pair[0], pair[1]))
    if count > share or (count == share and mine < share - 1):
        victims = sorted(
            (lease for lease in live if lease.owner == victim), key=lambda lease: lease.shard_id
        )
        return LeasePlan(steal=victims[-1], fair_share=share, workers=workers)
    return LeasePlan(fair_share=share, workers=workers)

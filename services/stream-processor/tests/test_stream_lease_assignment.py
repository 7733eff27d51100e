"""Which leases a worker takes: failure detection by counter and balancing (pure code)."""

from __future__ import annotations

from stream_processor.lease_assignment import LeaseObservations, plan_leases
from stream_processor.leases import Lease

FAILOVER = 10.0


def _leases(*owners: str | None, counter: int = 5) -> dict[str, Lease]:
    return {
        f"shard-{i}": Lease(f"shard-{i}", owner=owner, counter=counter)
        for i, owner in enumerate(owners)
    }


def _plan(
    leases: dict[str, Lease],
    me: str,
    observations: LeaseObservations | None = None,
    now: float = 0.0,
) -> tuple[list[str], str | None]:
    if observations is None:
        observations = LeaseObservations()
        observations.observe(leases.values(), now)
    plan = plan_leases(
        leases,
        list(leases),
        worker_id=me,
        observations=observations,
        now=now,
        failover_seconds=FAILOVER,
    )
    return [lease.shard_id for lease in plan.take], plan.steal.shard_id if plan.steal else None


def test_a_lone_worker_takes_every_free_lease() -> None:
    assert _plan(_leases(None, None, None), "a") == (["shard-0", "shard-1", "shard-2"], None)


def test_two_workers_split_free_leases_to_their_fair_share() -> None:
    leases = _leases("b", None, None, None)
    # b is alive with one lease; four leases, two workers: a takes two.
    assert _plan(leases, "a") == (["shard-1", "shard-2"], None)


def test_a_lease_renewed_recently_is_not_taken() -> None:
    observations = LeaseObservations()
    leases = _leases("b")
    observations.observe(leases.values(), now=0.0)
    assert _plan(leases, "a", observations, now=FAILOVER - 0.1) == ([], None)


def test_a_lease_whose_counter_stood_still_for_the_failover_time_is_taken() -> None:
    observations = LeaseObservations()
    leases = _leases("b")
    observations.observe(leases.values(), now=0.0)
    observations.observe(leases.values(), now=FAILOVER)
    assert _plan(leases, "a", observations, now=FAILOVER) == (["shard-0"], None)


def test_a_renewal_restarts_the_failover_clock() -> None:
    observations = LeaseObservations()
    observations.observe(_leases("b", counter=5).values(), now=0.0)
    renewed = _leases("b", counter=6)
    observations.observe(renewed.values(), now=FAILOVER - 1)
    assert _plan(renewed, "a", observations, now=FAILOVER + 1) == ([], None)
    assert _plan(renewed, "a", observations, now=2 * FAILOVER - 1) == (["shard-0"], None)


def test_when_a_lease_was_first_seen_outlives_its_renewals_and_owners() -> None:
    # A listing decides a lease's shard is gone only if the lease was seen before it started.
    observations = LeaseObservations()
    assert not observations.seen_before("shard-0", 10.0)  # never seen
    observations.observe(_leases("b", counter=5).values(), now=2.0)
    observations.observe(_leases("c", counter=9).values(), now=7.0)  # renewed, stolen
    assert observations.seen_before("shard-0", 2.5)
    assert not observations.seen_before("shard-0", 2.0)  # seen in a scan at that moment
    observations.observe([], now=8.0)  # the lease went: forgotten
    observations.observe(_leases("c", counter=9).values(), now=9.0)
    assert not observations.seen_before("shard-0", 8.5)


def test_a_lease_first_seen_gets_the_full_failover_time() -> None:
    # A worker that just started has no history: it must not take a live lease at once.
    observations = LeaseObservations()
    leases = _leases("b")
    assert not observations.expired(leases["shard-0"], 100.0, FAILOVER)


def test_a_worker_below_its_share_steals_from_the_most_loaded() -> None:
    leases = _leases("b", "b", "b", "c")
    # Three workers (a, b, c), four leases: share 2. b holds 3 > 2: a steals one of b's.
    assert _plan(leases, "a") == ([], "shard-2")


def test_no_steal_when_it_would_only_move_the_imbalance() -> None:
    # One lease, two workers: b holds it; a at 0 would just make b the idle one.
    assert _plan(_leases("b"), "a") == ([], None)
    # Three leases, two workers: share 2; b has 2, a has 1: balanced enough.
    assert _plan(_leases("b", "b", "a"), "a") == ([], None)


def test_even_split_of_an_unbalanced_pair() -> None:
    # Two leases both held by b: a (0 < share 1) steals one.
    assert _plan(_leases("b", "b"), "a") == ([], "shard-1")


def test_a_worker_at_its_share_takes_nothing() -> None:
    assert _plan(_leases("a", "b"), "a") == ([], None)
    assert _plan(_leases("a", "a", "b", "b"), "a") == ([], None)


def test_free_leases_are_preferred_to_stealing() -> None:
    leases = _leases("b", "b", "b", None)
    assert _plan(leases, "a") == (["shard-3"], None)


def test_own_expired_leases_are_not_taken_again_as_free() -> None:
    observations = LeaseObservations()
    leases = _leases("a", "b")
    observations.observe(leases.values(), now=0.0)
    taken, _steal = _plan(leases, "a", observations, now=FAILOVER)
    assert "shard-0" not in taken

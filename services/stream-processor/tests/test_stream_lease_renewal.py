"""When held leases are renewed and when their holder must stop (pure code, table-driven)."""

from __future__ import annotations

import pytest

from stream_processor.lease_renewal import RenewalState, lease_deadline, plan_renewals
from stream_processor.leases import HeldLease

FAILOVER = 9.0
INTERVAL = FAILOVER / 3


def _state(renewed_at: float, attempted_at: float | None = None, **kw: bool) -> RenewalState:
    return RenewalState(renewed_at, renewed_at if attempted_at is None else attempted_at, **kw)


# (the lease, now) -> (renewal started, given up, when the renewer looks again)
ONE_LEASE = [
    pytest.param(_state(10.0), 10.0, (False, False, 13.0), id="just taken: nothing due"),
    pytest.param(_state(10.0), 13.0, (True, False, 16.0), id="an interval on: due"),
    pytest.param(_state(10.0), 14.5, (True, False, 17.5), id="late: due, next from now"),
    # A failed attempt at 13 leaves the deadline at 19; the next try is at 16.
    pytest.param(_state(10.0, 13.0), 15.0, (False, False, 16.0), id="failed: tried again later"),
    pytest.param(_state(10.0, 16.0), 17.0, (False, False, 19.0), id="failed twice: deadline next"),
    pytest.param(
        _state(10.0, 16.0, in_flight=True), 18.0, (False, False, 19.0), id="running: wait for it"
    ),
    pytest.param(_state(10.0, 16.0), 19.0, (False, True, 22.0), id="at the deadline: given up"),
    pytest.param(
        _state(10.0, 19.0, in_flight=True), 20.0, (False, True, 23.0), id="late renewal: given up"
    ),
    pytest.param(_state(16.0), 19.0, (True, False, 22.0), id="renewed since: deadline moved"),
]


@pytest.mark.parametrize(("state", "now", "expected"), ONE_LEASE)
def test_one_lease(state: RenewalState, now: float, expected: tuple[bool, bool, float]) -> None:
    plan = plan_renewals({"s": state}, now, interval=INTERVAL, failover_seconds=FAILOVER)
    assert (plan.renew == ["s"], plan.expired == ["s"], plan.wake_at) == expected


def test_leases_are_planned_together_and_the_earliest_moment_wakes_the_renewer() -> None:
    leases = {
        "b-due": _state(0.0),
        "a-due": _state(0.5),
        "expired": _state(-FAILOVER),
        "fresh": _state(4.0),
        "running": _state(-5.0, 1.0, in_flight=True),  # deadline 4.0
    }
    plan = plan_renewals(leases, 3.5, interval=INTERVAL, failover_seconds=FAILOVER)
    assert plan.renew == ["a-due", "b-due"]
    assert plan.expired == ["expired"]
    assert plan.wake_at == 4.0  # the running renewal's deadline


def test_no_leases_wakes_an_interval_later() -> None:
    plan = plan_renewals({}, 100.0, interval=INTERVAL, failover_seconds=FAILOVER)
    assert (plan.renew, plan.expired, plan.wake_at) == ([], [], 100.0 + INTERVAL)


@pytest.mark.parametrize(
    ("renewed_at", "now", "expired"),
    [(0.0, 0.0, False), (0.0, FAILOVER - 0.001, False), (0.0, FAILOVER, True), (5.0, 12.0, False)],
)
def test_a_held_lease_is_unusable_from_its_deadline(
    renewed_at: float,
    now: float,
    expired: bool,
) -> None:
    held = HeldLease("s", counter=3, renewed_at=renewed_at)
    assert lease_deadline(renewed_at, FAILOVER) == renewed_at + FAILOVER
    assert held.expired(now, FAILOVER) is expired


def test_a_lost_lease_is_marked_once() -> None:
    held = HeldLease("s", counter=3)
    assert held.lose() is True  # the first to notice counts and logs it
    assert held.lose() is False
    assert held.lost

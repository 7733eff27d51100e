"""When each held lease is renewed, and when its holder must stop using it. Pure: no I/O,
no clock.

A holder renews every lease it holds once per ``interval`` (a third of the failover time),
counted from the start of the previous attempt, one renewal of a lease at a time.

**The holder's deadline.** Another worker takes a lease only once its counter has stood
still for ``failover_seconds`` on that worker's own clock, counted from the first scan that
showed the counter (:mod:`stream_processor.lease_assignment`). That scan came after the
renewal that set the counter was written, which came after that renewal *started*. So a
holder that stops using a lease ``failover_seconds`` after the start of its last successful
renewal (or of the take) stops before anyone else can have taken it: no two workers read one
shard past the lease's expiry, whatever delayed the renewals (a slow or unreachable table, a
paused process). Both clocks are monotonic; only durations are compared, never times of day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RenewalPlan", "RenewalState", "lease_deadline", "plan_renewals"]


def lease_deadline(renewed_at: float, failover_seconds: float) -> float:
    """When the holder must have stopped using a lease last renewed (or taken) by a call
    that started at ``renewed_at``."""
    return renewed_at + failover_seconds


@dataclass(frozen=True)
class RenewalState:
    """One held lease as its renewer sees it (monotonic times)."""

    renewed_at: float  # start of the last successful renewal, or of the take
    attempted_at: float  # start of the last renewal attempt (``renewed_at`` if none since)
    in_flight: bool = False  # a renewal is running now


@dataclass(frozen=True)
class RenewalPlan:
    """What the renewer does now, and when it looks again."""

    renew: list[str] = field(default_factory=list)  # start a renewal of each
    expired: list[str] = field(default_factory=list)  # past the deadline: give each up
    wake_at: float = 0.0  # the next renewal due or deadline, at most one interval away


def plan_renewals(
    leases: Mapping[str, RenewalState], now: float, *, interval: float, failover_seconds: float
) -> RenewalPlan:
    """Which of ``leases`` (by shard id) to renew and which to give up at ``now``.

    A lease is due once ``interval`` passed since its last attempt and no renewal of it is
    running; it has expired at its deadline (:func:`lease_deadline`), even with a renewal
    still running — that renewal may yet succeed, but too late to be relied on.
    """
    plan = RenewalPlan(wake_at=now + interval)
    wake_at = plan.wake_at
    for shard_id in sorted(leases):
        state = leases[shard_id]
        deadline = lease_deadline(state.renewed_at, failover_seconds)
        if now >= deadline:
            plan.expired.append(shard_id)
            continue
        wake_at = min(wake_at, deadline)
        if state.in_flight:
            continue  # its end wakes the renewer
        due = state.attempted_at + interval
        if now >= due:
            plan.renew.append(shard_id)
            due = now + interval
        wake_at = min(wake_at, due)
    return RenewalPlan(plan.renew, plan.expired, wake_at)

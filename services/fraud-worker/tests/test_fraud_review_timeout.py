"""The review timeout against moto and Redis: overdue payments in REVIEW are declined once,
by the system reviewer, however many sweepers run; the rest are left waiting."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from fraud_worker.decisions import DecisionStore
from fraud_worker.review_timeout import ReviewTimeoutSweep
from fraud_worker.rules import FraudDecision
from fraud_worker.settings import FraudSettings
from pulse.clients import aws_client
from pulse.events import iso_timestamp, utc_now
from pulse.idempotency import IdempotencyGuard
from pulse.payment_states import Reviewer
from pulse_dev.testing import free_port, pending_payment, put_payment, readyz, until

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from pulse.settings import PulseSettings
    from pulse.topology import TopologyOutputs

TIMEOUT = 3600.0
REVIEWED = FraudDecision(decision="REVIEW", score=55, reasons=("amount_above_review_limit",))


@pytest.fixture
def decisions(topology: TopologyOutputs, stack_settings: PulseSettings) -> DecisionStore:
    return DecisionStore(
        aws_client("dynamodb", stack_settings), stack_settings.names.payments_table
    )


def _in_review(decisions: DecisionStore, ddb: Any, *, hours_ago: float) -> str:
    """A payment the fraud worker put in REVIEW ``hours_ago``."""
    payment = put_payment(ddb, decisions.table, pending_payment())
    decided_at = iso_timestamp(utc_now() - timedelta(hours=hours_ago))
    assert decisions.write(payment["payment_id"], REVIEWED, decided_at).written
    return payment["payment_id"]


def _sweeper(
    decisions: DecisionStore,
    redis: aioredis.Redis,
    settings: PulseSettings,
    timeout_seconds: float = TIMEOUT,
) -> ReviewTimeoutSweep:
    guard = IdempotencyGuard(
        redis, settings.redis_prefix, "sweep", lease_seconds=30, completed_ttl_seconds=30
    )
    return ReviewTimeoutSweep(
        decisions.transitions,
        guard,
        timeout_seconds=timeout_seconds,
        interval_seconds=60,
        lease_seconds=30,
    )


def _item(decisions: DecisionStore, payment_id: str) -> dict[str, Any]:
    ddb = decisions.transitions._ddb
    return dict(
        ddb.get_item(
            TableName=decisions.table, Key={"payment_id": {"S": payment_id}}, ConsistentRead=True
        )["Item"]
    )


def test_a_review_decision_puts_the_payment_in_the_review_queue(
    decisions: DecisionStore, stack_settings: PulseSettings
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    older = _in_review(decisions, ddb, hours_ago=2)
    newer = _in_review(decisions, ddb, hours_ago=1)
    item = _item(decisions, older)
    assert item["status"]["S"] == "REVIEW"
    assert item["review_queue"]["S"] == "REVIEW"
    assert item["review_since"]["S"] == item["decided_at"]["S"]
    page = decisions.transitions.review_queue(limit=10)
    assert [p["payment_id"] for p in page.payments] == [older, newer]

    # Decided: it leaves the queue, and a replayed fraud decision still knows it was REVIEW.
    assert decisions.transitions.review(older, "APPROVED", Reviewer.operator("ops-1")).applied
    assert "review_queue" not in _item(decisions, older)
    replay = decisions.write(older, REVIEWED, iso_timestamp(utc_now()))
    assert not replay.written
    assert replay.stored == REVIEWED
    assert replay.stored_status == "APPROVED"
    assert [p["payment_id"] for p in decisions.transitions.review_queue(limit=10).payments] == [
        newer
    ]


async def test_two_sweepers_racing_decline_an_overdue_payment_once(
    decisions: DecisionStore, stack_settings: PulseSettings, async_redis: aioredis.Redis
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    overdue = _in_review(decisions, ddb, hours_ago=2)
    waiting = _in_review(decisions, ddb, hours_ago=0.5)
    first = _sweeper(decisions, async_redis, stack_settings)
    second = _sweeper(decisions, async_redis, stack_settings)

    # Without the lease (it ran out mid-sweep): the conditional move declines once.
    counts = await asyncio.gather(first.sweep(), second.sweep())
    assert sorted(counts) == [0, 1]
    item = _item(decisions, overdue)
    assert item["status"]["S"] == "DECLINED"
    assert item["reviewed_by"]["S"] == "system:review-timeout"
    assert "PULSE_REVIEW_TIMEOUT_SECONDS" in item["review_note"]["S"]
    assert "review_queue" not in item
    assert _item(decisions, waiting)["status"]["S"] == "REVIEW"

    # With the lease: one of two rounds at once sweeps, the other skips.
    again = _in_review(decisions, ddb, hours_ago=3)
    rounds = await asyncio.gather(first.round(), second.round())
    assert sorted(rounds, key=lambda r: r is None) == [1, None]
    assert _item(decisions, again)["status"]["S"] == "DECLINED"
    # ... and one completed a moment ago makes the next round skip too.
    assert await first.round() is None


async def test_by_default_a_payment_waits_24_hours_for_a_decision(
    decisions: DecisionStore, stack_settings: PulseSettings, async_redis: aioredis.Redis
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    a_day_ago = _in_review(decisions, ddb, hours_ago=24.5)
    this_morning = _in_review(decisions, ddb, hours_ago=23.5)
    default = FraudSettings().review_timeout_seconds
    assert await _sweeper(decisions, async_redis, stack_settings, default).sweep() == 1
    assert _item(decisions, a_day_ago)["status"]["S"] == "DECLINED"
    assert _item(decisions, this_morning)["status"]["S"] == "REVIEW"


def _metric_sum(port: int, pattern: str) -> float:
    """The sum of the samples of the worker on ``port`` whose line matches ``pattern``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(pattern + r" (\S+)", text))


SYSTEM_DECLINES = r'pulse_review_decisions_total\{actor_kind="system",decision="DECLINED"\}'
ROUNDS = r'pulse_review_sweeps_total\{outcome="\w+"\}'


def test_two_worker_processes_decline_an_overdue_payment_exactly_once(
    decisions: DecisionStore, stack_settings: PulseSettings, service_process: Any
) -> None:
    ddb = aws_client("dynamodb", stack_settings)
    overdue = [_in_review(decisions, ddb, hours_ago=2) for _ in range(3)]
    ports = [free_port(), free_port()]
    for port in ports:
        service_process(
            "fraud_worker",
            PULSE_HTTP_PORT=str(port),
            PULSE_SQS_WAIT_TIME_SECONDS="1",
            PULSE_REVIEW_TIMEOUT_SECONDS=str(TIMEOUT),
            PULSE_REVIEW_SWEEP_INTERVAL_SECONDS="0.5",
        ).start(wait_port=port)
    until(lambda: all(readyz(port) for port in ports))
    until(lambda: all(_item(decisions, p)["status"]["S"] == "DECLINED" for p in overdue))
    # Both kept sweeping for a while (many rounds each); each payment declined once.
    until(lambda: all(_metric_sum(port, ROUNDS) >= 4 for port in ports))
    assert sum(_metric_sum(port, SYSTEM_DECLINES) for port in ports) == len(overdue)
    assert decisions.transitions.review_queue(limit=10).payments == []

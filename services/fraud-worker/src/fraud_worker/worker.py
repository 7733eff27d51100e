"""The fraud worker: payment.created events in, decisions out.

For each message: parse the CloudEvent; under the idempotency guard (one owner per event id,
a completed event id is skipped) record the payment in the account's activity (Redis),
apply the rules, write the decision with a conditional UpdateItem, and send non-approved
decisions to the ``alerts`` channel. The consumer runtime deletes the message once this
returns; a malformed message is dead-lettered. Beside the queue, the review-timeout sweep
declines payments left in REVIEW too long (:mod:`fraud_worker.review_timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from fraud_worker.activity import AccountActivityStore
from fraud_worker.decisions import DecisionStore
from fraud_worker.review_timeout import ReviewTimeoutSweep
from fraud_worker.rules import FraudDecision, PaymentFacts, RiskLimits, evaluate
from fraud_worker.settings import FraudSettings, load_fraud_settings
from pulse.blocklists import adopt_earlier_blocklists
from pulse.channels import ALERTS, ChannelPublisher
from pulse.clients import aws_client, redis_client
from pulse.collector import settle_collector
from pulse.consumer import SqsMessage, consume
from pulse.events import (
    FRAUD_DECISION,
    PAYMENT_CREATED,
    CloudEvent,
    new_event,
    stable_event_id,
    utc_now,
)
from pulse.health import HealthReporter
from pulse.idempotency import IdempotencyGuard, canonical_event, guard_for
from pulse.logging import event_context, get_logger
from pulse.metrics import StageMetrics
from pulse.payments import APPROVED, format_amount
from pulse.replication import Replication
from pulse.service import redis_check, serving_ops

if TYPE_CHECKING:
    from pulse.service import Lifecycle

__all__ = ["SOURCE", "FraudWorker", "decision_event", "serve"]

SOURCE = "/pulse/fraud-worker"
log = get_logger("fraud_worker")


def decision_event(
    source: CloudEvent, payment: PaymentFacts, decision: FraudDecision, decided_at: str | None
) -> CloudEvent:
    """The ``pulse.fraud.decision`` event for ``alerts`` (id stable per source event)."""
    return new_event(
        id=stable_event_id(source.id, "decision"),
        type=FRAUD_DECISION,
        source=SOURCE,
        subject=payment.payment_id,
        traceparent=source.traceparent,
        data={
            "payment_id": payment.payment_id,
            "account_id": payment.account_id,
            "decision": decision.decision,
            "score": decision.score,
            "reasons": list(decision.reasons),
            "amount": format_amount(payment.amount),
            "currency": payment.currency,
            **({"decided_at": decided_at} if decided_at else {}),
        },
    )


class FraudWorker:
    """The message handler: one payment.created event → one decision, written once."""

    def __init__(
        self,
        activity: AccountActivityStore,
        decisions: DecisionStore,
        publisher: ChannelPublisher,
        limits: RiskLimits,
        *,
        guard: IdempotencyGuard | None = None,
        decision_delay_seconds: float = 0.0,
    ) -> None:
        self._guard = guard
        self._delay = decision_delay_seconds
        self._activity = activity
        self._decisions = decisions
        self._publisher = publisher
        self._limits = limits

    async def handle(self, message: SqsMessage) -> None:
        event = message.cloud_event(PAYMENT_CREATED)
        with event_context(event.id, event.trace_id, payment_id=event.subject):
            if self._guard is None:
                await self._decide(event)
                return
            outcome = await self._guard.run(
                event.id, canonical_event(event), lambda: self._decide(event)
            )
            if outcome.replayed:
                log.debug("event already handled", result=outcome.result.decode())

    async def _decide(self, event: CloudEvent) -> bytes:
        """Decide and write; returns the decision as the idempotency record's result."""
        payment = PaymentFacts.from_event(event)
        activity = await self._activity.record(event.id, payment)
        decision = evaluate(payment, activity, self._limits)
        if self._delay:  # a test hook: widens the window a crash can hit
            await asyncio.sleep(self._delay)
        decided_at = utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        result = await asyncio.to_thread(
            self._decisions.write, payment.payment_id, decision, decided_at
        )
        if result.written:
            log.debug(
                "payment decided",
                decision=decision.decision,
                score=decision.score,
                reasons=list(decision.reasons),
            )
            await self._alert(event, payment, decision, decided_at)
            return decision.decision.encode()
        log.debug("payment already decided", status=result.stored_status)
        if result.stored is not None:
            # A crash between the write and the alert: the alert is still owed (the channel
            # guard makes this a no-op when it was sent).
            await self._alert(event, payment, result.stored, None)
        return (result.stored_status or "").encode()

    async def _alert(
        self,
        event: CloudEvent,
        payment: PaymentFacts,
        decision: FraudDecision,
        decided_at: str | None,
    ) -> None:
        if decision.decision == APPROVED:
            return
        alert = decision_event(event, payment, decision, decided_at)
        appended = await self._publisher.append(alert, [ALERTS])
        if appended.applied:
            log.debug("fraud alert sent", decision=decision.decision, alert_id=alert.id)


async def serve(lifecycle: Lifecycle) -> None:
    """Consume the fraud queue until SIGTERM, serving /healthz, /readyz and /metrics."""
    settings = lifecycle.settings
    if not isinstance(settings, FraudSettings):
        settings = load_fraud_settings()
    names = settings.names
    ddb = aws_client("dynamodb", settings)
    sqs = aws_client("sqs", settings)
    redis = redis_client(settings)
    decisions = DecisionStore(ddb, names.payments_table)

    async def check_dynamodb() -> None:
        await asyncio.to_thread(decisions.check)

    lifecycle.add_check("dynamodb", check_dynamodb)
    lifecycle.add_check("redis", redis_check(redis))
    try:
        adopted = await adopt_earlier_blocklists(redis, settings.redis_prefix)
    except Exception as exc:  # Redis not up yet: readiness says so; the next start adopts
        log.warning("earlier blocklists not adopted", error=str(exc))
    else:
        if adopted:
            log.info("blocklists moved to their cluster-safe keys", ids=adopted)
    worker = FraudWorker(
        AccountActivityStore(
            redis,
            settings.redis_prefix,
            window_seconds=settings.velocity_window_seconds,
            country_memory_seconds=settings.country_memory_seconds,
            replication=Replication.of(settings),
        ),
        decisions,
        ChannelPublisher.of(redis, settings),
        settings.risk_limits(),
        guard=guard_for(redis, settings, "fraud"),
        decision_delay_seconds=settings.decision_delay_seconds,
    )
    health = HealthReporter.of(redis, settings)
    sweep = ReviewTimeoutSweep(
        decisions.transitions,
        IdempotencyGuard(
            redis,
            settings.redis_prefix,
            "sweep",
            lease_seconds=settings.idempotency_lease_seconds,
            # a round completed half an interval ago makes the other replicas skip theirs
            completed_ttl_seconds=settings.review_sweep_interval_seconds / 2,
            replication=Replication.of(settings),
        ),
        timeout_seconds=settings.review_timeout_seconds,
        interval_seconds=settings.review_sweep_interval_seconds,
        lease_seconds=settings.idempotency_lease_seconds,
    )
    # What start-up made (modules, the clients' service models) lives as long as the
    # process: frozen out of later collections, each of which is timed.
    settle_collector()
    sweeping = asyncio.create_task(sweep.run(lifecycle.stopping))
    try:
        async with serving_ops(lifecycle), health.running(lifecycle.stopping):
            await consume(
                lifecycle,
                sqs,
                names.fraud_queue,
                worker.handle,
                stage_metrics=StageMetrics("fraud"),
                settings=settings,
                health=health,
            )
    finally:
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
        await redis.aclose()

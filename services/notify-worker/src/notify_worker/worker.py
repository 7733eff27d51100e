"""The notify worker: payment.updated events in, notifications out.

For each message: parse the CloudEvent; if the status changed, build the notification and,
under the idempotency guard (one owner per event id, a completed event id is skipped), hand
it to every notifier (the account channel today). Unchanged status: nothing to say.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp

from notify_worker.delivery import WebhookDeliverer, WebhookQueues
from notify_worker.endpoint_health import EndpointHealth
from notify_worker.endpoints import EndpointDirectory, SecretStore
from notify_worker.notifications import notification_event
from notify_worker.notifiers import AccountChannelNotifier, ChannelEventRecord, Notifier
from notify_worker.rate_limit import EndpointRateLimit
from notify_worker.settings import NotifySettings, load_notify_settings
from notify_worker.webhooks import WebhookFanout
from pulse.channels import ChannelPublisher
from pulse.clients import aws_client, redis_client
from pulse.collector import settle_collector
from pulse.consumer import SqsMessage, consume
from pulse.events import PAYMENT_UPDATED
from pulse.health import HealthReporter
from pulse.idempotency import IdempotencyGuard, canonical_event, guard_for
from pulse.logging import event_context, get_logger
from pulse.metrics import StageMetrics
from pulse.service import redis_check, serving_ops
from pulse.topology import WebhookNames
from pulse.webhook_attempts import AttemptLog
from pulse.webhook_endpoint_health import EndpointHealthTable
from pulse.webhook_targets import SsrfPolicy, guarded_connector

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pulse.events import CloudEvent
    from pulse.service import Lifecycle

__all__ = ["NotifyWorker", "serve"]

log = get_logger("notify_worker")


class NotifyWorker:
    """The message handler: one payment.updated event → at most one notification."""

    def __init__(
        self, notifiers: Sequence[Notifier], *, guard: IdempotencyGuard | None = None
    ) -> None:
        self._notifiers = list(notifiers)
        self._guard = guard

    async def handle(self, message: SqsMessage) -> None:
        event = message.cloud_event(PAYMENT_UPDATED)
        with event_context(event.id, event.trace_id, payment_id=event.subject):
            notification = notification_event(event)
            if notification is None:
                log.debug("status unchanged: nothing to notify")
                return
            if self._guard is None:
                await self._send(notification)
                return
            outcome = await self._guard.run(
                event.id, canonical_event(event), lambda: self._send(notification)
            )
            if outcome.replayed:
                log.debug("event already handled", notification_id=notification.id)

    async def _send(self, notification: CloudEvent) -> bytes:
        """Hand the notification to every notifier; its id is the idempotency result."""
        for notifier in self._notifiers:
            delivered = await notifier.notify(notification)
            log.debug(
                "notification sent"
                if delivered
                else "notification not sent (sent before or no destination)",
                notifier=type(notifier).__name__,
                status=notification.data["status"],
                notification_id=notification.id,
            )
        return notification.id.encode()


async def serve(lifecycle: Lifecycle) -> None:
    """Consume the notify queue, the webhooks' first attempts and their scheduled retries
    until SIGTERM, serving /healthz, /readyz and /metrics."""
    settings = lifecycle.settings
    if not isinstance(settings, NotifySettings):
        settings = load_notify_settings()
    sqs = aws_client("sqs", settings)
    ddb = aws_client("dynamodb", settings)
    hooks = WebhookNames.from_prefix(settings.resource_prefix)
    directory = EndpointDirectory(
        ddb, hooks.table, cache_seconds=settings.webhook_endpoint_cache_seconds
    )
    redis = redis_client(settings)

    lifecycle.add_check("redis", redis_check(redis))
    channel = AccountChannelNotifier(
        ChannelPublisher.of(redis, settings),
        ChannelEventRecord(ddb, settings.names.events_table, ttl_days=settings.audit_ttl_days),
    )
    fanout = WebhookFanout(sqs, hooks.queue, directory)
    worker = NotifyWorker([channel, fanout], guard=guard_for(redis, settings, "notify"))
    session = aiohttp.ClientSession(
        headers={"user-agent": "pulse-webhooks/1"},
        connector=guarded_connector(SsrfPolicy.from_settings(settings)),
    )
    deliverer = WebhookDeliverer(
        session,
        SecretStore(
            aws_client("ssm", settings), cache_seconds=settings.webhook_secret_cache_seconds
        ),
        rate_limit=EndpointRateLimit(
            redis, settings.redis_prefix, rate_per_second=settings.webhook_rate_per_second
        ),
        health=EndpointHealth(
            EndpointHealthTable(ddb, hooks.table),
            directory,
            channel=channel,
            fanout=fanout,
            disable_after_seconds=settings.webhook_disable_after_seconds,
        ),
        attempts=AttemptLog(ddb, hooks.attempts, ttl_seconds=settings.webhook_attempt_ttl_seconds),
        queues=WebhookQueues(sqs, hooks),
        schedule=settings.retry_schedule,
        timeout_seconds=settings.webhook_timeout_seconds,
        max_hop_seconds=settings.webhook_retry_hop_seconds,
        lease_seconds=settings.sqs_visibility_timeout,
        directory=directory,
        window_recheck_seconds=settings.webhook_window_recheck_seconds,
    )
    health = HealthReporter.of(redis, settings)
    # What start-up made (modules, the clients' service models) lives as long as the
    # process: frozen out of later collections, each of which is timed.
    settle_collector()
    try:
        async with serving_ops(lifecycle), health.running(lifecycle.stopping):
            await asyncio.gather(
                consume(
                    lifecycle,
                    sqs,
                    settings.names.notify_queue,
                    worker.handle,
                    stage_metrics=StageMetrics("notify"),
                    settings=settings,
                    health=health,
                ),
                *(
                    consume(
                        lifecycle,
                        sqs,
                        queue,
                        deliverer.handle,
                        stage_metrics=StageMetrics(stage),
                        settings=settings,
                        check_name=f"sqs_{stage}",
                        health=health,
                    )
                    for queue, stage in (
                        (hooks.queue, "webhooks"),
                        (hooks.retries, "webhook_retries"),
                    )
                ),
            )
    finally:
        await session.close()
        await redis.aclose()

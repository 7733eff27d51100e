"""Signed webhooks to third parties: fan-out per endpoint, then ordered, rate-limited delivery.

Two halves, joined by the FIFO queue ``{prefix}webhooks.fifo``:

1. :class:`WebhookFanout` (a :class:`~notify_worker.notifiers.Notifier`): for each
   notification, one delivery message (:mod:`pulse.webhook_deliveries`) per endpoint of the
   account that wants it (enabled, the event type in its filter: :mod:`pulse.webhook_endpoints`),
   ``MessageGroupId`` = the endpoint id (so each endpoint gets its
   events in order) and ``MessageDeduplicationId`` = a hash of event id and endpoint id (so a
   replayed notification is not queued twice within SQS's 5-minute window).
2. :class:`WebhookDeliverer` (a handler of the FIFO queue): signs the event per the Standard
   Webhooks spec (:func:`signature_headers`) with the endpoint's secrets from SSM Parameter
   Store (cached; two during a secret rotation's overlap, one signature each), waits for
   the per-endpoint rate limit (a Redis counter per endpoint and second; waiting does not
   spend an attempt), and POSTs it.
   2xx: delivered. 5xx, 408, 429, a timeout or a connection error: retried with the
   runtime's growing backoff, the group waiting meanwhile; after ``max_attempts``, the
   dead-letter queue with the last error. Any other 4xx: the dead-letter queue at once.
   An endpoint removed meanwhile (its secret gone): the delivery is dropped.

``webhook-id`` is the event id, so a receiver can drop the duplicates at-least-once
delivery may bring.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import orjson
from prometheus_client import Counter, Histogram

from pulse.errors import PermanentError, RetryableError
from pulse.events import CloudEvent
from pulse.logging import event_context, get_logger
from pulse.webhook_deliveries import Delivery, DeliveryQueue, delivery_entry
from pulse.webhook_targets import TargetRefused, post_webhook

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notify_worker.endpoints import EndpointDirectory, SecretStore
    from pulse.clients import RedisClient
    from pulse.consumer import SqsMessage
    from pulse.topology import WebhookNames

__all__ = [
    "Delivery",
    "WebhookDeliverer",
    "WebhookFanout",
    "delivery_verdict",
    "rate_key",
    "sign",
    "signature_headers",
]

log = get_logger("notify_worker.webhooks")

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret

DELIVERIES = Counter(
    "pulse_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retry, failed, dropped)",
    ["outcome"],
)
REQUEST_DURATION = Histogram(
    "pulse_webhook_request_duration_seconds",
    "Time of one webhook POST, by status class (or 'error')",
    ["status_class"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMITED = Counter(
    "pulse_webhook_rate_limited_total", "Deliveries postponed by the per-endpoint rate limit"
)


def _secret_key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise PermanentError("webhook secret is not whsec_<base64>") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed by the decoded secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secrets: str | Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks request headers; ``webhook-signature`` carries one signature per
    secret, space-separated (during a rotation's overlap: the new secret's and the old's)."""
    keys = (secrets,) if isinstance(secrets, str) else tuple(secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, msg_id, timestamp, body) for key in keys),
        "content-type": "application/json",
    }


def delivery_verdict(status: int) -> str:
    """``delivered`` (2xx), ``retry`` (5xx, 408, 429) or ``failed`` (any other status)."""
    if 200 <= status < 300:  # noqa: PLR2004 - HTTP classes
        return "delivered"
    if status >= 500 or status in {408, 429}:  # noqa: PLR2004
        return "retry"
    return "failed"


class WebhookFanout:
    """Notifier: queues one delivery per endpoint of the notification's account that wants
    it (enabled, and the type in its filter)."""

    def __init__(self, sqs: Any, queue_name: str, directory: EndpointDirectory) -> None:
        self._queue = DeliveryQueue(sqs, queue_name)
        self._directory = directory

    async def notify(self, notification: CloudEvent) -> bool:
        account_id = str(notification.data["account_id"])
        endpoints = await self._directory.endpoints(account_id)
        endpoints = [e for e in endpoints if e.accepts(notification.type)]
        if not endpoints:
            return False
        event = notification.model_dump(mode="json", exclude_none=True)
        entries = [
            delivery_entry(e, account_id, event, entry_id=str(i)) for i, e in enumerate(endpoints)
        ]
        await asyncio.to_thread(self._queue.send, entries)
        return True


def rate_key(redis_prefix: str, endpoint_id: str, second: int) -> str:
    """The endpoint's delivery counter of one second. Every Redis key of an endpoint carries
    the hash tag ``{webhooks:{endpoint id}}`` (one node of a Redis Cluster per endpoint)."""
    return f"{redis_prefix}{{webhooks:{endpoint_id}}}:rate:{second}"


# KEYS[1] the endpoint's counter of this second; ARGV[1] limit -> 1 allowed, 0 over
_RATE_LUA: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 2) end
if n > tonumber(ARGV[1]) then return 0 end
return 1
"""


class WebhookDeliverer:
    """The FIFO queue's handler: one signed POST per delivery message (module doc)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        secrets: SecretStore,
        redis: RedisClient,
        names: WebhookNames,
        redis_prefix: str,
        *,
        rate_per_second: int,
        timeout_seconds: float,
        max_attempts: int,
    ) -> None:
        self._session = session
        self._secrets = secrets
        self._names = names
        self._prefix = redis_prefix
        self._rate = rate_per_second
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_attempts = max_attempts
        self._rate_script = redis.register_script(_RATE_LUA)

    async def handle(self, message: SqsMessage) -> None:
        delivery = Delivery.from_json(message.body)
        event = delivery.event
        try:
            trace = CloudEvent.model_validate(event).trace_id
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise PermanentError(f"delivery without a CloudEvent: {exc}") from exc
        with event_context(str(event.get("id")), trace, endpoint_id=delivery.endpoint_id):
            await self._deliver(delivery, message.receive_count)

    async def _allowed(self, endpoint_id: str) -> bool:
        key = rate_key(self._prefix, endpoint_id, int(time.time()))
        return bool(await self._rate_script(keys=[key], args=[self._rate]))

    async def _deliver(self, delivery: Delivery, attempt: int) -> None:
        secrets = await self._secrets.secrets(delivery.secret_parameter)
        if not secrets:
            DELIVERIES.labels("dropped").inc()
            log.debug("endpoint removed: delivery dropped")
            return
        while not await self._allowed(delivery.endpoint_id):
            # Wait for the next second holding the message (the heartbeat keeps it hidden):
            # going back to the queue would spend one of its attempts.
            RATE_LIMITED.inc()
            await asyncio.sleep(1.0 - time.time() % 1.0 + 0.005)
        body = orjson.dumps(delivery.event)
        headers = signature_headers(secrets, str(delivery.event["id"]), int(time.time()), body)
        start = time.perf_counter()
        try:
            status = (
                await post_webhook(
                    self._session, delivery.url, body, headers, timeout=self._timeout
                )
            ).status
        except TargetRefused as exc:
            DELIVERIES.labels("failed").inc()
            log.warning("webhook target refused", reason=str(exc))
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            REQUEST_DURATION.labels("error").observe(time.perf_counter() - start)
            self._retry_or_give_up(f"{type(exc).__name__}: {exc}", attempt)
            return
        REQUEST_DURATION.labels(f"{status // 100}xx").observe(time.perf_counter() - start)
        verdict = delivery_verdict(status)
        if verdict == "delivered":
            DELIVERIES.labels("delivered").inc()
            log.debug("webhook delivered", status=status, attempt=attempt)
        elif verdict == "retry":
            self._retry_or_give_up(f"HTTP {status}", attempt)
        else:
            DELIVERIES.labels("failed").inc()
            raise PermanentError(f"webhook refused: HTTP {status}")

    def _retry_or_give_up(self, error: str, attempt: int) -> None:
        if attempt >= self._max_attempts:
            DELIVERIES.labels("failed").inc()
            raise PermanentError(f"webhook failed after {attempt} attempts: {error}")
        DELIVERIES.labels("retry").inc()
        raise RetryableError(f"webhook attempt {attempt} failed: {error}")

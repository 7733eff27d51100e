"""Signed webhooks to third parties: the signature, the delivery message, the fan-out.

Two halves, joined by the FIFO queue ``{prefix}webhooks.fifo``:

1. :class:`WebhookFanout` (a :class:`~notify_worker.notifiers.Notifier`): for each
   notification, one delivery message (:mod:`pulse.webhook_deliveries`) per endpoint of the
   account that wants it (enabled, the event type in its filter: :mod:`pulse.webhook_endpoints`),
   ``MessageGroupId`` = the endpoint id (so each endpoint's first attempts are made one at a
   time, in the order queued) and ``MessageDeduplicationId`` = a hash of event id and
   endpoint id (so a replayed notification is not queued twice within SQS's 5-minute window).
2. :class:`notify_worker.delivery.WebhookDeliverer` makes the attempts: each signed per the
   Standard Webhooks spec (:func:`signature_headers`) with the endpoint's secrets (two during
   a secret rotation's overlap, one signature each), counted per (endpoint, event) in the
   attempt log, retried on the schedule, rate-limited per endpoint.

``webhook-id`` is the event id, so a receiver can drop the duplicates at-least-once
delivery may bring.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any, Final

from pulse.errors import PermanentError, RetryableError
from pulse.webhook_deliveries import Delivery, DeliveryQueue, delivery_entry

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notify_worker.endpoints import EndpointDirectory
    from pulse.events import CloudEvent

__all__ = [
    "Delivery",
    "QueueUrls",
    "WebhookFanout",
    "delivery_verdict",
    "sign",
    "signature_headers",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret


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


class QueueUrls:
    """Queue URLs by name, looked up once each (a failed lookup is retried later)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self._urls: dict[str, str] = {}

    async def url(self, name: str) -> str:
        found = self._urls.get(name)
        if found is None:
            try:
                got = await asyncio.to_thread(self._sqs.get_queue_url, QueueName=name)
            except Exception as exc:
                raise RetryableError(f"webhook queue {name}: {exc}", delay=2) from exc
            found = self._urls[name] = str(got["QueueUrl"])
        return found


class WebhookFanout:
    """Notifier: queues one delivery per endpoint of the notification's account that wants
    it (enabled, and the type in its filter)."""

    def __init__(self, sqs: Any, queue_name: str, directory: EndpointDirectory) -> None:
        self._queue = DeliveryQueue(sqs, queue_name)
        self._directory = directory

    async def notify(self, notification: CloudEvent, *, skip_endpoint: str | None = None) -> bool:
        """Queue the deliveries; ``skip_endpoint`` is one endpoint not to send to (the one
        an announcement is about)."""
        account_id = str(notification.data["account_id"])
        endpoints = await self._directory.endpoints(account_id)
        endpoints = [
            e for e in endpoints if e.accepts(notification.type) and e.endpoint_id != skip_endpoint
        ]
        if not endpoints:
            return False
        event = notification.model_dump(mode="json", exclude_none=True)
        entries = [
            delivery_entry(e, account_id, event, entry_id=str(i)) for i, e in enumerate(endpoints)
        ]
        await asyncio.to_thread(self._queue.send, entries)
        return True

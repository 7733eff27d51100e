"""Signed webhooks to third parties: the signature, the delivery message, the fan-out.

Two halves, joined by the FIFO queue ``{prefix}webhooks.fifo``:

1. :class:`WebhookFanout` (a :class:`~notify_worker.notifiers.Notifier`): for each
   notification, one delivery message per endpoint of the account (the endpoints table,
   ``pulse webhooks add``), ``MessageGroupId`` = the endpoint id (so each endpoint's first
   attempts are made one at a time, in the order queued) and ``MessageDeduplicationId`` = a
   hash of event id and endpoint id (so a replayed notification is not queued twice within
   SQS's 5-minute window).
2. :class:`notify_worker.delivery.WebhookDeliverer` makes the attempts: each signed per the
   Standard Webhooks spec (:func:`signature_headers`), counted per (endpoint, event) in the
   attempt log, retried on the schedule, rate-limited per endpoint.

``webhook-id`` is the event id, so a receiver can drop the duplicates at-least-once
delivery may bring.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from pulse.errors import PermanentError, RetryableError

if TYPE_CHECKING:
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
_MAX_BATCH: Final = 10


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


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks request headers."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def delivery_verdict(status: int) -> str:
    """``delivered`` (2xx), ``retry`` (5xx, 408, 429) or ``failed`` (any other status)."""
    if 200 <= status < 300:  # noqa: PLR2004 - HTTP classes
        return "delivered"
    if status >= 500 or status in {408, 429}:  # noqa: PLR2004
        return "retry"
    return "failed"


@dataclass(frozen=True)
class Delivery:
    """One event for one endpoint, and which attempt it is: the body of a message on the
    FIFO queue (attempt 1, due at once) or on the retries queue (a later attempt, due at
    ``due_at_ms``, Unix milliseconds)."""

    endpoint_id: str
    account_id: str
    url: str
    secret_parameter: str
    event: dict[str, Any]
    attempt: int = 1
    due_at_ms: int = 0

    @property
    def event_id(self) -> str:
        return str(self.event.get("id", ""))

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Delivery:
        try:
            data = orjson.loads(raw)
            delivery = cls(
                endpoint_id=str(data["endpoint_id"]),
                account_id=str(data["account_id"]),
                url=str(data["url"]),
                secret_parameter=str(data["secret_parameter"]),
                event=dict(data["event"]),
                attempt=int(data.get("attempt", 1)),
                due_at_ms=int(data.get("due_at_ms", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"not a webhook delivery: {type(exc).__name__}") from exc
        if delivery.attempt < 1 or not delivery.event_id:
            raise PermanentError("not a webhook delivery: no event id, or attempt below 1")
        return delivery


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
    """Notifier: queues one delivery per endpoint of the notification's account."""

    def __init__(self, sqs: Any, queue_name: str, directory: EndpointDirectory) -> None:
        self._sqs = sqs
        self._queue_name = queue_name
        self._urls = QueueUrls(sqs)
        self._directory = directory

    async def notify(self, notification: CloudEvent) -> bool:
        account_id = str(notification.data["account_id"])
        endpoints = await self._directory.endpoints(account_id)
        if not endpoints:
            return False
        event = notification.model_dump(mode="json", exclude_none=True)
        entries = [
            {
                "Id": str(i),
                "MessageBody": Delivery(e.endpoint_id, account_id, e.url, e.secret_parameter, event)
                .to_json()
                .decode(),
                "MessageGroupId": e.endpoint_id,
                "MessageDeduplicationId": hashlib.sha256(
                    f"{notification.id}|{e.endpoint_id}".encode()
                ).hexdigest(),
            }
            for i, e in enumerate(endpoints)
        ]
        url = await self._urls.url(self._queue_name)
        for start in range(0, len(entries), _MAX_BATCH):
            chunk = entries[start : start + _MAX_BATCH]
            try:
                response = await asyncio.to_thread(
                    self._sqs.send_message_batch, QueueUrl=url, Entries=chunk
                )
            except Exception as exc:
                raise RetryableError(f"queue webhook deliveries: {exc}", delay=2) from exc
            if response.get("Failed"):
                raise RetryableError(f"queue webhook deliveries: {response['Failed'][:1]}")
        return True

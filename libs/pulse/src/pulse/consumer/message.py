"""A received SQS message, decoded, and the handler the consumer runs on it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from pulse.errors import PermanentError
from pulse.events import CloudEvent

__all__ = ["MessageHandler", "SqsMessage"]


@dataclass(frozen=True)
class SqsMessage:
    """One received SQS message, decoded."""

    message_id: str
    receipt_handle: str
    body: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    message_attributes: dict[str, Any] = field(default_factory=dict)
    receive_count: int = 1
    sent_at: datetime | None = None

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> SqsMessage:
        """Build from one entry of ``ReceiveMessage``'s ``Messages``."""
        attributes = {str(k): str(v) for k, v in (raw.get("Attributes") or {}).items()}
        sent_ms = attributes.get("SentTimestamp")
        sent_at = (
            datetime.fromtimestamp(int(sent_ms) / 1000, UTC)
            if sent_ms and sent_ms.isdigit()
            else None
        )
        count = attributes.get("ApproximateReceiveCount", "1")
        return cls(
            message_id=str(raw["MessageId"]),
            receipt_handle=str(raw["ReceiptHandle"]),
            body=str(raw.get("Body", "")).encode(),
            attributes=attributes,
            message_attributes=dict(raw.get("MessageAttributes") or {}),
            receive_count=int(count) if count.isdigit() else 1,
            sent_at=sent_at,
        )

    def string_attribute(self, name: str) -> str | None:
        """The value of String (or Number) message attribute ``name``, if present."""
        value = self.message_attributes.get(name)
        if not isinstance(value, dict):
            return None
        text = value.get("StringValue")
        return str(text) if text is not None else None

    def cloud_event(self, *types: str) -> CloudEvent:
        """The CloudEvent in the body; :class:`PermanentError` if it is not one of ``types``."""
        try:
            event = CloudEvent.from_json(self.body)
        except (ValidationError, orjson.JSONDecodeError) as exc:
            raise PermanentError(f"not a CloudEvent: {type(exc).__name__}") from exc
        if types and event.type not in types:
            raise PermanentError(f"unexpected event type {event.type!r}")
        return event

    def age_seconds(self, now: float | None = None) -> float | None:
        """Seconds since the message was sent, or None without a SentTimestamp."""
        if self.sent_at is None:
            return None
        return (time.time() if now is None else now) - self.sent_at.timestamp()


MessageHandler = Callable[[SqsMessage], Awaitable[None]]

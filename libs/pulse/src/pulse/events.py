"""The CloudEvents 1.0 envelope (JSON structured mode) every Pulse event travels in.

Ids of events derived from a stream record are stable across replays
(:func:`stable_event_id`), so every receiver can deduplicate on ``id``.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field

from pulse.ids import uuid4

__all__ = [
    "FRAUD_DECISION",
    "HEALTH",
    "NOTIFICATION",
    "PAYMENT_CREATED",
    "PAYMENT_DELETED",
    "PAYMENT_UPDATED",
    "STATS",
    "WEBHOOK_ENDPOINT_DISABLED",
    "CloudEvent",
    "iso_timestamp",
    "new_event",
    "stable_event_id",
    "utc_now",
]

PAYMENT_CREATED: Final = "pulse.payment.created"
PAYMENT_UPDATED: Final = "pulse.payment.updated"
PAYMENT_DELETED: Final = "pulse.payment.deleted"
FRAUD_DECISION: Final = "pulse.fraud.decision"
NOTIFICATION: Final = "pulse.notification"
STATS: Final = "pulse.stats"
HEALTH: Final = "pulse.health"
WEBHOOK_ENDPOINT_DISABLED: Final = "pulse.webhook.endpoint_disabled"

# Namespace for the name-based (v5) UUIDs that make event ids deterministic.
_EVENT_NAMESPACE: Final = uuid.UUID("6f1c9c1e-8d55-4c0b-9a7e-5b0f3c2d4e11")
_NAMESPACE_BYTES: Final = _EVENT_NAMESPACE.bytes


def stable_event_id(*parts: str) -> str:
    """A UUID determined by ``parts`` (a stream record's eventID, plus a stage suffix).

    ``str(uuid.uuid5(namespace, "/".join(parts)))``, written out: it runs for every
    stream record, and building a ``UUID`` object only to print it was most of its cost.
    """
    name = "/".join(parts).encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])  # noqa: S324 - version 5 is SHA-1
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_timestamp(ts: datetime) -> str:
    """``ts`` as ISO-8601 UTC with milliseconds (``2026-01-01T12:00:00.000Z``): the form of
    every time a payment or an event carries, so such times compare as strings."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event; ``traceparent`` is the distributed-tracing extension."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: str = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = None
    time: str
    datacontenttype: str = "application/json"
    data: dict[str, Any]
    traceparent: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_none=True))

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        """Parse an event; raises ``pydantic.ValidationError`` or ``orjson.JSONDecodeError``."""
        return cls.model_validate(orjson.loads(raw))

    @property
    def trace_id(self) -> str | None:
        """The trace id inside ``traceparent`` (W3C: version-traceid-parentid-flags)."""
        if not self.traceparent:
            return None
        parts = self.traceparent.split("-")
        return parts[1] if len(parts) == 4 else None  # noqa: PLR2004 - W3C field count


def new_event(
    *,
    type: str,  # noqa: A002 - the CloudEvents attribute is called type
    source: str,
    data: dict[str, Any],
    subject: str | None = None,
    id: str | None = None,  # noqa: A002 - the CloudEvents attribute is called id
    time: datetime | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    return CloudEvent(
        id=id or str(uuid4()),
        source=source,
        type=type,
        subject=subject,
        time=iso_timestamp(time or utc_now()),
        data=data,
        traceparent=traceparent,
    )


def new_traceparent() -> str:
    """A fresh W3C traceparent (sampled)."""
    return f"00-{uuid4().hex}-{uuid4().hex[:16]}-01"

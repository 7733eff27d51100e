"""What identifies a request besides its body: the ``Idempotency-Key`` header and the payment
id it determines, the W3C ``traceparent`` header, and a payment id in a path. Pure.

A malformed idempotency key is refused (400); a traceparent that is not valid is ignored
(``None``); a path's id that is not a UUID names no payment (``None``).
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from pulse.ids import uuid4
from pulse.problems import bad_request

__all__ = [
    "IDEMPOTENCY_KEY_PATTERN",
    "parse_idempotency_key",
    "parse_payment_id",
    "parse_traceparent",
    "payment_id_for_key",
]

# Printable ASCII; HTTP strips surrounding blanks, so the first and last are not blank.
IDEMPOTENCY_KEY_PATTERN: Final = r"^[!-~](?:[ -~]{0,253}[!-~])?$"
_IDEMPOTENCY_KEY: Final = re.compile(IDEMPOTENCY_KEY_PATTERN)
_TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
# Namespace of payment ids derived from idempotency keys: the same key, the same payment.
_PAYMENT_NAMESPACE: Final = uuid.UUID("4b2d7f0e-3c1a-5e9b-8d6f-2a7c9e1b5d30")


def parse_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header, or ``None``; raises a 400 problem if malformed."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise bad_request(
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        )
    return value


def payment_id_for_key(key: str | None) -> str:
    """The payment id: determined by the idempotency key, random without one."""
    if key is None:
        return str(uuid4())
    return str(uuid.uuid5(_PAYMENT_NAMESPACE, key))


def parse_traceparent(value: str | None) -> str | None:
    """A valid W3C ``traceparent`` (version 00), lower-cased; ``None`` if absent or invalid."""
    if value is None:
        return None
    candidate = value.strip().lower()
    match = _TRACEPARENT.fullmatch(candidate)
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return candidate


def parse_payment_id(value: str) -> str | None:
    """The canonical form of a payment id, or ``None`` when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None

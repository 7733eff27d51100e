"""Webhook endpoints' signing secrets: their form, a new one, where they are kept, and
reading them (the notify worker's part). Storing, rotating and removing them is
:class:`pulse.webhook_endpoints.WebhookEndpoints`' (that module re-exports the names its
callers import from here).

A secret is a Standard Webhooks secret, ``whsec_<base64 of 24 random bytes>``
(:func:`new_secret`), shown once (at creation, at rotation) and kept only as a SecureString
parameter: ``/{prefix}webhooks/{id}/secret`` holds the current one; during a rotation's
overlap the one it replaced is kept in ``…/secret-previous``
(:func:`previous_secret_parameter`) as JSON ``{"secret", "expires_at"}``, and deliveries
carry a signature by each (:func:`read_signing_secrets`, :meth:`SigningSecrets.valid`).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

__all__ = [
    "SECRET_PREFIX",
    "SigningSecrets",
    "new_secret",
    "previous_secret_parameter",
    "read_signing_secrets",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret
_SECRET_BYTES: Final = 24


@dataclass(frozen=True)
class SigningSecrets:
    """An endpoint's secrets: the current one, and the one it replaced with its expiry
    (epoch seconds) during a rotation's overlap."""

    current: str = field(repr=False)
    previous: str | None = field(default=None, repr=False)
    previous_expires_at: float | None = None

    def valid(self, now: float) -> tuple[str, ...]:
        """The secrets that sign a delivery at ``now``: the current one first."""
        if self.previous is not None and (self.previous_expires_at or 0) > now:
            return (self.current, self.previous)
        return (self.current,)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def previous_secret_parameter(secret_parameter: str) -> str:
    """Where the secret a rotation replaced is kept, beside the current one's parameter."""
    return f"{secret_parameter}-previous"


def _previous(value: str) -> tuple[str, float] | None:
    try:
        data = orjson.loads(value)
        return str(data["secret"]), datetime.fromisoformat(data["expires_at"]).timestamp()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def read_signing_secrets(ssm: Any, secret_parameter: str) -> SigningSecrets | None:
    """An endpoint's secrets from SSM (one ``GetParameters`` call), or None if its current
    secret does not exist (the endpoint was removed). Raises AWS's errors as they come."""
    previous_name = previous_secret_parameter(secret_parameter)
    got = ssm.get_parameters(Names=[secret_parameter, previous_name], WithDecryption=True)
    values = {p["Name"]: str(p["Value"]) for p in got.get("Parameters", [])}
    current = values.get(secret_parameter)
    if current is None:
        return None
    previous = _previous(values[previous_name]) if previous_name in values else None
    if previous is None:
        return SigningSecrets(current)
    return SigningSecrets(current, previous[0], previous[1])

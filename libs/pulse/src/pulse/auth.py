"""JWT connection tokens (PyJWT): issuing dev tokens and verifying them.

Claims: ``sub`` (the account or user id), ``roles`` (a list, e.g. ``["ops"]``), ``exp``
(required). The algorithm is pinned by the verifier, never taken from the token header.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from pulse.errors import PermanentError

__all__ = [
    "Claims",
    "InvalidTokenError",
    "TokenExpiredError",
    "claims_from_payload",
    "issue_token",
    "verify_token",
]


class InvalidTokenError(PermanentError):
    """The token is malformed, tampered with, or signed with another key or algorithm."""


class TokenExpiredError(InvalidTokenError):
    """The token was valid but its ``exp`` has passed; the client should refresh it."""


@dataclass(frozen=True)
class Claims:
    sub: str
    roles: frozenset[str]
    exp: int

    @property
    def is_ops(self) -> bool:
        return "ops" in self.roles


def issue_token(
    secret: str, *, sub: str, roles: list[str] | None = None, ttl_seconds: int = 3600
) -> str:
    """An HS256 token for development (``pulse token``)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub,
        "roles": roles or [],
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def verify_token(token: str, secret: str, *, leeway: float = 0.0) -> Claims:
    """Verify an HS256 token; raises :class:`TokenExpiredError` or :class:`InvalidTokenError`."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            leeway=leeway,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpiredError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidTokenError(f"invalid token: {exc}") from exc
    return claims_from_payload(payload)


def claims_from_payload(payload: dict[str, Any]) -> Claims:
    """Claims from a verified token's payload; :class:`InvalidTokenError` if malformed."""
    roles = payload.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidTokenError("invalid token: roles must be a list of strings")
    sub = payload["sub"]
    if not isinstance(sub, str) or not sub:
        raise InvalidTokenError("invalid token: sub must be a non-empty string")
    return Claims(sub=sub, roles=frozenset(roles), exp=int(payload["exp"]))

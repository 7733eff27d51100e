"""JWTs (PyJWT): issuing development tokens, and verifying tokens in every service alike.

Claims: ``sub`` (the account or user id), ``roles`` (a list, e.g. ``["ops"]``), ``exp``
(required). :class:`TokenVerifier` accepts one algorithm, from the settings, never from the
token's header: HS256 with the shared secret (development) or RS256 / ES256 with keys from a
JWKS URL (production), so a token signed with another algorithm (``none``, or HS256 with the
public key as secret) is refused. A token verified once is remembered (by its whole text,
signature included) for up to a minute, so a client that sends the same token with every
request pays for one signature check a minute; its ``exp`` is still checked every time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import jwt
from cachetools import TTLCache

from pulse.errors import PermanentError, RetryableError
from pulse.logging import get_logger
from pulse.settings import DEV_JWT_SECRET

if TYPE_CHECKING:
    from pulse.settings import CredentialSettings

log = get_logger("pulse.auth")

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "Claims",
    "InvalidTokenError",
    "TokenExpiredError",
    "TokenVerifier",
    "VerifierUnavailableError",
    "claims_from_payload",
    "issue_token",
    "verify_token",
]


class InvalidTokenError(PermanentError):
    """The token is malformed, tampered with, or signed with another key or algorithm."""


class TokenExpiredError(InvalidTokenError):
    """The token was valid but its ``exp`` has passed; the client should refresh it."""


class VerifierUnavailableError(RetryableError):
    """The JWKS could not be fetched: not the client's fault, try again later."""


ASYMMETRIC_ALGORITHMS: Final = frozenset({"RS256", "ES256"})
_VERIFIED_TOKENS: Final = 10_000
_VERIFIED_SECONDS: Final = 60


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


class TokenVerifier:
    """Verifies JWTs with one pinned algorithm (see the module docstring)."""

    def __init__(
        self,
        *,
        algorithm: str,
        secret: str,
        jwks_url: str | None = None,
        jwks_cache_seconds: int = 300,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if not jwks_url:
                raise ValueError(f"{algorithm} needs a JWKS URL")
        elif algorithm != "HS256":
            raise ValueError(f"unsupported JWT algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._required = [
            "exp",
            "sub",
            *(["iss"] if issuer else []),
            *(["aud"] if audience else []),
        ]
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=jwks_cache_seconds, timeout=5)
            if algorithm in ASYMMETRIC_ALGORITHMS and jwks_url
            else None
        )
        self._verified: TTLCache[str, Claims] = TTLCache(
            maxsize=_VERIFIED_TOKENS, ttl=_VERIFIED_SECONDS
        )

    @classmethod
    def from_settings(cls, settings: CredentialSettings) -> TokenVerifier:
        secret = settings.jwt_secret.get_secret_value()
        if settings.jwt_algorithm == "HS256" and secret == DEV_JWT_SECRET:
            log.warning(
                "PULSE_JWT_SECRET is the public development secret: anyone can sign tokens "
                "this service accepts; set a secret of your own outside development"
            )
        return cls(
            algorithm=settings.jwt_algorithm,
            secret=secret,
            jwks_url=settings.jwks_url,
            jwks_cache_seconds=settings.jwks_cache_seconds,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    async def verify(self, token: str) -> Claims:
        """The token's claims; raises TokenExpiredError, InvalidTokenError or
        VerifierUnavailableError."""
        known = self._verified.get(token)
        if known is not None:
            if known.exp <= time.time():
                raise TokenExpiredError("token expired")
            return known
        claims = await self._check(token)
        self._verified[token] = claims
        return claims

    async def _check(self, token: str) -> Claims:
        key: Any = self._secret
        if self._jwks is not None:
            key = await asyncio.to_thread(self._signing_key, token)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpiredError("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"invalid token: {exc}") from exc
        return claims_from_payload(payload)

    def _signing_key(self, token: str) -> Any:
        assert self._jwks is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"invalid token: {exc}") from exc
        if header.get("alg") != self.algorithm:
            raise InvalidTokenError("invalid token: algorithm not allowed")
        try:
            return self._jwks.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError as exc:
            raise VerifierUnavailableError(str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"invalid token: {exc}") from exc

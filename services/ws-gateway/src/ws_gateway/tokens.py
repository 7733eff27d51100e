"""Connection tokens: JWTs verified with one pinned algorithm.

HS256 with the shared secret (development) or RS256 / ES256 with keys from a JWKS URL
(production). The algorithm comes from the settings, never from the token's header, so a
token signed with another algorithm (``none``, or HS256 with the public key as secret) is
refused. ``exp`` and ``sub`` are required; ``roles`` is an optional list of strings.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import jwt

from pulse.auth import Claims, InvalidTokenError, TokenExpiredError, claims_from_payload

__all__ = ["ASYMMETRIC_ALGORITHMS", "TokenVerifier", "VerifierUnavailableError"]

ASYMMETRIC_ALGORITHMS: Final = frozenset({"RS256", "ES256"})


class VerifierUnavailableError(Exception):
    """The JWKS could not be fetched: not the client's fault, try again later."""


class TokenVerifier:
    def __init__(
        self,
        *,
        algorithm: str,
        secret: str,
        jwks_url: str | None = None,
        jwks_cache_seconds: int = 300,
    ) -> None:
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if not jwks_url:
                raise ValueError(f"{algorithm} needs a JWKS URL")
        elif algorithm != "HS256":
            raise ValueError(f"unsupported JWT algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._secret = secret
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=jwks_cache_seconds, timeout=5)
            if algorithm in ASYMMETRIC_ALGORITHMS and jwks_url
            else None
        )

    async def verify(self, token: str) -> Claims:
        """The token's claims; raises TokenExpiredError, InvalidTokenError or
        VerifierUnavailableError."""
        key: Any = self._secret
        if self._jwks is not None:
            key = await asyncio.to_thread(self._signing_key, token)
        try:
            payload = jwt.decode(
                token, key, algorithms=[self.algorithm], options={"require": ["exp", "sub"]}
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

"""Who is calling: a bearer credential in, a :class:`Principal` out (or why not).

Two kinds of credential travel as ``Authorization: Bearer <credential>`` (RFC 6750):

- a **JWT** (:class:`~pulse.auth.TokenVerifier`: one pinned algorithm, ``exp`` required):
  ``sub`` is the account, ``roles: ["ops"]`` makes an operator. It may do everything its
  account may (every scope);
- an **API key** (``psk_…``, :mod:`pulse.api_keys`): bound to one account, limited to its
  scopes.

API keys are looked up in the API-keys table through a cache of ``key_cache_seconds``
(default 5): a revoked key is refused by every replica within that time, since each
re-reads the key once its cached copy is older. While a key is in use its ``last_used_at``
is written at most once per ``touch_interval_seconds``, in the background.

Refusals are :class:`CredentialError` with a ``reason`` from a small fixed set (a metric
label) and a description safe to show the caller; no secret is ever logged or returned.
:func:`unauthorized` and :func:`insufficient_scope` are their HTTP answers: RFC 9457
problems with the ``WWW-Authenticate`` challenge of RFC 6750 (§3: no error code when the
request carried no bearer credential at all; ``invalid_token`` when it carried a bad one;
``insufficient_scope`` with the scope needed).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal

from cachetools import TTLCache
from prometheus_client import Counter

from pulse.api_keys import API_KEY_PREFIX, SCOPES, parse_api_key
from pulse.auth import InvalidTokenError, TokenExpiredError, VerifierUnavailableError
from pulse.errors import PulseError, RetryableError
from pulse.logging import get_logger
from pulse.problems import Problem

if TYPE_CHECKING:
    from pulse.api_keys import ApiKey, ApiKeyTable
    from pulse.auth import TokenVerifier

__all__ = [
    "AUTH_FAILURES",
    "REALM",
    "Authenticator",
    "CredentialError",
    "CredentialReason",
    "CredentialUnavailableError",
    "Principal",
    "bearer_credential",
    "insufficient_scope",
    "unauthorized",
]

log = get_logger("pulse.credentials")

CredentialReason = Literal["missing", "malformed", "expired", "invalid", "revoked"]
REASONS: Final[tuple[CredentialReason, ...]] = (
    "missing",
    "malformed",
    "expired",
    "invalid",
    "revoked",
)
REALM: Final = "pulse"
_CACHE_ENTRIES: Final = 10_000

AUTH_FAILURES: Final = Counter(
    "pulse_http_auth_failures_total",
    "HTTP requests refused for their credential (401), by reason",
    ["reason"],
)
for _reason in REASONS:
    AUTH_FAILURES.labels(_reason)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``account_id`` is the account it acts for (a JWT's ``sub``, an API key's account);
    ``scopes`` what it may do there; ``roles`` a JWT's roles (``ops`` may do everything).
    """

    kind: Literal["jwt", "api_key"]
    account_id: str
    scopes: frozenset[str]
    roles: frozenset[str] = frozenset()
    key_id: str | None = None

    @property
    def is_ops(self) -> bool:
        return "ops" in self.roles

    @property
    def label(self) -> str:
        """How logs name the caller: the account, and the key id of an API key."""
        return f"key:{self.key_id}" if self.key_id else f"jwt:{self.account_id}"


class CredentialError(PulseError):
    """The credential is missing, malformed, expired, invalid or revoked: 401."""

    def __init__(self, reason: CredentialReason, description: str) -> None:
        super().__init__(description)
        self.reason: CredentialReason = reason
        self.description = description


class CredentialUnavailableError(RetryableError):
    """The credential could not be checked now (JWKS or key table unreachable): 503."""


def bearer_credential(authorization: str | None) -> str:
    """The credential of an ``Authorization: Bearer`` header.

    :class:`CredentialError` ``missing`` when the request has no bearer credential (no
    header, or another scheme such as Basic), ``malformed`` for a bearer without one.
    """
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        raise CredentialError("missing", "send Authorization: Bearer <credential>")
    credential = credential.strip()
    if not credential:
        raise CredentialError("malformed", "the Authorization header must be: Bearer <credential>")
    return credential


def unauthorized(exc: CredentialError) -> Problem:
    """The 401 problem for ``exc``, with its ``WWW-Authenticate`` challenge."""
    challenge = f'Bearer realm="{REALM}"'
    if exc.reason != "missing":
        challenge += f', error="invalid_token", error_description="{exc.description}"'
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        exc.description,
        headers={"WWW-Authenticate": challenge},
    )


def insufficient_scope(scope: str) -> Problem:
    """The 403 problem of a credential valid but without ``scope``."""
    return Problem(
        403,
        "insufficient-scope",
        "Insufficient scope",
        f"the credential lacks the scope {scope}",
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"'
            )
        },
    )


class Authenticator:
    """Turns a bearer credential into a :class:`Principal` (see the module docstring)."""

    def __init__(
        self,
        verifier: TokenVerifier,
        keys: ApiKeyTable | None,
        *,
        key_cache_seconds: float = 5.0,
        touch_interval_seconds: float = 60.0,
    ) -> None:
        self._verifier = verifier
        self._keys = keys
        self._cache: TTLCache[str, ApiKey | None] | None = (
            TTLCache(maxsize=_CACHE_ENTRIES, ttl=key_cache_seconds)
            if key_cache_seconds > 0
            else None
        )
        self._touch_interval = touch_interval_seconds
        self._touched: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def authenticate(self, credential: str) -> Principal:
        """The principal of ``credential``; :class:`CredentialError` (401) or
        :class:`CredentialUnavailableError` (503)."""
        if credential.startswith(API_KEY_PREFIX):
            return await self._api_key(credential)
        return await self._jwt(credential)

    async def _jwt(self, token: str) -> Principal:
        try:
            claims = await self._verifier.verify(token)
        except TokenExpiredError as exc:
            raise CredentialError("expired", "the token has expired") from exc
        except VerifierUnavailableError as exc:
            raise CredentialUnavailableError("token keys unavailable, retry") from exc
        except InvalidTokenError as exc:
            raise CredentialError("invalid", "the token is not valid") from exc
        return Principal("jwt", claims.sub, SCOPES, claims.roles)

    async def _api_key(self, credential: str) -> Principal:
        parsed = parse_api_key(credential)
        if parsed is None:
            raise CredentialError("malformed", "not a well-formed API key")
        key_id, secret = parsed
        key = await self._key(key_id)
        if key is None or not key.matches(secret):
            raise CredentialError("invalid", "unknown API key")
        if key.revoked:
            raise CredentialError("revoked", "the API key has been revoked")
        self._note_use(key)
        return Principal("api_key", key.account_id, key.scopes, key_id=key.key_id)

    async def _key(self, key_id: str) -> ApiKey | None:
        if self._keys is None:
            return None
        cache = self._cache
        if cache is not None and key_id in cache:
            return cache[key_id]
        try:
            key = await asyncio.to_thread(self._keys.get, key_id)
        except RetryableError as exc:
            raise CredentialUnavailableError("API keys unavailable, retry") from exc
        except PulseError as exc:
            # Refused for good (no IAM grant, say): an operator must act; the caller is not
            # at fault, so it gets 503, not a refusal of its key.
            log.error("the API-key table refuses reads", error=str(exc))  # noqa: TRY400
            raise CredentialUnavailableError("API keys unavailable, retry") from exc
        if cache is not None:
            cache[key_id] = key
        return key

    def _note_use(self, key: ApiKey) -> None:
        """Write ``last_used_at`` in the background, at most once per touch interval."""
        now = time.monotonic()
        if now - self._touched.get(key.key_id, float("-inf")) < self._touch_interval:
            return
        self._touched[key.key_id] = now
        if len(self._touched) > _CACHE_ENTRIES:
            self._touched.clear()
        task = asyncio.create_task(self._touch(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _touch(self, key: ApiKey) -> None:
        assert self._keys is not None
        stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        try:
            await asyncio.to_thread(self._keys.touch, key, now=stamp)
        except PulseError as exc:  # the use still counts; only the stamp is late
            log.warning("could not record an API key's use", key_id=key.key_id, error=str(exc))

    async def close(self) -> None:
        """Wait for the ``last_used_at`` writes still running."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

"""An idempotency guard in Redis: run a piece of work once per key, even across crashes.

One Redis hash per key, ``{prefix}{idem:{scope}:{key}}`` (the whole name after the prefix
is its hash tag: on Redis Cluster the record, its lease and every script on it are on the
node of that one slot):

- ``state`` ``in_progress``: a worker owns the key. ``owner`` is its random token, and the
  key's TTL is the lease: the worker renews it while it works (through the SQS consumer's
  heartbeat, :func:`pulse.consumer.on_heartbeat`). If the worker dies, the lease runs out,
  the key disappears and the next delivery takes over.
- ``state`` ``completed``: the work is done. ``hash`` is the SHA-256 of the payload and
  ``result`` what the work returned; the key lives ``completed_ttl_seconds``. The same key
  with the same payload returns the stored result without running the work; with another
  payload it is an :class:`IdempotencyConflictError`.

Every transition is one Lua script, checked and applied together. With
``PULSE_REDIS_WAIT_REPLICAS`` set, completing waits until that many replicas have the
record (:mod:`pulse.replication`): a completion lost with a failed master would let a
duplicate delivery run the work again; one not acknowledged raises a retryable error, and
the retry finds the key completed. Unlike Powertools'
idempotency utility (whose update and delete are unconditional), completing and releasing
are conditional on the owner token: a slow worker whose lease expired and was taken over
can neither overwrite the new owner's record nor delete it — its ``complete`` raises
:class:`LeaseLostError` and nothing is written.

The guard protects the record, not the outside world: effects the work makes before its
lease is lost must themselves be idempotent (conditional writes, once-per-id appends); the
guard makes sure they are attempted by one live owner at a time and are skipped once done.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import orjson

from pulse.consumer import on_heartbeat
from pulse.errors import PermanentError, RetryableError
from pulse.logging import get_logger
from pulse.replication import LuaScript, Replication, ScriptCall, ScriptRunner

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pulse.clients import RedisClient
    from pulse.consumer import SqsConsumerSettings
    from pulse.events import CloudEvent

__all__ = [
    "Claim",
    "IdempotencyConflictError",
    "IdempotencyGuard",
    "InProgressError",
    "LeaseLostError",
    "Outcome",
    "canonical_event",
    "guard_for",
    "idempotency_record_key",
    "payload_hash",
]

log = get_logger("pulse.idempotency")

IN_PROGRESS: Final = b"in_progress"
COMPLETED: Final = b"completed"

# KEYS[1]; ARGV: owner, lease ms, payload hash.
# -> {'acquired'} | {'completed', result} | {'busy', pttl} | {'conflict'}
_ACQUIRE: Final = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'in_progress', 'owner', ARGV[1], 'hash', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return {'acquired'}
end
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[3] then
  return {'conflict'}
end
if state == 'completed' then
  return {'completed', redis.call('HGET', KEYS[1], 'result') or ''}
end
return {'busy', tostring(redis.call('PTTL', KEYS[1]))}
"""

# KEYS[1]; ARGV: owner, lease ms -> 1 renewed, 0 not the owner (or not in progress)
_RENEW: Final = """
local held = redis.call('HMGET', KEYS[1], 'state', 'owner')
if held[1] ~= 'in_progress' or held[2] ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS[1]; ARGV: owner, result, completed ttl ms -> 1 completed, 0 not the owner
_COMPLETE: Final = LuaScript("""
local held = redis.call('HMGET', KEYS[1], 'state', 'owner')
if held[1] ~= 'in_progress' or held[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'completed', 'result', ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
""")

# KEYS[1]; ARGV: owner -> 1 released, 0 not the owner
_RELEASE: Final = """
local held = redis.call('HMGET', KEYS[1], 'state', 'owner')
if held[1] ~= 'in_progress' or held[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


class IdempotencyConflictError(PermanentError):
    """The key was completed with another payload: the same id reused for different work."""


class InProgressError(RetryableError):
    """Another live worker holds the key; try again when its lease may have run out."""


class LeaseLostError(RetryableError):
    """This worker no longer owns the key (its lease ran out and may have been taken over)."""


def idempotency_record_key(prefix: str, scope: str, idempotency_key: str) -> str:
    """The Redis hash of ``idempotency_key`` in ``scope``: ``{prefix}{idem:{scope}:{key}}``."""
    return f"{prefix}{{idem:{scope}:{idempotency_key}}}"


def payload_hash(payload: bytes) -> str:
    """SHA-256 (hex) of the payload; callers pass a canonical form of what the work reads."""
    return hashlib.sha256(payload).hexdigest()


def canonical_event(event: CloudEvent) -> bytes:
    """The event as JSON with sorted keys: the payload to hash for an event-id key."""
    return orjson.dumps(
        event.model_dump(mode="json", exclude_none=True), option=orjson.OPT_SORT_KEYS
    )


@dataclass(frozen=True)
class Outcome:
    """What :meth:`IdempotencyGuard.run` returned: the result, and whether it was replayed."""

    result: bytes
    replayed: bool


@dataclass(frozen=True)
class Claim:
    """Ownership of one key: ``owner`` is the token the conditional scripts check."""

    key: str
    owner: str


class IdempotencyGuard:
    """Runs work at most once to completion per key, under a renewable lease (module doc)."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        scope: str,
        *,
        lease_seconds: float = 60.0,
        completed_ttl_seconds: float = 7 * 24 * 3600,
        replication: Replication | None = None,
    ) -> None:
        if lease_seconds <= 0 or completed_ttl_seconds <= 0:
            raise ValueError("lease_seconds and completed_ttl_seconds must be positive")
        self._prefix = prefix
        self._scope = scope
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._completed_ms = max(1, int(completed_ttl_seconds * 1000))
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._runner = ScriptRunner(redis, replication)
        self._release = redis.register_script(_RELEASE)

    def key(self, idempotency_key: str) -> str:
        return idempotency_record_key(self._prefix, self._scope, idempotency_key)

    async def acquire(self, idempotency_key: str, payload: bytes) -> Claim | Outcome:
        """Take the key (a :class:`Claim`) or return the completed :class:`Outcome`.

        Raises :class:`InProgressError` if another owner's lease is live and
        :class:`IdempotencyConflictError` if the key holds another payload.
        """
        key = self.key(idempotency_key)
        owner = secrets.token_hex(16)
        reply = await self._acquire(keys=[key], args=[owner, self._lease_ms, payload_hash(payload)])
        status = bytes(reply[0])
        if status == b"acquired":
            return Claim(key, owner)
        if status == b"completed":
            return Outcome(bytes(reply[1]), replayed=True)
        if status == b"busy":
            wait = max(int(reply[1]), 0) / 1000
            raise InProgressError(f"{idempotency_key} is being handled elsewhere", delay=wait)
        raise IdempotencyConflictError(
            f"idempotency key {idempotency_key} was used with a different payload"
        )

    async def renew(self, claim: Claim) -> bool:
        """Extend the lease; False if ``claim`` is no longer the owner."""
        return bool(await self._renew(keys=[claim.key], args=[claim.owner, self._lease_ms]))

    async def complete(self, claim: Claim, result: bytes) -> None:
        """Mark the key done with ``result``; :class:`LeaseLostError` if not the owner,
        :class:`~pulse.replication.ReplicationShortfallError` if replicas did not confirm."""
        call = ScriptCall(_COMPLETE, (claim.key,), (claim.owner, result, self._completed_ms))
        done = await self._runner.call(call, idempotent=False)
        if not done:
            raise LeaseLostError(f"lease on {claim.key} lost before completion")

    async def release(self, claim: Claim) -> bool:
        """Give the key up (the work failed); False if it was no longer ours."""
        return bool(await self._release(keys=[claim.key], args=[claim.owner]))

    async def run(
        self, idempotency_key: str, payload: bytes, work: Callable[[], Awaitable[bytes]]
    ) -> Outcome:
        """Run ``work`` once per key to completion; a completed key returns its stored result.

        Inside an SQS consumer handler the lease is renewed on each visibility heartbeat,
        and losing it stops the handler. If ``work`` raises (or is cancelled) the key is
        released so that a retry can run it again. Raises what :meth:`acquire` and
        :meth:`complete` raise.
        """
        got = await self.acquire(idempotency_key, payload)
        if isinstance(got, Outcome):
            log.debug("already done: result replayed", idempotency_key=idempotency_key)
            return got
        claim = got

        async def renew() -> bool:
            return await self.renew(claim)

        unregister = on_heartbeat(renew)
        try:
            result = await work()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.release(claim)
            raise
        finally:
            if unregister is not None:
                unregister()
        await self.complete(claim, result)
        return Outcome(result, replayed=False)


def guard_for(redis: RedisClient, settings: SqsConsumerSettings, scope: str) -> IdempotencyGuard:
    """The guard of a worker, from its ``PULSE_IDEMPOTENCY_*`` settings and Redis prefix."""
    return IdempotencyGuard(
        redis,
        settings.redis_prefix,
        scope,
        lease_seconds=settings.idempotency_lease_seconds,
        completed_ttl_seconds=settings.idempotency_ttl_seconds,
        replication=Replication.of(settings),
    )

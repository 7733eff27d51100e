"""Account activity the rules need, kept in Redis and updated in one Lua script per payment.

Keys (under the Redis prefix; an account's keys share the hash tag ``{fraud:{account_id}}``,
so its script runs on one node of a Redis Cluster):

- ``{prefix}{fraud:{account_id}}:velocity`` — sorted set, member ``{event_id}|{currency}|{amount}``,
  score the payment's time in ms. The member is fixed by the event, so a replayed event
  does not count twice. Entries older than the window are trimmed; the key expires after it.
- ``{prefix}{fraud:{account_id}}:country`` — hash ``event``, ``country``, ``previous``: the last
  payment's country and the one before, so a replay of the last event is compared with the
  same country as the first time.
- ``{prefix}{blocklist}:accounts`` and ``{prefix}{blocklist}:merchants`` — sets of blocked
  ids, managed with ``pulse fraud block|unblock`` (:mod:`pulse.blocklists`); read by a
  second script in the same round trip (per node), so a block applies to the next payment.

With ``PULSE_REDIS_WAIT_REPLICAS`` set, recording waits until that many replicas have the
activity (:mod:`pulse.replication`): a payment lost from the window with a failed master
would let the next ones through a velocity limit. Recording is idempotent, so a retry after
a shortfall changes nothing twice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Final

from fraud_worker.rules import AccountActivity
from pulse.blocklists import blocklist_key
from pulse.replication import LuaScript, ScriptCall, ScriptRunner

if TYPE_CHECKING:
    from fraud_worker.rules import PaymentFacts
    from pulse.clients import RedisClient
    from pulse.replication import Replication

__all__ = ["AccountActivityStore", "account_tag", "velocity_key"]

# KEYS[1] velocity zset, KEYS[2] country hash
# ARGV: event id, time ms, window ms, amount, currency, country ('' if none), country ttl s
_RECORD_LUA: Final = LuaScript("""
local t = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], t, ARGV[1] .. '|' .. ARGV[5] .. '|' .. ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (t - window))
redis.call('PEXPIRE', KEYS[1], window + 60000)
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (t - window), t)
local sum = 0
for _, m in ipairs(members) do
  local currency, amount = string.match(m, '|([^|]*)|([^|]*)$')
  if currency == ARGV[5] then sum = sum + tonumber(amount) end
end
local previous = ''
if ARGV[6] ~= '' then
  local stored = redis.call('HMGET', KEYS[2], 'event', 'country', 'previous')
  if stored[1] == ARGV[1] then
    previous = stored[3] or ''
  else
    previous = stored[2] or ''
    redis.call('HSET', KEYS[2], 'event', ARGV[1], 'country', ARGV[6], 'previous', previous)
  end
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
end
return {#members, string.format('%.2f', sum), previous}
""")

# KEYS[1] blocked accounts, KEYS[2] blocked merchants; ARGV: account id, merchant id
_BLOCKED_LUA: Final = LuaScript("""
return {redis.call('SISMEMBER', KEYS[1], ARGV[1]), redis.call('SISMEMBER', KEYS[2], ARGV[2])}
""")


def account_tag(prefix: str, account_id: str) -> str:
    """The start of every activity key of the account: the prefix and its hash tag."""
    return f"{prefix}{{fraud:{account_id}}}"


def velocity_key(prefix: str, account_id: str) -> str:
    """The account's velocity window (a sorted set)."""
    return f"{account_tag(prefix, account_id)}:velocity"


class AccountActivityStore:
    """Records a payment in its account's activity and returns the activity the rules see."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        *,
        window_seconds: int,
        country_memory_seconds: int,
        replication: Replication | None = None,
    ) -> None:
        self._prefix = prefix
        self._window_ms = window_seconds * 1000
        self._country_ttl = country_memory_seconds
        self._runner = ScriptRunner(redis, replication)

    def velocity_key(self, account_id: str) -> str:
        return velocity_key(self._prefix, account_id)

    def country_key(self, account_id: str) -> str:
        return f"{account_tag(self._prefix, account_id)}:country"

    def blocklist_key(self, kind: str) -> str:
        """``kind`` is ``accounts`` or ``merchants``."""
        return blocklist_key(self._prefix, kind)

    def script_calls(self, event_id: str, payment: PaymentFacts) -> list[ScriptCall]:
        """What :meth:`record` runs: the account's activity update (durable), then the
        blocklists' read. Pure: nothing is sent."""
        record = ScriptCall(
            _RECORD_LUA,
            (self.velocity_key(payment.account_id), self.country_key(payment.account_id)),
            (
                event_id,
                int(payment.occurred_at.timestamp() * 1000),
                self._window_ms,
                str(payment.amount),
                payment.currency,
                payment.country or "",
                self._country_ttl,
            ),
        )
        blocked = ScriptCall(
            _BLOCKED_LUA,
            (self.blocklist_key("accounts"), self.blocklist_key("merchants")),
            (payment.account_id, payment.merchant_id),
            durable=False,
        )
        return [record, blocked]

    async def record(self, event_id: str, payment: PaymentFacts) -> AccountActivity:
        """Add the payment (once per ``event_id``); read the window around it and the blocklists."""
        calls = self.script_calls(event_id, payment)
        activity, blocks = await self._runner.run(calls, idempotent=True)
        count, total, previous = activity
        blocked_account, blocked_merchant = blocks
        previous_text = previous.decode() if isinstance(previous, bytes) else str(previous)
        total_text = total.decode() if isinstance(total, bytes) else str(total)
        return AccountActivity(
            count=int(count),
            amount_sum=Decimal(total_text),
            previous_country=previous_text or None,
            blocked_account=bool(blocked_account),
            blocked_merchant=bool(blocked_merchant),
        )

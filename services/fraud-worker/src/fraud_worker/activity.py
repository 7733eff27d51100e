"""Account activity the rules need, kept in Redis and updated in one Lua script per payment.

Keys (under the Redis prefix):

- ``{prefix}fraud:velocity:{account_id}`` — sorted set, member ``{event_id}|{currency}|{amount}``,
  score the payment's time in ms. The member is fixed by the event, so a replayed event
  does not count twice. Entries older than the window are trimmed; the key expires after it.
- ``{prefix}fraud:country:{account_id}`` — hash ``event``, ``country``, ``previous``: the last
  payment's country and the one before, so a replay of the last event is compared with the
  same country as the first time.
- ``{prefix}fraud:blocked:accounts`` and ``{prefix}fraud:blocked:merchants`` — sets of blocked
  ids, managed with ``pulse fraud block|unblock`` (the same layout as ``pulse.cli``); read in
  the same script, so a block applies to the next payment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Final

from fraud_worker.rules import AccountActivity
from pulse.blocklists import blocklist_key

if TYPE_CHECKING:
    from fraud_worker.rules import PaymentFacts
    from pulse.clients import RedisClient

__all__ = ["AccountActivityStore"]

# KEYS[1] velocity zset, KEYS[2] country hash, KEYS[3] blocked accounts, KEYS[4] blocked merchants
# ARGV: event id, time ms, window ms, amount, currency, country ('' if none), country ttl s,
#       account id, merchant id
_RECORD_LUA: Final = """
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
return {#members, string.format('%.2f', sum), previous,
        redis.call('SISMEMBER', KEYS[3], ARGV[8]), redis.call('SISMEMBER', KEYS[4], ARGV[9])}
"""


class AccountActivityStore:
    """Records a payment in its account's activity and returns the activity the rules see."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        *,
        window_seconds: int,
        country_memory_seconds: int,
    ) -> None:
        self._prefix = prefix
        self._window_ms = window_seconds * 1000
        self._country_ttl = country_memory_seconds
        self._script = redis.register_script(_RECORD_LUA)

    def velocity_key(self, account_id: str) -> str:
        return f"{self._prefix}fraud:velocity:{account_id}"

    def country_key(self, account_id: str) -> str:
        return f"{self._prefix}fraud:country:{account_id}"

    def blocklist_key(self, kind: str) -> str:
        """``kind`` is ``accounts`` or ``merchants``."""
        return blocklist_key(self._prefix, kind)

    async def record(self, event_id: str, payment: PaymentFacts) -> AccountActivity:
        """Add the payment (once per ``event_id``); read the window around it and the blocklists."""
        result = await self._script(
            keys=[
                self.velocity_key(payment.account_id),
                self.country_key(payment.account_id),
                self.blocklist_key("accounts"),
                self.blocklist_key("merchants"),
            ],
            args=[
                event_id,
                int(payment.occurred_at.timestamp() * 1000),
                self._window_ms,
                str(payment.amount),
                payment.currency,
                payment.country or "",
                self._country_ttl,
                payment.account_id,
                payment.merchant_id,
            ],
        )
        count, total, previous, blocked_account, blocked_merchant = result
        previous_text = previous.decode() if isinstance(previous, bytes) else str(previous)
        total_text = total.decode() if isinstance(total, bytes) else str(total)
        return AccountActivity(
            count=int(count),
            amount_sum=Decimal(total_text),
            previous_country=previous_text or None,
            blocked_account=bool(blocked_account),
            blocked_merchant=bool(blocked_merchant),
        )

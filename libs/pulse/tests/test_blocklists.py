"""Blocklists written under the earlier key layout are adopted, not forgotten, on upgrade."""

from __future__ import annotations

import redis.asyncio as aioredis

from pulse.blocklists import adopt_earlier_blocklists, blocklist_key


async def test_ids_blocked_under_the_earlier_keys_stay_blocked(
    async_redis: aioredis.Redis, stack_prefix: str
) -> None:
    prefix = f"pulse:{stack_prefix}"
    await async_redis.sadd(f"{prefix}fraud:blocked:accounts", "a-1", "a-2")
    await async_redis.sadd(f"{prefix}fraud:blocked:merchants", "m-1")
    await async_redis.sadd(blocklist_key(prefix, "merchants"), "m-9")  # blocked since

    assert await adopt_earlier_blocklists(async_redis, prefix) == 3
    assert await adopt_earlier_blocklists(async_redis, prefix) == 0  # a second start

    assert await async_redis.smembers(blocklist_key(prefix, "accounts")) == {b"a-1", b"a-2"}
    assert await async_redis.smembers(blocklist_key(prefix, "merchants")) == {b"m-1", b"m-9"}
    assert not await async_redis.exists(
        f"{prefix}fraud:blocked:accounts", f"{prefix}fraud:blocked:merchants"
    )
    await async_redis.delete(blocklist_key(prefix, "accounts"), blocklist_key(prefix, "merchants"))

"""The fraud worker's blocklists: Redis sets of blocked account and merchant ids.

``pulse fraud block|unblock`` writes them; the fraud worker reads them with each payment.
Both take the key layout from here: ``{redis_prefix}{blocklist}:{kind}`` (one hash tag:
both sets are read by one script, on one node of a Redis Cluster). Before that layout they
were ``{redis_prefix}fraud:blocked:{kind}``; the fraud worker adopts such sets when it
starts (:func:`adopt_earlier_blocklists`), so an upgrade unblocks nobody.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["BLOCKLIST_KINDS", "adopt_earlier_blocklists", "blocklist_key"]

BLOCKLIST_KINDS: Final = ("accounts", "merchants")


def blocklist_key(redis_prefix: str, kind: str) -> str:
    """The Redis set holding the blocked ids of ``kind`` (``accounts`` or ``merchants``)."""
    if kind not in BLOCKLIST_KINDS:
        raise ValueError(f"unknown blocklist {kind!r}")
    return f"{redis_prefix}{{blocklist}}:{kind}"


async def adopt_earlier_blocklists(
    redis: aioredis.Redis | aioredis.RedisCluster, redis_prefix: str
) -> int:
    """Move the ids of the sets of the earlier layout (``{prefix}fraud:blocked:{kind}``)
    into :func:`blocklist_key`'s and delete those sets; how many ids were moved. Plain
    commands, each on one key (the two names are in different slots). Safe to repeat."""
    moved = 0
    for kind in BLOCKLIST_KINDS:
        earlier = f"{redis_prefix}fraud:blocked:{kind}"
        ids = await redis.smembers(earlier)
        if ids:
            await redis.sadd(blocklist_key(redis_prefix, kind), *ids)
            moved += len(ids)
        await redis.delete(earlier)
    return moved

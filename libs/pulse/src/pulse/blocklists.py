"""The fraud worker's blocklists: Redis sets of blocked account and merchant ids.

``pulse fraud block|unblock`` writes them; the fraud worker reads them with each payment.
Both take the key layout from here: ``{redis_prefix}{blocklist}:{kind}`` (one hash tag:
both sets are read by one script, on one node of a Redis Cluster).
"""

from __future__ import annotations

from typing import Final

__all__ = ["BLOCKLIST_KINDS", "blocklist_key"]

BLOCKLIST_KINDS: Final = ("accounts", "merchants")


def blocklist_key(redis_prefix: str, kind: str) -> str:
    """The Redis set holding the blocked ids of ``kind`` (``accounts`` or ``merchants``)."""
    if kind not in BLOCKLIST_KINDS:
        raise ValueError(f"unknown blocklist {kind!r}")
    return f"{redis_prefix}{{blocklist}}:{kind}"

"""Shard lineage and checkpoints: which shards to read, and where to start. Pure: no I/O.

A DynamoDB stream is a tree of shards. A shard closes (after about four hours, or when the
table's partitions split) and its records continue in one or two child shards that name it
as ``ParentShardId``. Records of one item stay in order only if a child is read after its
parent is read to the end, so:

- a shard whose checkpoint is ``SHARD_END`` is *done*;
- a shard whose parent is done — or has no parent, or whose parent is no longer listed
  because the stream trimmed it (24 h retention) — is *ready*;
- any other shard is *blocked* until its parent is done.

A shard the stream no longer lists (:func:`gone_shards`) was trimmed away, 24 hours after it
closed. If its lease never reached ``SHARD_END`` its unread records are lost: it is treated
as ended, so its children are not held up. (Only a listing taken after the lease was first
seen can say so: a lease made since the listing may be a new child of a split.) Once its
lease is at ``SHARD_END`` and each of its listed children has a lease of its own, nothing
needs the lease any more and it is deleted — which keeps the lease table from growing with
every split. (While the shard is still listed its lease must stay: it is what tells its
children that their parent is done.)

A checkpoint is the sequence number of the last record whose effects all succeeded, or
``SHARD_END``; reading resumes ``AFTER_SEQUENCE_NUMBER`` it, or at ``TRIM_HORIZON`` when
there is none, so a restart neither starts over nor skips a record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "AFTER_SEQUENCE_NUMBER",
    "SHARD_END",
    "TRIM_HORIZON",
    "GoneShards",
    "IteratorStart",
    "LineagePlan",
    "Shard",
    "gone_shards",
    "iterator_start",
    "last_sequence_number",
    "plan_shards",
    "shards_from_pages",
]

SHARD_END: Final = "SHARD_END"
TRIM_HORIZON: Final = "TRIM_HORIZON"
AFTER_SEQUENCE_NUMBER: Final = "AFTER_SEQUENCE_NUMBER"


@dataclass(frozen=True)
class Shard:
    """One shard as DescribeStream lists it."""

    shard_id: str
    parent_shard_id: str | None = None
    starting_sequence_number: str | None = None
    ending_sequence_number: str | None = None

    @property
    def closed(self) -> bool:
        """Closed shards take no new records (they still hold unread ones)."""
        return self.ending_sequence_number is not None

    @classmethod
    def from_description(cls, raw: Mapping[str, Any]) -> Shard:
        seq = raw.get("SequenceNumberRange") or {}
        return cls(
            shard_id=str(raw["ShardId"]),
            parent_shard_id=raw.get("ParentShardId") or None,
            starting_sequence_number=seq.get("StartingSequenceNumber"),
            ending_sequence_number=seq.get("EndingSequenceNumber"),
        )


def shards_from_pages(pages: Iterable[Mapping[str, Any]]) -> list[Shard]:
    """Every shard of DescribeStream pages (``StreamDescription`` each), in listed order.

    A shard listed twice (pages fetched while the stream changed) is kept once, with the
    later description, which may have closed it meanwhile.
    """
    shards: dict[str, Shard] = {}
    for page in pages:
        for raw in page.get("Shards", []):
            shard = Shard.from_description(raw)
            shards[shard.shard_id] = shard
    return list(shards.values())


@dataclass(frozen=True)
class LineagePlan:
    """What to do with each listed shard given the stored checkpoints."""

    ready: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # shard id -> parent it waits for
    done: list[str] = field(default_factory=list)


def plan_shards(shards: Iterable[Shard], checkpoints: Mapping[str, str | None]) -> LineagePlan:
    """Split ``shards`` into ready, blocked and done (see the module docstring).

    ``checkpoints`` maps shard ids to their stored checkpoint; a shard missing from it has
    none. ``ready`` keeps the listed order.
    """
    listed = {shard.shard_id for shard in shards}
    plan = LineagePlan()
    for shard in shards:
        if checkpoints.get(shard.shard_id) == SHARD_END:
            plan.done.append(shard.shard_id)
            continue
        parent = shard.parent_shard_id
        if parent is None or parent not in listed or checkpoints.get(parent) == SHARD_END:
            plan.ready.append(shard.shard_id)
        else:
            plan.blocked[shard.shard_id] = parent
    return plan


@dataclass(frozen=True)
class GoneShards:
    """Leases whose shard the stream no longer lists, by what becomes of them."""

    unfinished: list[str] = field(default_factory=list)  # never read to its end: end it
    retired: list[str] = field(default_factory=list)  # at SHARD_END, children leased: delete


def gone_shards(shards: Iterable[Shard], checkpoints: Mapping[str, str | None]) -> GoneShards:
    """The leases (``checkpoints``: every lease item's checkpoint, by shard id) of shards
    not among ``shards`` (a full listing), sorted; see the module docstring.

    An empty listing decides nothing: a stream always lists a shard.
    """
    listed: set[str] = set()
    children: dict[str, list[str]] = {}
    for shard in shards:
        listed.add(shard.shard_id)
        if shard.parent_shard_id is not None:
            children.setdefault(shard.parent_shard_id, []).append(shard.shard_id)
    gone = GoneShards()
    if not listed:
        return gone
    for shard_id in sorted(checkpoints):
        if shard_id in listed:
            continue
        if checkpoints[shard_id] != SHARD_END:
            gone.unfinished.append(shard_id)
        elif all(child in checkpoints for child in children.get(shard_id, ())):
            gone.retired.append(shard_id)
    return gone


@dataclass(frozen=True)
class IteratorStart:
    """The GetShardIterator arguments that resume after a checkpoint."""

    iterator_type: str
    sequence_number: str | None = None

    def request(self, stream_arn: str, shard_id: str) -> dict[str, str]:
        args = {
            "StreamArn": stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": self.iterator_type,
        }
        if self.sequence_number is not None:
            args["SequenceNumber"] = self.sequence_number
        return args


def iterator_start(checkpoint: str | None) -> IteratorStart:
    """Where to read a shard from; raises ``ValueError`` for a shard already at its end."""
    if checkpoint is None:
        return IteratorStart(TRIM_HORIZON)
    if checkpoint == SHARD_END:
        raise ValueError("the shard was read to its end; there is nothing to resume")
    return IteratorStart(AFTER_SEQUENCE_NUMBER, checkpoint)


def last_sequence_number(records: Iterable[Mapping[str, Any]]) -> str | None:
    """The checkpoint a processed batch moves to: its highest sequence number."""
    numbers = [str(r["dynamodb"]["SequenceNumber"]) for r in records]
    return max(numbers, key=int) if numbers else None

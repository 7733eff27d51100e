"""Shard leases and checkpoints in the leases table (KCL's layout), over boto3.

One item per shard, hash key ``leaseKey`` = the shard id:

- ``checkpoint``      S  the last sequence number fully processed, or ``SHARD_END``;
- ``leaseOwner``      S  the worker id holding the shard;
- ``leaseCounter``    N  bumped on every claim, so a holder can tell it was taken over;
- ``parentShardIds``  L  the shard's parent (lineage survives the stream trimming it).

For now one process claims every shard it reads (taking it over unconditionally); the
checkpoint write is conditional on ``leaseOwner`` so a process whose shard was taken over
stops instead of moving another owner's checkpoint. Multi-replica lease balancing builds
on exactly this layout.

Methods are synchronous (boto3); call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pulse.errors import PulseError, RetryableError

if TYPE_CHECKING:
    from stream_processor.lineage import Shard

__all__ = ["Lease", "LeaseLostError", "LeaseTable", "lease_from_item"]


class LeaseLostError(PulseError):
    """Another worker owns the shard now; this one must stop reading it."""


@dataclass(frozen=True)
class Lease:
    shard_id: str
    checkpoint: str | None = None
    owner: str | None = None
    counter: int = 0
    parent_shard_ids: tuple[str, ...] = ()


def lease_from_item(item: dict[str, Any]) -> Lease:
    """A :class:`Lease` from a leases-table item in attribute-value form."""
    parents = item.get("parentShardIds", {}).get("L", [])
    return Lease(
        shard_id=item["leaseKey"]["S"],
        checkpoint=item.get("checkpoint", {}).get("S"),
        owner=item.get("leaseOwner", {}).get("S"),
        counter=int(item.get("leaseCounter", {}).get("N", "0")),
        parent_shard_ids=tuple(p["S"] for p in parents if "S" in p),
    )


def _retryable(exc: Exception, what: str) -> RetryableError:
    return RetryableError(f"{what}: {exc}", delay=1.0)


class LeaseTable:
    """Reads, claims and checkpoints shard leases for one worker."""

    def __init__(self, ddb: Any, table_name: str, worker_id: str) -> None:
        self._ddb = ddb
        self._table = table_name
        self.worker_id = worker_id

    def leases(self) -> dict[str, Lease]:
        """Every stored lease, by shard id (a consistent scan)."""
        leases: dict[str, Lease] = {}
        kwargs: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        try:
            while True:
                page = self._ddb.scan(**kwargs)
                for item in page.get("Items", []):
                    lease = lease_from_item(item)
                    leases[lease.shard_id] = lease
                if "LastEvaluatedKey" not in page:
                    return leases
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise _retryable(exc, "scan leases") from exc

    def claim(self, shard: Shard) -> Lease:
        """Take ``shard`` for this worker (bumping ``leaseCounter``); the stored lease."""
        parents = [{"S": shard.parent_shard_id}] if shard.parent_shard_id else []
        try:
            response = self._ddb.update_item(
                TableName=self._table,
                Key={"leaseKey": {"S": shard.shard_id}},
                UpdateExpression="SET leaseOwner = :me, parentShardIds = :parents "
                "ADD leaseCounter :one",
                ExpressionAttributeValues={
                    ":me": {"S": self.worker_id},
                    ":parents": {"L": parents},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as exc:
            raise _retryable(exc, f"claim lease {shard.shard_id}") from exc
        return lease_from_item(response["Attributes"])

    def checkpoint(self, shard_id: str, checkpoint: str) -> None:
        """Store ``checkpoint``; raises :class:`LeaseLostError` if the shard changed owner."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"leaseKey": {"S": shard_id}},
                UpdateExpression="SET #checkpoint = :checkpoint",
                ConditionExpression="leaseOwner = :me",
                ExpressionAttributeNames={"#checkpoint": "checkpoint"},
                ExpressionAttributeValues={
                    ":checkpoint": {"S": checkpoint},
                    ":me": {"S": self.worker_id},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise LeaseLostError(f"lease {shard_id} is no longer owned by us") from exc
            raise _retryable(exc, f"checkpoint {shard_id}") from exc
        except BotoCoreError as exc:
            raise _retryable(exc, f"checkpoint {shard_id}") from exc

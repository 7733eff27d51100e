"""Shard leases and checkpoints in the leases table (KCL's layout), over boto3.

One item per shard, hash key ``leaseKey`` = the shard id:

- ``checkpoint``      S  the last sequence number fully processed, or ``SHARD_END``;
- ``leaseOwner``      S  the worker id holding the shard (absent when free);
- ``leaseCounter``    N  bumped on every take, renewal and release;
- ``parentShardIds``  L  the shard's parent (lineage survives the stream trimming it).

Every write but the creation of a lease item is conditional on the ``leaseCounter`` this
worker last saw (and, for a holder, on ``leaseOwner`` being itself): taking races are won
by one worker only, and a worker whose lease was taken over can neither renew it nor move
its checkpoint (fencing) — it gets :class:`LeaseLostError` and stops reading the shard.

A refused renewal is checked against the item before it counts as lost, as KCL does:
botocore retries a request whose answer did not arrive, and the retry of a renewal that did
land finds the counter moved — by us. Leases of shards the stream no longer lists are ended
(:meth:`LeaseTable.end_unread`) or deleted once finished (:meth:`LeaseTable.delete_ended`);
:mod:`stream_processor.lineage` says which.

AWS errors go through :mod:`pulse.aws_errors`: a failed condition is the fencing answer
(:class:`LeaseLostError`, or "already there" for :meth:`LeaseTable.ensure`); anything else
is raised as its Pulse error (retryable ones after ``delay`` 1 s).

Methods are synchronous (boto3); call them from a thread (``asyncio.to_thread``, or the
lease renewer's own). Writes of one held lease (renewal, checkpoint, release) must not
overlap, as each changes the counter the next is conditional on: they hold the lease's
:attr:`HeldLease.lock` while they run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.errors import ConditionFailedError
from stream_processor.lease_renewal import lease_deadline
from stream_processor.lineage import SHARD_END

if TYPE_CHECKING:
    from stream_processor.lineage import Shard

__all__ = [
    "HeldLease",
    "Lease",
    "LeaseExpiredError",
    "LeaseLostError",
    "LeaseTable",
    "lease_from_item",
]


class LeaseLostError(ConditionFailedError):
    """Another worker owns the shard now; this one must stop reading it."""


class LeaseExpiredError(LeaseLostError):
    """No renewal succeeded within the failover time: another worker may own the shard by
    now, so this one stops reading it."""


@dataclass(frozen=True)
class Lease:
    shard_id: str
    checkpoint: str | None = None
    owner: str | None = None
    counter: int = 0
    parent_shard_ids: tuple[str, ...] = ()


@dataclass
class HeldLease:
    """A lease this worker holds: the counter its next write is conditional on, and when
    the call that last moved that counter (take or renewal) started (monotonic)."""

    shard_id: str
    counter: int
    checkpoint: str | None = None
    renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _marking: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def expired(self, now: float, failover_seconds: float) -> bool:
        """True once the holder must stop using the lease (see
        :mod:`stream_processor.lease_renewal`)."""
        return now >= lease_deadline(self.renewed_at, failover_seconds)

    def lose(self) -> bool:
        """Mark the lease lost; True for the first caller only (who counts and logs it)."""
        with self._marking:
            first = not self.lost
            self.lost = True
            return first


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


_RETRY_DELAY_SECONDS: Final = 1.0  # of a retryable AWS error


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
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, "scan leases", delay=_RETRY_DELAY_SECONDS) from exc

    def ensure(self, shard: Shard) -> None:
        """Create ``shard``'s lease item, free, if it has none (a no-op otherwise)."""
        parents = [{"S": shard.parent_shard_id}] if shard.parent_shard_id else []
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={
                    "leaseKey": {"S": shard.shard_id},
                    "leaseCounter": {"N": "0"},
                    "parentShardIds": {"L": parents},
                },
                ConditionExpression="attribute_not_exists(leaseKey)",
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                return  # it exists already
            what = f"create lease {shard.shard_id}"
            raise as_pulse_error(exc, what, delay=_RETRY_DELAY_SECONDS) from exc

    def take(self, lease: Lease) -> HeldLease:
        """Take ``lease`` as observed (free, expired or stolen); :class:`LeaseLostError` if
        its counter moved since (its holder renewed it, or another worker was faster)."""
        started = time.monotonic()
        attributes = self._update(
            lease.shard_id,
            "SET leaseOwner = :me ADD leaseCounter :one",
            "leaseCounter = :seen",
            {":me": {"S": self.worker_id}, ":seen": {"N": str(lease.counter)}},
            returns=True,
        )
        taken = lease_from_item(attributes)
        return HeldLease(taken.shard_id, taken.counter, taken.checkpoint, renewed_at=started)

    def renew(self, held: HeldLease) -> None:
        """Bump the counter of a held lease, which tells the others it is alive;
        :class:`LeaseLostError` if it is not ours any more."""
        with held.lock:
            self._raise_if_lost(held)
            started = time.monotonic()
            try:
                self._update(
                    held.shard_id,
                    "ADD leaseCounter :one",
                    "leaseOwner = :me AND leaseCounter = :seen",
                    {":me": {"S": self.worker_id}, ":seen": {"N": str(held.counter)}},
                )
            except LeaseLostError:
                if not self._renewal_landed(held):
                    raise
            held.counter += 1
            held.renewed_at = started

    def release(self, held: HeldLease) -> None:
        """Give the lease up (shutdown): the next owner may take it at once."""
        with held.lock:
            self._raise_if_lost(held)
            self._update(
                held.shard_id,
                "REMOVE leaseOwner ADD leaseCounter :one",
                "leaseOwner = :me AND leaseCounter = :seen",
                {":me": {"S": self.worker_id}, ":seen": {"N": str(held.counter)}},
            )
            held.counter += 1
            held.lost = True

    def checkpoint(self, held: HeldLease, checkpoint: str) -> None:
        """Store ``checkpoint`` if the lease is still ours at the counter we hold."""
        with held.lock:
            self._raise_if_lost(held)
            self._update(
                held.shard_id,
                "SET #checkpoint = :checkpoint",
                "leaseOwner = :me AND leaseCounter = :seen",
                {
                    ":me": {"S": self.worker_id},
                    ":seen": {"N": str(held.counter)},
                    ":checkpoint": {"S": checkpoint},
                },
                names={"#checkpoint": "checkpoint"},
            )
            held.checkpoint = checkpoint

    def end_unread(self, lease: Lease) -> None:
        """Mark ``lease`` (as observed) ended and free: its shard is gone from the stream
        before it was read to its end. Bumping the counter fences a holder that has not
        noticed yet; :class:`LeaseLostError` if the counter moved since it was observed."""
        self._update(
            lease.shard_id,
            "SET #checkpoint = :checkpoint REMOVE leaseOwner ADD leaseCounter :one",
            "leaseCounter = :seen",
            {":seen": {"N": str(lease.counter)}, ":checkpoint": {"S": SHARD_END}},
            names={"#checkpoint": "checkpoint"},
        )

    def delete_ended(self, shard_id: str) -> bool:
        """Delete the lease of a shard read to its end; False if there is no such lease (it
        is gone already, or not ended)."""
        try:
            self._ddb.delete_item(
                TableName=self._table,
                Key={"leaseKey": {"S": shard_id}},
                ConditionExpression="#checkpoint = :checkpoint",
                ExpressionAttributeNames={"#checkpoint": "checkpoint"},
                ExpressionAttributeValues={":checkpoint": {"S": SHARD_END}},
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                return False
            raise as_pulse_error(
                exc, f"delete lease {shard_id}", delay=_RETRY_DELAY_SECONDS
            ) from exc
        return True

    @staticmethod
    def _raise_if_lost(held: HeldLease) -> None:
        if held.lost:
            raise LeaseLostError(f"lease {held.shard_id} was lost")

    def _renewal_landed(self, held: HeldLease) -> bool:
        """Whether a renewal refused at ``held.counter`` had landed after all: the item shows
        this worker as owner one count further."""
        try:
            item = self._ddb.get_item(
                TableName=self._table,
                Key={"leaseKey": {"S": held.shard_id}},
                ConsistentRead=True,
            ).get("Item")
        except AWS_ERRORS as exc:
            what = f"read lease {held.shard_id}"
            raise as_pulse_error(exc, what, delay=_RETRY_DELAY_SECONDS) from exc
        if item is None:
            return False
        lease = lease_from_item(item)
        return lease.owner == self.worker_id and lease.counter == held.counter + 1

    def _update(
        self,
        shard_id: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        *,
        names: dict[str, str] | None = None,
        returns: bool = False,
    ) -> dict[str, Any]:
        if "ADD leaseCounter :one" in expression:
            values = {**values, ":one": {"N": "1"}}
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"leaseKey": {"S": shard_id}},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW" if returns else "NONE",
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        try:
            response = self._ddb.update_item(**kwargs)
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.CONDITION_FAILED:
                raise LeaseLostError(f"lease {shard_id} is not ours at that counter") from exc
            what = f"update lease {shard_id}"
            raise as_pulse_error(exc, what, delay=_RETRY_DELAY_SECONDS) from exc
        attributes: dict[str, Any] = response.get("Attributes", {})
        return attributes

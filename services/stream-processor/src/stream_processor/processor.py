"""Finds the payments table's stream, lists its shards, holds leases and runs their readers.

Shards are listed every ``shard_refresh_seconds``, and sooner when there is news: at once
when a reader finishes a shard (so its children start without waiting), when the lease
table holds an unfinished lease of a shard this worker has not listed (another worker
listed new shards first), and when a reader finds its shard missing. Right after each
listing, lease items are created for the listed shards the lease table does not hold yet,
and the leases of shards the stream no longer lists are dealt with
(:func:`~stream_processor.lineage.gone_shards`): an unfinished one is ended (logged as data
loss and counted ``shard_trimmed``), a finished one whose children all have leases is
deleted. :func:`~stream_processor.lineage.plan_shards` says which shards may be read,
:func:`~stream_processor.lease_assignment.plan_leases` which of those this worker takes.
Each lease taken gets a :class:`ShardReader` task, and the
:class:`~stream_processor.lease_renewer.LeaseRenewer` keeps it renewed on its own thread;
a lease the renewer gives up stops its reader at once.

On shutdown the readers finish their batch in flight (effects and checkpoint) within
``shutdown_grace_seconds``; any still running after that are cancelled, their batch left
without a checkpoint and so read again by the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from pulse.aws_errors import AWS_ERRORS, as_pulse_error
from pulse.errors import RetryableError
from pulse.logging import get_logger
from stream_processor.lease_assignment import LeaseObservations, plan_leases
from stream_processor.lease_renewer import LeaseRenewer
from stream_processor.leases import LeaseLostError
from stream_processor.lineage import (
    SHARD_END,
    Shard,
    gone_shards,
    plan_shards,
    shards_from_pages,
)
from stream_processor.metrics import (
    FAILURES,
    LEASES_DELETED,
    LEASES_HELD,
    LEASES_TAKEN,
    SHARDS_OWNED,
    IteratorAges,
)
from stream_processor.shard_health import ShardHealth
from stream_processor.shard_reader import ShardOutcome, ShardReader

if TYPE_CHECKING:
    from stream_processor.effects import BatchEffects
    from stream_processor.failures import FailureQueue
    from stream_processor.leases import HeldLease, Lease, LeaseTable
    from stream_processor.settings import StreamProcessorSettings

__all__ = ["StreamProcessor", "list_shards", "stream_arn_of"]

# Finished leases deleted after one listing at most: a first run over a long-lived lease
# table spreads its deletes over a few listings rather than holding up one round.
_DELETES_PER_LISTING: Final = 100


def _log() -> Any:
    return get_logger("stream_processor.processor")


def stream_arn_of(ddb: Any, table_name: str) -> str:
    """The table's latest stream ARN; :class:`RetryableError` while it has none (an AWS
    error as its Pulse error)."""
    try:
        table = ddb.describe_table(TableName=table_name)["Table"]
    except AWS_ERRORS as exc:
        raise as_pulse_error(exc, f"DescribeTable {table_name}", delay=2.0) from exc
    arn = table.get("LatestStreamArn")
    enabled = (table.get("StreamSpecification") or {}).get("StreamEnabled", bool(arn))
    if not arn or not enabled:
        raise RetryableError(f"table {table_name} has no stream enabled", delay=5.0)
    return str(arn)


def list_shards(streams: Any, stream_arn: str) -> list[Shard]:
    """Every shard of the stream, following DescribeStream's pages (an AWS error is raised
    as its Pulse error)."""
    pages: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamArn": stream_arn}
    try:
        while True:
            description = streams.describe_stream(**kwargs)["StreamDescription"]
            pages.append(description)
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards_from_pages(pages)
            kwargs["ExclusiveStartShardId"] = last
    except AWS_ERRORS as exc:
        raise as_pulse_error(exc, "DescribeStream", delay=2.0) from exc


class StreamProcessor:
    """Holds a fair share of the stream's shard leases and reads them until ``stopping``.

    Every ``failover_seconds / 3`` one round: list the shards if due (see the module
    docstring), scan the lease table, and take leases per
    :func:`~stream_processor.lease_assignment.plan_leases` among the shards lineage allows.
    Renewals are not part of the round: the :class:`LeaseRenewer` runs them on its own
    thread. On shutdown the readers finish their batch in flight (their leases still
    renewed), then the renewer stops and every lease still held is released so another
    replica takes it at once.

    ``renewals`` is the lease table the renewer writes through (the server gives it a
    client of its own); by default ``leases``.
    """

    def __init__(
        self,
        settings: StreamProcessorSettings,
        *,
        ddb: Any,
        streams: Any,
        leases: LeaseTable,
        effects: BatchEffects,
        stopping: asyncio.Event,
        failures: FailureQueue | None = None,
        renewals: LeaseTable | None = None,
    ) -> None:
        self._settings = settings
        self._failures = failures
        self._ddb = ddb
        self._streams = streams
        self._leases = leases
        self._renewals = renewals or leases
        self._renewer: LeaseRenewer | None = None
        self._effects = effects
        self._stopping = stopping
        self._readers: dict[str, asyncio.Task[ShardOutcome]] = {}
        self._held: dict[str, HeldLease] = {}
        self._observations = LeaseObservations()
        self._shards: dict[str, Shard] = {}
        self._stream_arn: str | None = None
        self._listed_at = -math.inf
        self._relist = True  # list the shards at the next round
        self._relisted_for: set[str] = set()  # unlisted leases a listing was made for
        self._wake = asyncio.Event()  # start the next round now
        self.ages = IteratorAges()
        self.shard_health = ShardHealth(self.ages)  # the shards read, for the health report

    @property
    def held(self) -> dict[str, HeldLease]:
        """The leases this worker holds, by shard id."""
        return self._held

    async def run(self) -> None:
        interval = self._settings.failover_seconds / 3
        renewer = self._renewer = LeaseRenewer(
            self._renewals,
            failover_seconds=self._settings.failover_seconds,
            loop=asyncio.get_running_loop(),
            on_lost=self._lease_given_up,
        )
        renewer.start()
        try:
            while not self._stopping.is_set():
                try:
                    await self.round()
                except Exception as exc:
                    FAILURES.labels("refresh").inc()
                    _log().warning("lease round failed", error=f"{type(exc).__name__}: {exc}")
                await self._sleep(interval)
            await self._drain()
        finally:
            await asyncio.to_thread(renewer.stop)
        await self._release_all()

    async def round(self) -> None:
        """List shards if due, scan leases, take what the plan says, start readers."""
        self._wake.clear()
        loop = asyncio.get_running_loop()
        listing = (
            self._relist or loop.time() - self._listed_at >= self._settings.shard_refresh_seconds
        )
        listed_from = loop.time()
        if listing:
            await self._list_shards()
        leases = await self._scan_leases(create_missing=listing)
        now = loop.time()
        self._observations.observe(leases.values(), now)
        if listing:
            self._listed_at = now
            self._relist = False
            await self._tidy(leases, now, listed_from)
        else:
            self._relist_for_news(leases)
        listed = [s for s in self._shards.values() if s.shard_id in leases]
        lineage = plan_shards(listed, {k: v.checkpoint for k, v in leases.items()})
        plan = plan_leases(
            leases,
            lineage.ready,
            worker_id=self._leases.worker_id,
            observations=self._observations,
            now=now,
            failover_seconds=self._settings.failover_seconds,
        )
        # A lease recorded as ours that we do not hold (we crashed and came back under the
        # same worker id, or it was taken and given back): take it again, fenced as any take.
        mine = [
            leases[s]
            for s in lineage.ready
            if s in leases and leases[s].owner == self._leases.worker_id and s not in self._held
        ]
        for lease in [*mine, *plan.take, *([plan.steal] if plan.steal else [])]:
            if self._stopping.is_set():
                break
            await self._take(lease, stolen=lease is plan.steal)
        LEASES_HELD.set(len(self._held))
        SHARDS_OWNED.set(len(self._readers))

    async def _list_shards(self) -> None:
        table = self._settings.names.payments_table
        self._stream_arn = await asyncio.to_thread(stream_arn_of, self._ddb, table)
        shards = await asyncio.to_thread(list_shards, self._streams, self._stream_arn)
        self._shards = {shard.shard_id: shard for shard in shards}
        _log().debug("shards listed", listed=len(shards))

    async def _scan_leases(self, *, create_missing: bool) -> dict[str, Lease]:
        """Every lease; after a listing, first the items of listed shards that have none.

        Only the missing ones: a stream lists hundreds of shards after a few days of
        roll-overs, and a write per listed shard per refresh made the round slower than the
        failover time. Only after a listing: a listing kept between refreshes may still hold
        a shard trimmed since, whose finished lease another worker may have deleted.
        """
        leases = await asyncio.to_thread(self._leases.leases)
        if not create_missing:
            return leases
        missing = [shard for shard in self._shards.values() if shard.shard_id not in leases]
        for shard in missing:  # listed order: a parent's item before its children's
            await asyncio.to_thread(self._leases.ensure, shard)
        if missing:
            leases = await asyncio.to_thread(self._leases.leases)
        return leases

    def _relist_for_news(self, leases: dict[str, Lease]) -> None:
        """List again at once if the lease table holds unfinished leases of shards this
        worker has not listed (once per such lease: if the listing does not show them,
        they are gone and :meth:`_tidy` deals with them)."""
        self._relisted_for.intersection_update(leases)
        news = {
            shard_id
            for shard_id, lease in leases.items()
            if shard_id not in self._shards and lease.checkpoint != SHARD_END
        } - self._relisted_for
        if news:
            self._relisted_for |= news
            self._request_listing()

    async def _tidy(self, leases: dict[str, Lease], now: float, listed_from: float) -> None:
        """Deal with the leases of shards the stream no longer lists (after a listing that
        started at ``listed_from``)."""
        gone = gone_shards(self._shards.values(), {k: v.checkpoint for k, v in leases.items()})
        self._relisted_for.update(gone.unfinished)
        for shard_id in gone.unfinished:
            lease = leases[shard_id]
            # A lease first seen after this listing started may be a child of a split the
            # listing came too early for (another worker listed since and made its lease):
            # not a trimmed shard. Only a listing made after it was seen can say it is gone.
            if not self._observations.seen_before(shard_id, listed_from):
                self._request_listing()
                continue
            # A live holder's reader finds the shard missing and ends it itself.
            if shard_id in self._held or not self._observations.expired(
                lease, now, self._settings.failover_seconds
            ):
                continue
            try:
                await asyncio.to_thread(self._leases.end_unread, lease)
            except LeaseLostError:
                continue  # its counter moved: someone else is on it
            FAILURES.labels("shard_trimmed").inc()
            _log().error(
                "shard trimmed from the stream before it was read to its end (records after "
                "the checkpoint are lost); treating it as ended",
                shard_id=shard_id,
                checkpoint=lease.checkpoint,
                previous_owner=lease.owner,
            )
        for shard_id in gone.retired[:_DELETES_PER_LISTING]:
            if await asyncio.to_thread(self._leases.delete_ended, shard_id):
                LEASES_DELETED.inc()
                _log().info(
                    "lease of a finished shard past the retention deleted", shard_id=shard_id
                )

    async def _take(self, lease: Lease, *, stolen: bool) -> None:
        if lease.shard_id in self._held or self._stream_arn is None:
            return
        try:
            held = await asyncio.to_thread(self._leases.take, lease)
        except LeaseLostError:
            _log().debug("lease taken by another worker first", shard_id=lease.shard_id)
            return
        if held.checkpoint == SHARD_END:
            return
        LEASES_TAKEN.labels("stolen" if stolen else "taken").inc()
        self._held[held.shard_id] = held
        if self._renewer is not None:
            self._renewer.hold(held)
        reader = ShardReader(
            lease=held,
            stream_arn=self._stream_arn,
            streams=self._streams,
            leases=self._leases,
            effects=self._effects,
            health=self.shard_health,
            settings=self._settings,
            stopping=self._stopping,
            shard=partial(self._listed_shard, held.shard_id),
            relist=self._request_listing,
            failures=self._failures,
        )
        task = asyncio.create_task(reader.run(), name=f"shard {held.shard_id}")
        task.add_done_callback(partial(self._reader_done, held))
        self._readers[held.shard_id] = task
        _log().info(
            "lease taken",
            shard_id=held.shard_id,
            previous_owner=lease.owner,
            stolen=stolen,
            checkpoint=held.checkpoint,
            lease_counter=held.counter,
        )

    def _listed_shard(self, shard_id: str) -> Shard | None:
        return self._shards.get(shard_id)

    def _request_listing(self) -> None:
        self._relist = True
        self._wake.set()

    def _lease_given_up(self, shard_id: str) -> None:
        """The renewer gave the lease up: stop its reader wherever it waits."""
        self._held.pop(shard_id, None)
        LEASES_HELD.set(len(self._held))
        task = self._readers.get(shard_id)
        if task is not None:
            task.cancel()
        self._wake.set()  # a round may take the lease back if it is free again

    async def _release_all(self) -> None:
        for held in list(self._held.values()):
            if held.lost:
                continue
            try:
                await asyncio.to_thread(self._leases.release, held)
                _log().info("lease released", shard_id=held.shard_id)
            except Exception as exc:
                _log().warning("lease release failed", shard_id=held.shard_id, error=str(exc))
        self._held.clear()
        LEASES_HELD.set(0)

    def _reader_done(self, held: HeldLease, task: asyncio.Task[ShardOutcome]) -> None:
        shard_id = held.shard_id
        if self._readers.get(shard_id) is not task:
            return  # a reader cancelled with its lease; the shard has a new one since
        self._readers.pop(shard_id)
        self.ages.forget(shard_id)
        SHARDS_OWNED.set(len(self._readers))
        if task.cancelled():
            return  # its lease was given up, or the grace period ran out
        exc = task.exception()
        if exc is not None:
            _log().error("shard reader crashed", shard_id=shard_id, exc_info=exc)
        outcome = None if exc is not None else task.result()
        if outcome is ShardOutcome.STOPPED:
            return  # the lease is released with the others
        # Ended (read to SHARD_END, nothing to renew), lost, or crashed (its lease
        # expires and is taken again, by us or another worker).
        self._held.pop(shard_id, None)
        if self._renewer is not None:
            self._renewer.forget(shard_id)
        LEASES_HELD.set(len(self._held))
        if outcome is ShardOutcome.ENDED:
            self._request_listing()  # its children may start now
        else:
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stop, wake}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stop, wake):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    async def _drain(self) -> None:
        tasks = list(self._readers.values())
        if not tasks:
            return
        _log().info("finishing batches in flight", shards=len(tasks))
        _done, pending = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            _log().warning("shard readers cancelled after the grace period", shards=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

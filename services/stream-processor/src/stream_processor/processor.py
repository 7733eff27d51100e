"""Finds the payments table's stream, lists its shards, holds leases and runs their readers.

Shards are listed every ``shard_refresh_seconds`` (and at once when a reader finishes a
shard, so its children start without waiting), and lease items are created for those the
lease table does not hold yet; :func:`~stream_processor.lineage.plan_shards` says which
may be read, :func:`~stream_processor.lease_assignment.plan_leases` which of those this
worker takes. Each lease taken gets a :class:`ShardReader` task.

On shutdown the readers finish their batch in flight (effects and checkpoint) within
``shutdown_grace_seconds``; any still running after that are cancelled, their batch left
without a checkpoint and so read again by the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from functools import partial
from typing import TYPE_CHECKING, Any

from pulse.aws_errors import AWS_ERRORS, as_pulse_error
from pulse.errors import RetryableError
from pulse.logging import get_logger
from stream_processor.lease_assignment import LeaseObservations, plan_leases
from stream_processor.leases import LeaseLostError
from stream_processor.lineage import SHARD_END, Shard, plan_shards, shards_from_pages
from stream_processor.metrics import (
    FAILURES,
    LEASES_HELD,
    LEASES_TAKEN,
    SHARDS_OWNED,
    IteratorAges,
)
from stream_processor.shard_reader import ShardOutcome, ShardReader

if TYPE_CHECKING:
    from stream_processor.effects import BatchEffects
    from stream_processor.failures import FailureQueue
    from stream_processor.leases import HeldLease, Lease, LeaseTable
    from stream_processor.settings import StreamProcessorSettings

__all__ = ["StreamProcessor", "list_shards", "stream_arn_of"]


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

    Every ``failover_seconds / 3`` one round: renew the leases held (a lease whose renewal
    is refused was taken over: its reader stops), scan the lease table, and take leases per
    :func:`~stream_processor.lease_assignment.plan_leases` among the shards lineage allows.
    Shards are listed every ``shard_refresh_seconds`` and at once when a reader finishes a
    shard; a listed shard without a lease item gets one before the scan is used. On
    shutdown the readers finish their batch in flight, then every lease still held is
    released so another replica takes it at once.
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
    ) -> None:
        self._settings = settings
        self._failures = failures
        self._ddb = ddb
        self._streams = streams
        self._leases = leases
        self._effects = effects
        self._stopping = stopping
        self._readers: dict[str, asyncio.Task[ShardOutcome]] = {}
        self._held: dict[str, HeldLease] = {}
        self._observations = LeaseObservations()
        self._shards: dict[str, Shard] = {}
        self._stream_arn: str | None = None
        self._listed_at = -math.inf
        self._wake = asyncio.Event()
        self.ages = IteratorAges()

    @property
    def held(self) -> dict[str, HeldLease]:
        """The leases this worker holds, by shard id."""
        return self._held

    async def run(self) -> None:
        interval = self._settings.failover_seconds / 3
        while not self._stopping.is_set():
            try:
                await self.round()
            except Exception as exc:
                FAILURES.labels("refresh").inc()
                _log().warning("lease round failed", error=f"{type(exc).__name__}: {exc}")
            await self._sleep(interval)
        await self._drain()
        await self._release_all()

    async def round(self) -> None:
        """Renew, list shards if due, scan leases, take what the plan says, start readers."""
        await self._renew_all()
        loop = asyncio.get_running_loop()
        if (
            self._wake.is_set()
            or loop.time() - self._listed_at >= self._settings.shard_refresh_seconds
        ):
            await self._list_shards()
            self._listed_at = loop.time()
        leases = await self._scan_leases()
        now = loop.time()
        self._observations.observe(leases.values(), now)
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
        self._wake.clear()
        table = self._settings.names.payments_table
        self._stream_arn = await asyncio.to_thread(stream_arn_of, self._ddb, table)
        shards = await asyncio.to_thread(list_shards, self._streams, self._stream_arn)
        self._shards = {shard.shard_id: shard for shard in shards}
        _log().debug("shards listed", listed=len(shards))

    async def _scan_leases(self) -> dict[str, Lease]:
        """Every lease, after creating the items of listed shards that have none.

        Only the missing ones: a stream lists hundreds of shards after a few days of
        roll-overs, and a write per listed shard per refresh made the round — and with it
        the renewals — slower than the failover time.
        """
        leases = await asyncio.to_thread(self._leases.leases)
        missing = [shard for shard in self._shards.values() if shard.shard_id not in leases]
        for shard in missing:  # listed order: a parent's item before its children's
            await asyncio.to_thread(self._leases.ensure, shard)
        if missing:
            leases = await asyncio.to_thread(self._leases.leases)
        return leases

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
        reader = ShardReader(
            lease=held,
            stream_arn=self._stream_arn,
            streams=self._streams,
            leases=self._leases,
            effects=self._effects,
            ages=self.ages,
            settings=self._settings,
            stopping=self._stopping,
            failures=self._failures,
        )
        task = asyncio.create_task(reader.run(), name=f"shard {held.shard_id}")
        task.add_done_callback(partial(self._reader_done, held.shard_id))
        self._readers[held.shard_id] = task
        _log().info(
            "lease taken",
            shard_id=held.shard_id,
            previous_owner=lease.owner,
            stolen=stolen,
            checkpoint=held.checkpoint,
            lease_counter=held.counter,
        )

    async def _renew_all(self) -> None:
        for held in list(self._held.values()):
            if held.lost:
                continue
            try:
                async with held.lock:
                    await asyncio.to_thread(self._leases.renew, held)
            except LeaseLostError:
                held.lost = True  # the reader sees it before its next read and stops
                FAILURES.labels("lease_lost").inc()
                _log().warning("lease lost at renewal", shard_id=held.shard_id)

    async def _release_all(self) -> None:
        for held in list(self._held.values()):
            if held.lost:
                continue
            try:
                async with held.lock:
                    await asyncio.to_thread(self._leases.release, held)
                _log().info("lease released", shard_id=held.shard_id)
            except Exception as exc:
                _log().warning("lease release failed", shard_id=held.shard_id, error=str(exc))
        self._held.clear()
        LEASES_HELD.set(0)

    def _reader_done(self, shard_id: str, task: asyncio.Task[ShardOutcome]) -> None:
        self._readers.pop(shard_id, None)
        self.ages.forget(shard_id)
        SHARDS_OWNED.set(len(self._readers))
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log().error("shard reader crashed", shard_id=shard_id, exc_info=exc)
        outcome = None if exc is not None else task.result()
        if outcome is not ShardOutcome.STOPPED:
            # Ended (read to SHARD_END, nothing to renew), lost, or crashed (its lease
            # expires and is taken again, by us or another worker).
            self._held.pop(shard_id, None)
            LEASES_HELD.set(len(self._held))
        self._wake.set()  # an ended shard's children may start now

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

"""Finds the payments table's stream, lists its shards and runs a reader per ready shard.

Every ``shard_refresh_seconds`` (and at once when a reader finishes a shard, so its children
start without waiting) the shards are listed again, the stored leases read, and
:func:`~stream_processor.lineage.plan_shards` decides which shards may be read. Each ready
shard is claimed in the leases table and gets a :class:`ShardReader` task.

On shutdown the readers finish their batch in flight (effects and checkpoint) within
``shutdown_grace_seconds``; any still running after that are cancelled, their batch left
without a checkpoint and so read again by the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pulse.errors import RetryableError
from pulse.logging import get_logger
from stream_processor.lineage import SHARD_END, Shard, plan_shards, shards_from_pages
from stream_processor.metrics import FAILURES, SHARDS_OWNED, IteratorAges
from stream_processor.shard_reader import ShardOutcome, ShardReader

if TYPE_CHECKING:
    from stream_processor.effects import BatchEffects
    from stream_processor.leases import LeaseTable
    from stream_processor.settings import StreamProcessorSettings

__all__ = ["StreamProcessor", "list_shards", "stream_arn_of"]


def _log() -> Any:
    return get_logger("stream_processor.processor")


def stream_arn_of(ddb: Any, table_name: str) -> str:
    """The table's latest stream ARN; :class:`RetryableError` while it has none."""
    try:
        table = ddb.describe_table(TableName=table_name)["Table"]
    except (ClientError, BotoCoreError) as exc:
        raise RetryableError(f"DescribeTable {table_name}: {exc}", delay=2.0) from exc
    arn = table.get("LatestStreamArn")
    enabled = (table.get("StreamSpecification") or {}).get("StreamEnabled", bool(arn))
    if not arn or not enabled:
        raise RetryableError(f"table {table_name} has no stream enabled", delay=5.0)
    return str(arn)


def list_shards(streams: Any, stream_arn: str) -> list[Shard]:
    """Every shard of the stream, following DescribeStream's pages."""
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
    except (ClientError, BotoCoreError) as exc:
        raise RetryableError(f"DescribeStream: {exc}", delay=2.0) from exc


class StreamProcessor:
    """Runs the stream's shard readers until ``stopping`` is set."""

    def __init__(
        self,
        settings: StreamProcessorSettings,
        *,
        ddb: Any,
        streams: Any,
        leases: LeaseTable,
        effects: BatchEffects,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._ddb = ddb
        self._streams = streams
        self._leases = leases
        self._effects = effects
        self._stopping = stopping
        self._readers: dict[str, asyncio.Task[ShardOutcome]] = {}
        self._lost: set[str] = set()
        self._wake = asyncio.Event()
        self.ages = IteratorAges()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception as exc:
                FAILURES.labels("refresh").inc()
                _log().warning("shard refresh failed", error=f"{type(exc).__name__}: {exc}")
            await self._sleep(self._settings.shard_refresh_seconds)
        await self._drain()

    async def refresh(self) -> None:
        """List shards and leases; start a reader for every ready shard not yet read."""
        self._wake.clear()
        table = self._settings.names.payments_table
        stream_arn = await asyncio.to_thread(stream_arn_of, self._ddb, table)
        shards = await asyncio.to_thread(list_shards, self._streams, stream_arn)
        leases = await asyncio.to_thread(self._leases.leases)
        plan = plan_shards(shards, {k: v.checkpoint for k, v in leases.items()})
        by_id = {shard.shard_id: shard for shard in shards}
        for shard_id in plan.ready:
            if self._stopping.is_set():
                break
            if shard_id in self._readers or shard_id in self._lost:
                continue
            lease = await asyncio.to_thread(self._leases.claim, by_id[shard_id])
            if lease.checkpoint == SHARD_END:
                continue
            reader = ShardReader(
                lease=lease,
                stream_arn=stream_arn,
                streams=self._streams,
                leases=self._leases,
                effects=self._effects,
                ages=self.ages,
                settings=self._settings,
                stopping=self._stopping,
            )
            task = asyncio.create_task(reader.run(), name=f"shard {shard_id}")
            task.add_done_callback(partial(self._reader_done, shard_id))
            self._readers[shard_id] = task
            _log().info(
                "shard claimed",
                shard_id=shard_id,
                checkpoint=lease.checkpoint,
                lease_counter=lease.counter,
                parent_shard_id=by_id[shard_id].parent_shard_id,
            )
        SHARDS_OWNED.set(len(self._readers))
        _log().debug(
            "shards refreshed",
            listed=len(shards),
            reading=len(self._readers),
            blocked=len(plan.blocked),
            done=len(plan.done),
        )

    def _reader_done(self, shard_id: str, task: asyncio.Task[ShardOutcome]) -> None:
        self._readers.pop(shard_id, None)
        self.ages.forget(shard_id)
        SHARDS_OWNED.set(len(self._readers))
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log().error("shard reader crashed", shard_id=shard_id, exc_info=exc)
        elif task.result() is ShardOutcome.LOST:
            self._lost.add(shard_id)
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

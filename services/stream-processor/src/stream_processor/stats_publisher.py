"""Publishes the counters on channel ``stats`` as ``pulse.stats`` events, throttled.

After a batch changed the counters, one snapshot is read from Redis and appended to the
``stats`` channel — at most once per ``interval`` seconds however many batches arrive, and
not at all while nothing changes. Each snapshot is a new event (its own id): stats events
are not deduplicated; the latest one is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

from pulse.channels import STATS as STATS_CHANNEL
from pulse.events import STATS, new_event
from pulse.logging import get_logger
from pulse.service import sleep_unless_stopped
from stream_processor.stats import SERIES_MINUTES, StatsKeys, stats_snapshot

if TYPE_CHECKING:
    from pulse.channels import ChannelPublisher
    from pulse.clients import RedisClient

__all__ = ["StatsPublisher", "read_snapshot"]

SOURCE: Final = "/pulse/stream-processor/stats"


def _log() -> Any:
    return get_logger("stream_processor.stats")


def _decode(fields: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in fields.items()}


async def read_snapshot(
    redis: RedisClient, keys: StatsKeys, *, now: float | None = None
) -> dict[str, Any]:
    """The current ``pulse.stats`` data, read from the counter hashes in one round trip."""
    now_minute = int(time.time() if now is None else now) // 60
    minutes = list(range(now_minute - SERIES_MINUTES + 1, now_minute + 1))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.totals)
        for minute in minutes:
            pipe.hgetall(keys.minute(minute))
        totals, *series = await pipe.execute()
    return stats_snapshot(
        _decode(totals),
        {m: _decode(fields) for m, fields in zip(minutes, series, strict=True) if fields},
        now_minute,
    )


class StatsPublisher:
    """Call :meth:`changed` after counters changed; :meth:`run` publishes, throttled."""

    def __init__(
        self,
        redis: RedisClient,
        channels: ChannelPublisher,
        keys: StatsKeys,
        *,
        interval: float,
    ) -> None:
        self._redis = redis
        self._channels = channels
        self._keys = keys
        self._interval = interval
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def publish(self) -> None:
        data = await read_snapshot(self._redis, self._keys)
        event = new_event(type=STATS, source=SOURCE, data=data)
        await self._channels.append(event, [STATS_CHANNEL])

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish after each change, at most once per interval, until ``stopping``."""
        while not stopping.is_set():
            stop = asyncio.ensure_future(stopping.wait())
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({stop, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (stop, changed):
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
            if stopping.is_set():
                break
            self._changed.clear()
            try:
                await self.publish()
            except Exception as exc:
                _log().warning("stats publish failed", error=f"{type(exc).__name__}: {exc}")
                self._changed.set()  # try again after the interval
            await sleep_unless_stopped(stopping, self._interval)

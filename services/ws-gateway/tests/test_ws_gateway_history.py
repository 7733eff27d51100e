"""What the history says of a client's offset once a channel's history expired (real Redis).

A channel idle for its lifetime loses every key: its stream, its epoch, its guards. The next
append starts a new stream with a new epoch; an offset of the old one is ``recovered:false``
whether the client sends its epoch or not, and one of the live history stays recoverable —
even sent with the old epoch, by a client that stayed subscribed and received the new
epoch's events live.
"""

import asyncio

import pytest
import redis.asyncio as aioredis

from pulse.channels import ChannelKeys, ChannelPublisher
from pulse.events import PAYMENT_CREATED, CloudEvent, new_event
from pulse.history_limits import HistoryLimit, HistoryLimits
from ws_gateway.history import ChannelHistory
from ws_gateway.offsets import ZERO, StreamId

CHANNEL = "account:alice"
# Long enough that a loaded machine's pauses do not outlast it between two steps of a test.
LIFETIME = 3
LIMITS = HistoryLimits(account=HistoryLimit(size=100, ttl_seconds=LIFETIME))


@pytest.fixture
def keys(stack_prefix: str) -> ChannelKeys:
    return ChannelKeys(f"pulse:{stack_prefix}")


@pytest.fixture
def publisher(async_redis: aioredis.Redis, keys: ChannelKeys) -> ChannelPublisher:
    return ChannelPublisher(async_redis, keys.prefix, history=LIMITS)


@pytest.fixture
def history(async_redis: aioredis.Redis, keys: ChannelKeys) -> ChannelHistory:
    return ChannelHistory(async_redis, keys, batch_size=10, limits=LIMITS)


def payment(n: int) -> CloudEvent:
    return new_event(type=PAYMENT_CREATED, source="/t", data={"payment_id": f"p{n}"})


async def expires_within(client: aioredis.Redis, key: str | bytes, ms: int) -> bool:
    """``key`` expires within ``ms`` or already did: never a key left without an expiry."""
    left = await client.pttl(key)
    return left == -2 or 0 <= left <= ms


async def test_an_offset_of_an_expired_history_is_not_recovered(
    publisher: ChannelPublisher, history: ChannelHistory
) -> None:
    old = await publisher.append(payment(1), [CHANNEL])
    await publisher.append(payment(2), [CHANNEL])
    seen, epoch = StreamId.parse(old.offsets[CHANNEL]), old.epochs[CHANNEL]
    assert (await history.snapshot(CHANNEL)).recovers(seen, epoch)

    await asyncio.sleep(LIFETIME + 0.1)  # the channel's lifetime, idle: p2 expired unseen
    new = await publisher.append(payment(3), [CHANNEL])

    snapshot = await history.snapshot(CHANNEL, seen, epoch)
    assert snapshot.epoch == new.epochs[CHANNEL] != epoch
    assert not snapshot.recovers(seen, epoch)
    assert snapshot.resume_from(seen, epoch) == ZERO  # the new epoch from its start
    assert not snapshot.recovers(seen)  # an older client that sends no epoch
    assert snapshot.recovers(ZERO, snapshot.epoch)
    latest = StreamId.parse(new.offsets[CHANNEL])
    assert snapshot.recovers(latest, snapshot.epoch)


async def test_a_reader_leaves_no_key_without_a_lifetime(
    async_redis: aioredis.Redis, keys: ChannelKeys, history: ChannelHistory
) -> None:
    snapshot = await history.snapshot(CHANNEL)  # nobody wrote the channel: the reader's epoch
    assert snapshot.latest == ZERO
    assert await expires_within(async_redis, keys.epoch(CHANNEL), LIFETIME * 1000)
    await asyncio.sleep(LIFETIME + 0.1)
    assert [key async for key in async_redis.scan_iter(match=f"{keys.tag(CHANNEL)}*")] == []


async def test_a_client_subscribed_across_the_expiry_recovers_with_its_old_epoch(
    publisher: ChannelPublisher, history: ChannelHistory
) -> None:
    old = await publisher.append(payment(1), [CHANNEL])
    await asyncio.sleep(LIFETIME + 0.1)  # idle for its lifetime; the client stays subscribed
    new = [await publisher.append(payment(n), [CHANNEL]) for n in (2, 3)]
    # It received p2 live (an entry of the new stream) and still holds the old epoch.
    seen, epoch = StreamId.parse(new[0].offsets[CHANNEL]), old.epochs[CHANNEL]

    snapshot = await history.snapshot(CHANNEL, seen, epoch)

    assert snapshot.epoch == new[0].epochs[CHANNEL] != epoch
    assert snapshot.carried == seen
    assert snapshot.recovers(seen, epoch)
    assert snapshot.resume_from(seen, epoch) == seen  # p3 only: nothing twice
    # An offset that names no entry of this stream is not carried.
    unseen = StreamId(seen.ms, seen.seq + 7)
    assert not (await history.snapshot(CHANNEL, unseen, epoch)).recovers(unseen, epoch)

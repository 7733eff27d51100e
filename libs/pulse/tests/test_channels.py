import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from pulse.channels import (
    ChannelAppend,
    ChannelPublisher,
    CounterIncrement,
    channel_epoch,
    epoch_started_ms,
    is_valid_channel,
    new_epoch,
)
from pulse.events import PAYMENT_CREATED, CloudEvent, new_event
from pulse.history_limits import HistoryLimit, HistoryLimits
from pulse.settings import PulseSettings
from pulse_dev.testing import stream_entries


@pytest.mark.parametrize(
    "name", ["payments", "alerts", "stats", "health", "account:A-1", "account:x@y.z"]
)
def test_design_channels_are_valid(name: str) -> None:
    assert is_valid_channel(name)


@pytest.mark.parametrize(
    "name", ["", "account:", "account:a b", "account:x\n", "payments2", "acct:1", "a" * 300]
)
def test_other_names_are_not(name: str) -> None:
    assert not is_valid_channel(name)


@pytest.fixture
def prefix(stack_prefix: str) -> str:
    """The test's Redis key prefix."""
    return f"pulse:{stack_prefix}"


@pytest.fixture
def publisher(async_redis: aioredis.Redis, prefix: str) -> ChannelPublisher:
    return ChannelPublisher(async_redis, prefix)


async def test_append_is_exactly_once_and_publishes_ready_frames(
    async_redis: aioredis.Redis, publisher: ChannelPublisher
) -> None:
    pubsub = async_redis.pubsub()
    await pubsub.ssubscribe(publisher.keys.live("payments"))
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    event = new_event(type=PAYMENT_CREATED, source="/t", data={"payment_id": "p"})

    first = await publisher.append(event, ["payments", "account:A"])
    again = await publisher.append(event, ["payments", "account:A"])

    assert first.applied
    assert not again.applied
    assert await async_redis.xlen(publisher.keys.history("payments")) == 1
    assert await async_redis.xlen(publisher.keys.history("account:A")) == 1
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message:
            break
    assert message is not None
    frame = orjson.loads(message["data"])
    assert frame == {
        "op": "event",
        "channel": "payments",
        "offset": first.offsets["payments"],
        "event": orjson.loads(event.to_json()),
    }
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py


async def test_concurrent_duplicates_apply_once(
    async_redis: aioredis.Redis, publisher: ChannelPublisher
) -> None:
    event = new_event(type=PAYMENT_CREATED, source="/t", data={})
    results = await asyncio.gather(*(publisher.append(event, ["payments"]) for _ in range(20)))
    assert sum(r.applied for r in results) == 1
    assert await async_redis.xlen(publisher.keys.history("payments")) == 1


async def test_invalid_channel_is_refused_before_touching_redis(
    async_redis: aioredis.Redis, publisher: ChannelPublisher
) -> None:
    good = new_event(type="t", source="/s", data={})
    bad = new_event(type="t", source="/s", data={})
    with pytest.raises(ValueError, match="invalid channel"):
        await publisher.append(bad, ["nope"])
    with pytest.raises(ValueError, match="invalid channel"):  # even after valid ones
        await publisher.append_many(
            [ChannelAppend(good, ["payments"]), ChannelAppend(bad, ["nope"])]
        )
    assert await async_redis.exists(publisher.keys.history("nope")) == 0
    assert await async_redis.xlen(publisher.keys.history("payments")) == 0
    assert not await async_redis.exists(publisher.keys.applied("payments", good.id))


def _stats_hashes(publisher: ChannelPublisher) -> tuple[str, str]:
    """A totals and a minute counter hash under the test's prefix."""
    return publisher.keys.counter("totals"), publisher.keys.counter("minute:1")


async def test_counters_move_with_the_append_exactly_once(
    async_redis: aioredis.Redis, publisher: ChannelPublisher, prefix: str
) -> None:
    totals, minute = _stats_hashes(publisher)
    counters = [
        CounterIncrement(totals, "count:PENDING", 1),
        CounterIncrement(totals, "amount:EUR", 1250),
        CounterIncrement(minute, "count", 1, ttl_seconds=3600),
    ]
    event = new_event(type=PAYMENT_CREATED, source="/t", data={})
    for _ in range(3):  # a replay after a crash, twice
        await publisher.append(event, ["payments"], counters=counters)
    assert await async_redis.hgetall(totals) == {b"count:PENDING": b"1", b"amount:EUR": b"1250"}
    assert 0 < await async_redis.ttl(minute) <= 3600
    assert await async_redis.ttl(totals) == -1


async def test_increments_of_one_hash_add_up_exactly_and_its_last_expiry_holds(
    async_redis: aioredis.Redis, publisher: ChannelPublisher, prefix: str
) -> None:
    totals, minute = _stats_hashes(publisher)
    big = 2**62  # far beyond the integers a Lua number holds exactly
    counters = [
        CounterIncrement(totals, "n", 1),
        CounterIncrement(minute, "n", 2, ttl_seconds=3600),
        CounterIncrement(totals, "n", 2),
        CounterIncrement(totals, "amount", big),
        CounterIncrement(totals, "amount", -1),
        CounterIncrement(minute, "m", 1, ttl_seconds=120),
    ]
    event = new_event(type=PAYMENT_CREATED, source="/t", data={})
    await publisher.append(event, ["payments"], counters=counters)
    assert await async_redis.hgetall(totals) == {b"n": b"3", b"amount": str(big - 1).encode()}
    assert await async_redis.hgetall(minute) == {b"n": b"2", b"m": b"1"}
    assert 0 < await async_redis.ttl(minute) <= 120  # set after each increment: the last one holds
    assert await async_redis.ttl(totals) == -1


async def test_counters_alone_are_guarded_too(
    async_redis: aioredis.Redis, publisher: ChannelPublisher, prefix: str
) -> None:
    event = new_event(type=PAYMENT_CREATED, source="/t", data={})
    counter = [CounterIncrement(publisher.keys.counter("c"), "n", 5)]
    first = await publisher.append(event, [], counters=counter)
    again = await publisher.append(event, [], counters=counter)
    assert (first.applied, first.counted, again.applied, again.counted) == (
        True,
        True,
        False,
        False,
    )
    assert await async_redis.hget(publisher.keys.counter("c"), "n") == b"5"


async def test_a_counter_outside_the_counters_hash_tag_is_refused(
    async_redis: aioredis.Redis, publisher: ChannelPublisher, prefix: str
) -> None:
    event = new_event(type=PAYMENT_CREATED, source="/t", data={})
    with pytest.raises(ValueError, match="not a counter key"):
        await publisher.append(
            event, ["payments"], counters=[CounterIncrement(f"{prefix}c", "n", 1)]
        )
    assert await async_redis.exists(publisher.keys.history("payments")) == 0


async def test_a_channel_keeps_its_epoch_until_its_data_is_lost(
    async_redis: aioredis.Redis, publisher: ChannelPublisher
) -> None:
    keys = publisher.keys
    first = await publisher.append(new_event(type="t", source="/s", data={}), ["payments"])
    second = await publisher.append(new_event(type="t", source="/s", data={}), ["payments"])
    epoch = first.epochs["payments"]
    assert epoch
    assert second.epochs["payments"] == epoch
    assert await channel_epoch(async_redis, keys, "payments", ttl_seconds=60) == epoch
    # A reader of a channel nobody wrote yet creates its epoch; the next append keeps it.
    fresh = await channel_epoch(async_redis, keys, "alerts", ttl_seconds=60)
    third = await publisher.append(new_event(type="t", source="/s", data={}), ["alerts"])
    assert third.epochs["alerts"] == fresh
    # Redis lost its data (restart without persistence): a new epoch, never the old one.
    await async_redis.delete(keys.history("payments"), keys.epoch("payments"))
    after = await publisher.append(new_event(type="t", source="/s", data={}), ["payments"])
    assert after.epochs["payments"] not in ("", epoch)


async def test_append_many_applies_each_once_in_order_as_append_would(
    async_redis: aioredis.Redis, publisher: ChannelPublisher, prefix: str
) -> None:
    pubsub = async_redis.pubsub()
    await pubsub.ssubscribe(publisher.keys.live("payments"))
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    events = [
        new_event(type=PAYMENT_CREATED, source="/t", data={"payment_id": f"p{i}"}) for i in range(5)
    ]
    counter = [CounterIncrement(publisher.keys.counter("c"), "n", 3)]
    already = await publisher.append(events[2], ["payments"], counters=counter)
    appends = [
        ChannelAppend(e, ["payments", "account:A"] if i % 2 else ["payments"], counters=counter)
        for i, e in enumerate(events)
    ]
    appends.append(ChannelAppend(events[0], ["payments"], counters=counter))  # a replay

    results = await publisher.append_many(appends)

    assert [r.applied for r in results] == [True, True, False, True, True, False]
    assert results[1].offsets.keys() == {"payments", "account:A"}
    assert results[1].epochs["payments"] == already.epochs["payments"]
    history = stream_entries(await async_redis.xrange(publisher.keys.history("payments")))
    assert [orjson.loads(fields[b"e"])["data"]["payment_id"] for _, fields in history] == [
        "p2", "p0", "p1", "p3", "p4"
    ]  # fmt: skip
    assert [offset.decode() for offset, _ in history[1:]] == [
        results[i].offsets["payments"] for i in (0, 1, 3, 4)
    ]
    assert await async_redis.xlen(publisher.keys.history("account:A")) == 2  # p1, p3
    assert await async_redis.hget(publisher.keys.counter("c"), "n") == b"15"  # five, not seven
    frames = []
    while (m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
        frames.append(orjson.loads(m["data"]))
    assert [f["event"]["data"]["payment_id"] for f in frames] == ["p2", "p0", "p1", "p3", "p4"]

    again = await publisher.append_many(appends)
    assert not any(r.applied for r in again)
    assert await async_redis.xlen(publisher.keys.history("payments")) == 5
    assert await publisher.append_many([]) == []
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py


async def test_a_service_publishers_guards_live_as_long_as_its_setting_says(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    settings = PulseSettings(redis_prefix=prefix, channel_guard_ttl_seconds=3600)
    publisher = ChannelPublisher.of(async_redis, settings)
    event = new_event(type=PAYMENT_CREATED, source="/test", data={"payment_id": "p-ttl"})
    await publisher.append(event, ["payments"])
    ttl = await async_redis.ttl(publisher.keys.applied("payments", event.id))
    assert 3590 <= ttl <= 3600


def payment(n: int) -> CloudEvent:
    return new_event(type=PAYMENT_CREATED, source="/t", data={"payment_id": f"p{n}"})


# Long enough that a loaded machine's pauses do not outlast it between two steps of a test.
LIFETIME = 4


def short_lived(async_redis: aioredis.Redis, prefix: str, ttl: int = 1) -> ChannelPublisher:
    """A publisher whose account channels live ``ttl`` seconds and keep 10 entries."""
    settings = PulseSettings(
        redis_prefix=prefix, history=HistoryLimits(account=HistoryLimit(size=10, ttl_seconds=ttl))
    )
    return ChannelPublisher.of(async_redis, settings)


async def channel_keys(
    async_redis: aioredis.Redis, publisher: ChannelPublisher, channel: str
) -> list[bytes]:
    """Every key of ``channel`` in Redis (its hash tag's)."""
    return [key async for key in async_redis.scan_iter(match=f"{publisher.keys.tag(channel)}*")]


async def expires_within(client: aioredis.Redis, key: str | bytes, ms: int) -> bool:
    """``key`` expires within ``ms`` or already did: never a key left without an expiry."""
    left = await client.pttl(key)
    return left == -2 or 0 <= left <= ms


async def test_an_idle_channel_leaves_no_key_behind_after_its_lifetime(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    publisher = short_lived(async_redis, prefix, ttl=LIFETIME)
    events = [payment(n) for n in range(3)]
    await publisher.append_many([ChannelAppend(event, ["account:A"]) for event in events])
    await publisher.append(events[0], ["account:A"])  # a replay renews its guard
    # A reader's epoch of a channel nobody wrote lives the channel's lifetime too.
    await channel_epoch(async_redis, publisher.keys, "account:B", ttl_seconds=LIFETIME)
    written = await channel_keys(async_redis, publisher, "account:A")
    assert len(written) == 5  # stream, epoch, three guards
    for key in written:
        assert await expires_within(async_redis, key, LIFETIME * 1000)
    assert await expires_within(async_redis, publisher.keys.epoch("account:B"), LIFETIME * 1000)

    await asyncio.sleep(LIFETIME + 0.1)

    assert await channel_keys(async_redis, publisher, "account:A") == []
    assert await channel_keys(async_redis, publisher, "account:B") == []


async def test_a_channel_in_use_keeps_its_entries_younger_than_its_lifetime(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    publisher = short_lived(async_redis, prefix, ttl=LIFETIME)
    first = await publisher.append(payment(1), ["account:A"])
    await asyncio.sleep(0.6 * LIFETIME)
    await publisher.append(payment(2), ["account:A"])
    await asyncio.sleep(0.6 * LIFETIME)  # past the first append's lifetime, within the second's

    history = stream_entries(await async_redis.xrange(publisher.keys.history("account:A")))
    assert [orjson.loads(f[b"e"])["data"]["payment_id"] for _, f in history][-1] == "p2"
    assert await async_redis.get(publisher.keys.epoch("account:A")) == (
        first.epochs["account:A"].encode()
    )
    assert 0 < await async_redis.pttl(publisher.keys.history("account:A")) <= LIFETIME * 1000


async def test_a_renewed_channel_keeps_the_entries_younger_than_its_lifetime(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    publisher = short_lived(async_redis, prefix, ttl=LIFETIME)
    await publisher.append(payment(1), ["account:A"])
    await asyncio.sleep(0.6 * LIFETIME)
    await publisher.append(payment(2), ["account:A"])  # p1 is younger than its lifetime

    history = stream_entries(await async_redis.xrange(publisher.keys.history("account:A")))
    assert [orjson.loads(f[b"e"])["data"]["payment_id"] for _, f in history] == ["p1", "p2"]


async def test_each_kind_of_channel_keeps_its_own_number_of_entries(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    publisher = short_lived(async_redis, prefix, ttl=60)
    await publisher.append_many(
        [ChannelAppend(payment(n), ["payments", "account:A"]) for n in range(300)]
    )
    # MAXLEN ~ trims whole stream nodes (100 entries each): at most one node above the size.
    assert await async_redis.xlen(publisher.keys.history("account:A")) <= 10 + 100
    assert await async_redis.xlen(publisher.keys.history("payments")) == 300
    assert 0 < await async_redis.ttl(publisher.keys.history("account:A")) <= 60
    assert 86_300 < await async_redis.ttl(publisher.keys.history("payments")) <= 86_400


async def test_guards_live_no_longer_than_their_channel(
    async_redis: aioredis.Redis, prefix: str
) -> None:
    publisher = short_lived(async_redis, prefix, ttl=60)
    event = payment(1)
    await publisher.append(event, ["account:A", "payments"])
    assert 0 < await async_redis.ttl(publisher.keys.applied("account:A", event.id)) <= 60
    assert await async_redis.ttl(publisher.keys.applied("payments", event.id)) > 86_000


async def test_positions_number_an_epochs_entries_and_a_replay_learns_its_own(
    async_redis: aioredis.Redis, publisher: ChannelPublisher
) -> None:
    events = [new_event(type=PAYMENT_CREATED, source="/t", data={"n": n}) for n in range(5)]
    channel = "account:positions"

    first = await publisher.append_many([ChannelAppend(e, [channel]) for e in events[:3]])
    replay = await publisher.append_many([ChannelAppend(e, [channel]) for e in events])
    await async_redis.delete(publisher.keys.history(channel), publisher.keys.epoch(channel))
    after_loss = await publisher.append(events[0], [channel, "payments"])

    numbers = [r.positions[channel].number for r in first]
    assert numbers == [1, 2, 3]
    assert [r.positions[channel] for r in replay[:3]] == [r.positions[channel] for r in first]
    assert [r.applied for r in replay] == [False, False, False, True, True]
    assert [r.positions[channel].number for r in replay[3:]] == [4, 5]
    entries = stream_entries(await async_redis.xrange(publisher.keys.history(channel)))
    # the guard outlived the lost stream here (a test's doing): the replay keeps its place,
    # epoch and all, and a new epoch begins for the next event
    assert after_loss.positions[channel] == first[0].positions[channel]
    assert entries == []
    assert (
        await channel_epoch(async_redis, publisher.keys, channel, ttl_seconds=60)
        != first[0].positions[channel].epoch
    )


def test_an_epoch_token_tells_when_it_began() -> None:
    token = new_epoch(now=1_733_000_000.123)
    assert epoch_started_ms(token) == 1_733_000_000_123
    assert new_epoch() != new_epoch()
    assert epoch_started_ms("0123456789ab") is None  # an older release's random token

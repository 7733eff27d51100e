"""Account activity in a real Redis: the window, replays and the recent country."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.asyncio import RedisCluster

from fraud_worker.activity import AccountActivityStore
from fraud_worker.rules import PaymentFacts
from pulse.blocklists import blocklist_key
from pulse.replication import Replication

START = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[AccountActivityStore]:
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"pulse:t{uuid.uuid4().hex[:10]}-"
    yield AccountActivityStore(client, prefix, window_seconds=60, country_memory_seconds=600)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def pay(
    seconds: int, amount: str = "10.00", currency: str = "EUR", country: str | None = None
) -> PaymentFacts:
    return PaymentFacts(
        "p", "acct", Decimal(amount), currency, "m", country, START + timedelta(seconds=seconds)
    )


async def test_the_window_counts_and_sums_same_currency_payments(
    store: AccountActivityStore,
) -> None:
    await store.record("e1", pay(0, "10.00"))
    await store.record("e2", pay(10, "5.50"))
    await store.record("e3", pay(20, "99.00", currency="USD"))
    activity = await store.record("e4", pay(30, "1.25"))
    assert activity.count == 4
    assert activity.amount_sum == Decimal("16.75")
    later = await store.record("e5", pay(75, "2.00"))  # e1 and e2 fell out of the window
    assert later.count == 3
    assert later.amount_sum == Decimal("3.25")


async def test_a_replayed_event_does_not_count_twice(store: AccountActivityStore) -> None:
    first = await store.record("e1", pay(0, "10.00", country="DE"))
    again = await store.record("e1", pay(0, "10.00", country="DE"))
    assert first == again
    assert again.count == 1


async def test_the_previous_country_is_remembered_and_stable_on_replay(
    store: AccountActivityStore,
) -> None:
    assert (await store.record("e1", pay(0, country="DE"))).previous_country is None
    moved = await store.record("e2", pay(5, country="FR"))
    assert moved.previous_country == "DE"
    replay = await store.record("e2", pay(5, country="FR"))
    assert replay.previous_country == "DE"
    assert (await store.record("e3", pay(6, country="FR"))).previous_country == "FR"


async def test_on_a_cluster_activity_and_blocklists_are_read_together(
    async_redis_cluster: RedisCluster,
) -> None:
    store = AccountActivityStore(
        async_redis_cluster,
        "pulse:",
        window_seconds=60,
        country_memory_seconds=600,
        replication=Replication(1, 2000),
    )
    await async_redis_cluster.sadd(blocklist_key("pulse:", "merchants"), "m-bad")
    for n in range(8):  # accounts on every node
        account = f"acct-{n}"
        payment = PaymentFacts(
            "p", account, Decimal("10.00"), "EUR", "m-bad", "DE", START + timedelta(seconds=n)
        )
        first = await store.record(f"e{n}", payment)
        again = await store.record(f"e{n}", payment)
        assert first == again
        assert (first.count, first.blocked_merchant, first.blocked_account) == (1, True, False)

"""Every Lua script call Pulse makes touches one Redis Cluster slot (static: no Redis).

Redis Cluster refuses a script whose keys hash to several slots (``CROSSSLOT``), and a
sharded ``SPUBLISH`` inside a script must be in the script's slot too. The calls are built
by the same code the services run, for any prefix the settings accept and any ids, braces
included (only the first ``{…}`` of a key is its hash tag).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from fraud_worker.activity import AccountActivityStore
from fraud_worker.rules import PaymentFacts
from notify_worker.rate_limit import EndpointRateLimit, rate_key
from pulse.channels import ChannelAppend, ChannelKeys, ChannelPublisher, CounterIncrement
from pulse.events import PAYMENT_CREATED, new_event
from pulse.health import HealthReporter
from pulse.idempotency import IdempotencyGuard
from pulse.replication import ScriptCall
from pulse.settings import PulseSettings
from stream_processor.stats import StatsKeys, counter_increments
from ws_gateway.presence import PresenceKeys

# Never connects: building script calls sends nothing.
CLIENT = aioredis.Redis.from_url("redis://127.0.0.1:1/0")

prefixes = st.from_regex(r"[^{}\x00]{1,64}", fullmatch=True)
ids = st.text(min_size=1, max_size=40)
channels = st.sampled_from(["payments", "alerts", "stats", "health"]) | st.from_regex(
    r"account:[A-Za-z0-9_.@-]{1,128}", fullmatch=True
)


def slots(keys: object) -> set[int]:
    assert isinstance(keys, (list, tuple))
    return {key_slot(str(key).encode()) for key in keys}


def assert_one_slot_each(calls: list[ScriptCall]) -> None:
    for call in calls:
        assert len(slots(call.keys)) == 1, call.keys


@given(prefixes, st.lists(channels, min_size=1, max_size=6, unique=True), ids)
def test_an_append_to_many_channels_with_counters_is_one_slot_per_call(
    prefix: str, names: list[str], guard: str
) -> None:
    publisher = ChannelPublisher(CLIENT, prefix)
    event = new_event(
        type=PAYMENT_CREATED,
        source="/t",
        data={"payment_id": "p", "amount": "1.00", "currency": "EUR", "status": "PENDING"},
    )
    counters = counter_increments(event, StatsKeys(prefix))
    calls = publisher.script_calls(
        [ChannelAppend(event, names, guard=guard, counters=counters), ChannelAppend(event, names)]
    )
    assert len(calls) == len(names) + 1  # one per channel, one for the counters
    assert_one_slot_each(calls)
    # A channel's call is in its slot — the live channel its script publishes on among
    # the keys — so one channel's appends run in order on one node.
    keys = ChannelKeys(prefix)
    for name in names:
        (mine,) = [c for c in calls if keys.live(name) in c.keys]
        assert slots(mine.keys) == slots([keys.history(name)])


@given(prefixes, ids)
def test_a_health_report_is_one_call_on_the_health_channels_slot(prefix: str, service: str) -> None:
    reporter = HealthReporter.of(CLIENT, PulseSettings(redis_prefix=prefix, service_name=service))
    event = reporter.event([{"connections": 1}], 5.0)
    (call,) = reporter.publisher.script_calls([reporter.appending(event)])
    assert_one_slot_each([call])
    assert slots(call.keys) == slots([ChannelKeys(prefix).history("health")])


@given(prefixes, ids)
def test_every_counter_hash_shares_the_counters_guard_slot(prefix: str, guard: str) -> None:
    keys = ChannelKeys(prefix)
    stats = StatsKeys(prefix)
    hashes = [stats.totals, stats.minute(0), stats.minute(29_000_000), keys.counter("x")]
    assert slots([*hashes, keys.counters_applied(guard)]) == slots([keys.counter("totals")])
    publisher = ChannelPublisher(CLIENT, prefix)
    event = new_event(type="t", source="/t", data={})
    (call,) = publisher.script_calls(
        [ChannelAppend(event, [], counters=[CounterIncrement(h, "n", 1) for h in hashes])]
    )
    assert len(slots(call.keys)) == 1


@given(prefixes, ids, ids, ids)
def test_fraud_activity_is_one_slot_per_call(
    prefix: str, event_id: str, account: str, merchant: str
) -> None:
    store = AccountActivityStore(CLIENT, prefix, window_seconds=60, country_memory_seconds=60)
    payment = PaymentFacts(
        "p", account, Decimal("1.00"), "EUR", merchant, "DE", datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert_one_slot_each(store.script_calls(event_id, payment))


@given(prefixes, st.sampled_from(["fraud", "notify"]), ids)
def test_an_idempotency_record_is_one_key(prefix: str, scope: str, key: str) -> None:
    guard = IdempotencyGuard(CLIENT, prefix, scope)
    assert guard.key(key).startswith(f"{prefix}{{idem:{scope}:")


@given(prefixes, channels)
def test_presence_scripts_and_their_live_channel_are_one_slot(prefix: str, name: str) -> None:
    keys = PresenceKeys(ChannelKeys(prefix))
    script_keys = keys.script_keys(name)
    assert ChannelKeys(prefix).live(name) in script_keys
    assert slots(script_keys) == slots([ChannelKeys(prefix).history(name)])


@given(prefixes, ids, st.integers(min_value=1, max_value=10_000))
def test_a_webhook_endpoints_rate_limit_is_one_call_in_its_endpoints_slot(
    prefix: str, endpoint: str, rate: int
) -> None:
    limit = EndpointRateLimit(CLIENT, prefix, rate_per_second=rate)
    call = limit.script_call(endpoint)
    assert_one_slot_each([call])
    assert list(call.keys) == [rate_key(prefix, endpoint)]
    assert rate_key(prefix, endpoint).startswith(f"{prefix}{{webhooks:")

"""Recovery from the durable record: a real gateway process, real Redis, the real AWS
emulator's audit table. A client whose offset predates the Redis history of its account
channel — trimmed, expired, or lost with Redis — gets every event after it exactly once, in
order, with ``recovered:true``, over WebSocket and SSE; beyond the per-request limit, or with
an event only Redis held in the gap, ``recovered:false``.

Rows are written as the stream processor writes them after each append: the event, its
account and where the append put it (:mod:`pulse.audit_positions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from pulse.audit_positions import channel_event_item, position_attributes
from pulse.channels import ChannelKeys, ChannelPosition, ChannelPublisher
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, PAYMENT_CREATED, CloudEvent, new_event
from pulse.history_limits import HistoryLimit, HistoryLimits
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    GATEWAY_SECRET,
    GatewayFactory,
    RunningGateway,
    next_frame,
    send_frame,
)

LIFETIME = 3
LIMIT = 6
LIMITS = HistoryLimits(account=HistoryLimit(size=100, ttl_seconds=LIFETIME))
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def gateway(
    gateways: GatewayFactory, stack_env: dict[str, str], topology: TopologyOutputs
) -> RunningGateway:
    del topology  # the events table and its index exist
    # every setting of the test's stack (AWS emulator, Redis), as the gateway's environment
    env: dict[str, Any] = {k: v for k, v in stack_env.items() if k != "PULSE_REDIS_PREFIX"}
    return gateways.start(
        prefix=stack_env["PULSE_REDIS_PREFIX"],
        secret=GATEWAY_SECRET,
        **env,
        PULSE_HISTORY=orjson.dumps({"account": {"size": 100, "ttl_seconds": LIFETIME}}).decode(),
        PULSE_DURABLE_RECOVERY_LIMIT=str(LIMIT),
        PULSE_DURABLE_SETTLE_SECONDS="0.5",
    )


class Account:
    """An account channel written as the pipeline writes it: Redis, then the audit row."""

    def __init__(self, redis: aioredis.Redis, prefix: str, settings: PulseSettings) -> None:
        self.id = f"acct-{uuid.uuid4().hex[:8]}"
        self.channel = f"account:{self.id}"
        self.keys = ChannelKeys(prefix)
        self._redis = redis
        self._publisher = ChannelPublisher(redis, prefix, history=LIMITS)
        self._ddb = aws_client("dynamodb", settings)
        self._table = settings.names.events_table
        self.positions: list[ChannelPosition] = []
        self.events: list[CloudEvent] = []

    async def pay(self, count: int = 1, *, durable: bool = True) -> None:
        for _ in range(count):
            event = new_event(type=PAYMENT_CREATED, source="/t", subject=uuid.uuid4().hex, data={})
            result = await self._publisher.append(event, [self.channel])
            position = result.positions[self.channel]
            if durable:
                self._put(
                    {
                        "payment_id": {"S": event.subject or ""},
                        "sk": {"S": str(len(self.events)).zfill(40)},
                        "account_id": {"S": self.id},
                        "event_id": {"S": event.id},
                        "event": {"S": event.to_json().decode()},
                        **position_attributes(position),
                    }
                )
            self.positions.append(position)
            self.events.append(event)

    async def notify(self, *, durable: bool = True) -> None:
        """A notification, with its row as the notify worker writes it (or, as an older
        release did, none)."""
        event = new_event(type=NOTIFICATION, source="/t", data={"account_id": self.id})
        result = await self._publisher.append(event, [self.channel])
        position = result.positions[self.channel]
        if durable:
            self._put(channel_event_item(event, self.id, position, expires_at=2**31))
        self.positions.append(position)
        self.events.append(event)

    def _put(self, item: dict[str, Any]) -> None:
        self._ddb.put_item(TableName=self._table, Item=item)

    def ids(self, start: int, end: int | None = None) -> list[str]:
        return [event.id for event in self.events[start:end]]

    async def trim(self, keep: int) -> None:
        await self._redis.xtrim(self.keys.history(self.channel), maxlen=keep, approximate=False)

    async def lose(self) -> None:
        """Every key of the channel gone, as when Redis comes back empty."""
        async for key in self._redis.scan_iter(match=f"{self.keys.tag(self.channel)}*"):
            await self._redis.delete(key)


@pytest.fixture
def account(
    async_redis: aioredis.Redis, gateway: RunningGateway, stack_settings: PulseSettings
) -> Account:
    return Account(async_redis, gateway.prefix, stack_settings)


@contextlib.asynccontextmanager
async def resumed(
    gateway: RunningGateway, account: Account, since: int, count: int
) -> AsyncIterator[tuple[dict[str, Any], list[str], ClientConnection]]:
    """Subscribed after the ``since``-th event: the ``subscribed`` frame, the ids of the
    next ``count`` events, and the connection (closed on leaving)."""
    position = account.positions[since]
    async with connect(gateway.ws_url(account.id)) as ws:
        subscribed = await send_frame(
            ws,
            op="subscribe",
            channel=account.channel,
            since=position.offset,
            epoch=position.epoch,
        )
        ids = [(await next_frame(ws, timeout=10))["event"]["id"] for _ in range(count)]
        yield subscribed, ids, ws


async def test_a_trimmed_history_is_recovered_from_the_audit_table_then_goes_on_live(
    gateway: RunningGateway, account: Account
) -> None:
    await account.pay(4)
    await account.notify()  # the notify worker's row puts it in its place
    await account.pay(3)
    await account.trim(keep=2)

    async with resumed(gateway, account, since=1, count=6) as (subscribed, ids, ws):
        assert subscribed["recovered"] is True
        assert ids == account.ids(2)  # four from the audit table, two from Redis
        await account.pay()
        assert (await next_frame(ws))["event"]["id"] == account.events[-1].id
        assert await send_frame(ws, op="ping") == {"op": "pong"}  # nothing twice in between


async def test_an_expired_history_is_recovered_across_the_new_epoch(
    gateway: RunningGateway, account: Account
) -> None:
    await account.pay(4)
    await asyncio.sleep(LIFETIME + 1)  # idle for its lifetime: every key expires
    await account.pay(2)  # a new epoch
    assert account.positions[4].epoch != account.positions[0].epoch

    async with resumed(gateway, account, since=1, count=4) as (subscribed, ids, ws):
        assert subscribed["recovered"] is True
        assert subscribed["epoch"] == account.positions[4].epoch
        assert ids == account.ids(2)
        assert await send_frame(ws, op="ping") == {"op": "pong"}


async def test_a_history_lost_with_redis_is_recovered_over_sse_too(
    gateway: RunningGateway, account: Account
) -> None:
    await account.pay(5)
    await account.lose()

    async with resumed(gateway, account, since=1, count=3) as (subscribed, ids, ws):
        assert subscribed["recovered"] is True
        assert ids == account.ids(2)
        await account.pay()  # the new epoch goes on live
        assert (await next_frame(ws))["event"]["id"] == account.events[-1].id

    since = account.positions[1]
    cursor = f"{account.channel}~{since.epoch}~{since.offset}"
    url = f"{gateway.http}/sse?channels={account.channel}&token={gateway.token(account.id)}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Last-Event-ID": cursor}) as response,
    ):
        frames = await _sse_frames(response, count=5)
    assert frames[0]["op"] == "subscribed"
    assert frames[0]["recovered"] is True
    assert [f["event"]["id"] for f in frames[1:]] == account.ids(2)


async def test_beyond_the_limit_or_with_an_event_only_redis_held_it_is_not_recovered(
    gateway: RunningGateway, account: Account
) -> None:
    await account.pay(LIMIT + 3)
    await account.trim(keep=1)
    async with resumed(gateway, account, since=0, count=1) as (subscribed, ids, _):
        pass
    assert subscribed["recovered"] is False  # LIMIT + 1 events missing from Redis
    assert ids == account.ids(-1)  # what Redis still holds is sent

    await account.notify(durable=False)  # appended by an older release: no row
    await account.pay(2)
    await account.trim(keep=1)
    start = len(account.events) - 4
    async with resumed(gateway, account, since=start, count=1) as (subscribed, ids, _):
        pass
    assert subscribed["recovered"] is False
    assert ids == account.ids(-1)


async def _sse_frames(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        async for line in response.content:
            text = line.decode().strip()
            if text.startswith("data:"):
                frames.append(orjson.loads(text[5:]))
                if len(frames) == count:
                    return frames
    return frames

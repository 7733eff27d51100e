"""Delivery across gateway processes and across Redis failures, with real processes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from pulse.channels import ChannelPublisher
from pulse.events import PAYMENT_CREATED, CloudEvent, new_event
from pulse.settings import PulseSettings
from pulse_dev.emulators import start_redis, stop_process
from pulse_dev.testing import GatewayFactory, RunningGateway, free_port, next_frame, send_frame

SECRET = "ws-gateway-delivery-secret-0123456789abcdef"
pytestmark = pytest.mark.timeout(90)


def _url(gateway: RunningGateway, sub: str) -> str:
    return gateway.ws_url(sub, ["ops"])


@pytest.fixture(scope="module")
def two_gateways(module_gateways: GatewayFactory) -> tuple[RunningGateway, RunningGateway]:
    """Two gateway processes on one Redis, as behind one load balancer."""
    first = module_gateways.start(secret=SECRET)
    return first, module_gateways.start(secret=SECRET, prefix=first.prefix)


@pytest.fixture(scope="module")
def prefix(two_gateways: tuple[RunningGateway, RunningGateway]) -> str:
    return two_gateways[0].prefix


async def _append(publisher: ChannelPublisher, channel: str, n: int) -> CloudEvent:
    event = new_event(type=PAYMENT_CREATED, source="/tests/ws-gateway", data={"n": n})
    await publisher.append(event, [channel])
    return event


async def _event_ids(ws: ClientConnection, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        frame = await next_frame(ws)
        assert frame["op"] == "event", frame
        ids.append(frame["event"]["id"])
    return ids


async def test_every_event_reaches_subscribers_of_either_process(
    two_gateways: tuple[RunningGateway, RunningGateway], async_redis: aioredis.Redis, prefix: str
) -> None:
    channel = f"account:{uuid.uuid4().hex[:8]}"
    publisher = ChannelPublisher(async_redis, prefix)
    a, b = two_gateways
    async with connect(_url(a, "ops-a")) as on_a, connect(_url(b, "ops-b")) as on_b:
        for ws in (on_a, on_b):
            assert (await send_frame(ws, op="subscribe", channel=channel))["op"] == "subscribed"
        sent = [(await _append(publisher, channel, n)).id for n in range(20)]
        assert await _event_ids(on_a, 20) == sent
        assert await _event_ids(on_b, 20) == sent


async def test_a_client_recovers_on_another_process_with_since_and_epoch(
    two_gateways: tuple[RunningGateway, RunningGateway], async_redis: aioredis.Redis, prefix: str
) -> None:
    channel = f"account:{uuid.uuid4().hex[:8]}"
    publisher = ChannelPublisher(async_redis, prefix)
    a, b = two_gateways
    async with connect(_url(a, "ops-a")) as ws:
        subscribed = await send_frame(ws, op="subscribe", channel=channel)
        await _append(publisher, channel, 0)
        last = await next_frame(ws)
    missed = [(await _append(publisher, channel, n)).id for n in range(1, 6)]
    async with connect(_url(b, "ops-b")) as ws:
        again = await send_frame(
            ws, op="subscribe", channel=channel, since=last["offset"], epoch=subscribed["epoch"]
        )
        assert (again["recovered"], again["epoch"]) == (True, subscribed["epoch"])
        assert await _event_ids(ws, 5) == missed
        live = await _append(publisher, channel, 6)
        assert await _event_ids(ws, 1) == [live.id]


async def _kill_live_connection(redis: aioredis.Redis, prefix: str) -> int:
    killed = 0
    for client in await redis.client_list():
        if client.get("name") == f"{prefix}ws-gateway-live":
            await redis.client_kill_filter(_id=client["id"])
            killed += 1
    return killed


async def test_events_published_while_pubsub_was_down_are_filled_from_history(
    two_gateways: tuple[RunningGateway, RunningGateway], async_redis: aioredis.Redis, prefix: str
) -> None:
    channel = f"account:{uuid.uuid4().hex[:8]}"
    publisher = ChannelPublisher(async_redis, prefix)
    a, _ = two_gateways
    async with connect(_url(a, "ops-a")) as ws:
        await send_frame(ws, op="subscribe", channel=channel)
        before = (await _append(publisher, channel, 0)).id
        assert await _event_ids(ws, 1) == [before]
        # Both processes lose their pub/sub connection; these events reach no subscriber.
        assert await _kill_live_connection(async_redis, prefix) == 2
        during = [(await _append(publisher, channel, n)).id for n in range(1, 8)]
        # The gateway reconnects within about a second and fills the gap, in order, once.
        assert await _event_ids(ws, 7) == during
        after = (await _append(publisher, channel, 8)).id
        assert await _event_ids(ws, 1) == [after]
        assert await send_frame(ws, op="ping") == {"op": "pong"}


async def test_a_redis_restart_tells_subscribers_their_history_is_gone(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    """Redis restarted empty: subscribers get recovered:false with a new epoch, never a
    silent gap, and then the new epoch's events."""
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, tmp_path)
    gateway = gateways.start(secret=SECRET, prefix="pulse:", REDIS_URL=redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        publisher = ChannelPublisher(client, "pulse:")
        async with connect(_url(gateway, "ops")) as ws:
            subscribed = await send_frame(ws, op="subscribe", channel="payments")
            first = await _append(publisher, "payments", 0)
            frame = await next_frame(ws)
            assert frame["event"]["id"] == first.id
            offset = frame["offset"]

            server.kill()
            server.wait()
            server = start_redis(port, tmp_path)
            notice = await next_frame(ws, timeout=15)
            assert notice["op"] == "subscribed"
            assert notice["recovered"] is False
            assert notice["epoch"] != subscribed["epoch"]
            await client.aclose()
            client = aioredis.Redis.from_url(redis_url)
            publisher = ChannelPublisher(client, "pulse:")
            second = await _append(publisher, "payments", 1)
            assert await _event_ids(ws, 1) == [second.id]

        # a client coming back with the old epoch's offset is told it cannot recover, and
        # gets the new epoch's events from its start
        async with connect(_url(gateway, "ops")) as ws:
            again = await send_frame(
                ws, op="subscribe", channel="payments", since=offset, epoch=subscribed["epoch"]
            )
            assert again["recovered"] is False
            assert again["epoch"] == notice["epoch"]
            assert await _event_ids(ws, 1) == [second.id]
    finally:
        await client.aclose()
        gateway.kill()
        stop_process(server)


async def test_a_subscriber_across_an_idle_expiry_misses_nothing_and_recovers(
    gateways: GatewayFactory, async_redis: aioredis.Redis
) -> None:
    """The channel expires idle while a client stays subscribed; its next events begin a new
    epoch. A gap fill and a later resubscribe with the old epoch both go on where the client
    is: no ``recovered:false``, nothing twice."""
    history = '{"account": {"size": 100, "ttl_seconds": 2}}'
    gateway = gateways.start(secret=SECRET, PULSE_HISTORY=history)
    publisher = ChannelPublisher.of(
        async_redis, PulseSettings(redis_prefix=gateway.prefix, history=history)
    )
    channel = f"account:{uuid.uuid4().hex[:8]}"
    async with connect(_url(gateway, "ops")) as ws:
        subscribed = await send_frame(ws, op="subscribe", channel=channel)
        first = await _append(publisher, channel, 0)
        assert await _event_ids(ws, 1) == [first.id]
        await asyncio.sleep(2.1)  # idle for its lifetime: every key of the channel expires
        renewed = await _append(publisher, channel, 1)
        frame = await next_frame(ws)
        assert frame["event"]["id"] == renewed.id
        assert await _kill_live_connection(async_redis, gateway.prefix) == 1
        during = (await _append(publisher, channel, 2)).id
        assert await _event_ids(ws, 1) == [during]  # filled, no notice of a lost history
    async with connect(_url(gateway, "ops")) as ws:
        again = await send_frame(
            ws, op="subscribe", channel=channel, since=frame["offset"], epoch=subscribed["epoch"]
        )
        assert again["recovered"] is True
        assert again["epoch"] != subscribed["epoch"]
        assert await _event_ids(ws, 1) == [during]

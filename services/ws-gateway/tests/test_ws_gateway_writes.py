"""The write path against a real gateway process: frames written straight to the transport,
the backlog of a client that reads slowly, permessage-deflate, a fan-out written by several
threads, and the heartbeat wheel."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from pulse.channels import ChannelPublisher
from pulse.events import PAYMENT_CREATED, new_event
from pulse.history_limits import HistoryLimit, HistoryLimits
from pulse_dev.testing import GatewayFactory, RunningGateway, next_frame

SECRET = "ws-gateway-writes-secret-0123456789abcdef"
SHORT_HISTORY = HistoryLimits(account=HistoryLimit(size=10, ttl_seconds=600))
PING_INTERVAL = 0.5
FRAME_TIMEOUT = 10.0  # a backed-up write path delivers late
THREADED_SUBSCRIBERS = 600  # above the size from which a fan-out's writes are shared
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def gateway(module_gateways: GatewayFactory) -> RunningGateway:
    return module_gateways.start(
        secret=SECRET,
        PULSE_LOG_LEVEL="debug",
        PULSE_SEND_QUEUE_SIZE="64",
        PULSE_PING_INTERVAL_SECONDS=str(PING_INTERVAL),
        PULSE_WS_COMPRESSION="true",  # offered; clients that do not ask get plain frames
    )


@pytest.fixture(scope="module")
def threaded_gateway(module_gateways: GatewayFactory) -> RunningGateway:
    return module_gateways.start(
        secret=SECRET,
        PULSE_FANOUT_THREADS="3",
        PULSE_MAX_CONNECTIONS_PER_USER=str(THREADED_SUBSCRIBERS),
    )


def _new_account() -> tuple[str, str]:
    """A fresh account id and its channel."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    return account, f"account:{account}"


async def _subscribe(ws: ClientConnection, channel: str) -> None:
    await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
    assert (await next_frame(ws, timeout=FRAME_TIMEOUT))["op"] == "subscribed"


async def test_frames_that_waited_for_a_slow_reader_arrive_all_and_in_order(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account, channel = _new_account()
    publisher = ChannelPublisher(async_redis, gateway.prefix, history=SHORT_HISTORY)
    blob = "x" * 200_000
    count = 60  # ~12 MB: more than the kernel's socket buffers, fewer frames than the limit
    # max_queue=1: the client stops reading after one frame until the test reads.
    async with connect(
        gateway.ws_url(account), max_queue=1, max_size=2**20, compression=None
    ) as ws:
        await _subscribe(ws, channel)
        for n in range(count):
            event = new_event(type=PAYMENT_CREATED, source="/tests", data={"n": n, "b": blob})
            await publisher.append(event, [channel])
        await asyncio.sleep(0.5)  # the gateway's writes back up meanwhile
        seen = [
            (await next_frame(ws, timeout=FRAME_TIMEOUT))["event"]["data"]["n"]
            for _ in range(count)
        ]
    assert seen == list(range(count))


async def test_a_fan_out_written_by_several_threads_reaches_every_subscriber_in_order(
    threaded_gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account, channel = _new_account()
    publisher = ChannelPublisher(async_redis, threaded_gateway.prefix)
    opening = asyncio.Semaphore(50)
    async with contextlib.AsyncExitStack() as stack:

        async def subscriber() -> ClientConnection:
            async with opening:
                url = threaded_gateway.ws_url(account)
                ws = await stack.enter_async_context(connect(url, compression=None))
                await _subscribe(ws, channel)
                return ws

        clients = await asyncio.gather(*(subscriber() for _ in range(THREADED_SUBSCRIBERS)))
        count = 20
        for n in range(count):
            event = new_event(type=PAYMENT_CREATED, source="/tests", data={"n": n})
            await publisher.append(event, [channel])

        async def numbers(ws: ClientConnection) -> list[int]:
            return [
                (await next_frame(ws, timeout=FRAME_TIMEOUT))["event"]["data"]["n"]
                for _ in range(count)
            ]

        seen = await asyncio.gather(*(numbers(ws) for ws in clients))
    assert all(got == list(range(count)) for got in seen)


async def test_a_client_with_permessage_deflate_gets_the_same_events(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account, channel = _new_account()
    publisher = ChannelPublisher(async_redis, gateway.prefix)
    async with (
        connect(gateway.ws_url(account)) as deflating,  # websockets offers deflate by default
        connect(gateway.ws_url(account), compression=None) as plain,
    ):
        assert deflating.response is not None
        assert "permessage-deflate" in deflating.response.headers.get(
            "Sec-WebSocket-Extensions", ""
        )
        await _subscribe(deflating, channel)
        await _subscribe(plain, channel)
        for n in range(5):
            event = new_event(type=PAYMENT_CREATED, source="/tests", data={"n": n})
            await publisher.append(event, [channel])
        for ws in (deflating, plain):
            assert [
                (await next_frame(ws, timeout=FRAME_TIMEOUT))["event"]["data"]["n"]
                for _ in range(5)
            ] == list(range(5))


async def test_a_client_that_never_answers_pings_is_dropped(gateway: RunningGateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        path = gateway.ws_url("mute").split(str(gateway.port), 1)[1]
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        # Read (so TCP is fine) but never answer: pings arrive, then the gateway hangs up.
        received = await asyncio.wait_for(reader.read(), 20)
        assert received.startswith(b"\x89\x00")  # a protocol ping, no close frame: dropped
    finally:
        writer.close()


async def test_a_quiet_client_that_answers_pings_stays_connected(
    gateway: RunningGateway,
) -> None:
    # websockets answers protocol pings by itself; its own pings are off.
    async with connect(gateway.ws_url("quiet"), ping_interval=None) as ws:
        await asyncio.sleep(PING_INTERVAL * 8)
        await ws.send(orjson.dumps({"op": "ping"}).decode())
        assert await next_frame(ws, timeout=FRAME_TIMEOUT) == {"op": "pong"}

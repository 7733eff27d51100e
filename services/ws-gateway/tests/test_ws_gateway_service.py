"""The gateway as a real process against a real Redis, driven by a websockets client."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pulse.auth import issue_token
from pulse.channels import AppendResult, ChannelKeys, ChannelPublisher, channel_epoch
from pulse.events import PAYMENT_CREATED, CloudEvent, new_event
from pulse.history_limits import HistoryLimit, HistoryLimits
from pulse_dev.testing import GatewayFactory, RunningGateway, next_frame, send_frame

SECRET = "ws-gateway-test-secret-0123456789abcdef"
SHORT_HISTORY = HistoryLimits(account=HistoryLimit(size=10, ttl_seconds=600))
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def gateway(module_gateways: GatewayFactory) -> RunningGateway:
    """One gateway for the module (each test uses its own channels); SIGTERM has its own."""
    return module_gateways.start(
        secret=SECRET,
        PULSE_LOG_LEVEL="debug",
        PULSE_SEND_QUEUE_SIZE="64",
        PULSE_TOKEN_GRACE_SECONDS="1",
        PULSE_CLIENT_OPS_PER_SECOND="50",
        PULSE_CLIENT_OPS_BURST="20",
    )


def _account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


async def _publish(
    redis: aioredis.Redis, prefix: str, channels: list[str], **data: Any
) -> tuple[CloudEvent, AppendResult]:
    event = new_event(type=PAYMENT_CREATED, source="/tests/ws-gateway", data=data)
    return event, await ChannelPublisher(redis, prefix).append(event, channels)


async def _collect(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    """Append every frame to ``into`` until the connection closes."""
    while True:
        into.append(await next_frame(ws))


async def _drain(ws: ClientConnection) -> None:
    async with asyncio.timeout(10):
        while True:
            await ws.recv()


async def _metrics(gateway: RunningGateway) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway.http}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def _sample(metrics: str, name: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


async def _numsub(redis: aioredis.Redis, key: str) -> int:
    result = await redis.pubsub_shardnumsub(key)
    return int(result[0][1])


async def test_events_reach_the_owner_and_ops_and_nobody_else(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account = _account()
    async with (
        connect(gateway.ws_url(account)) as owner,
        connect(gateway.ws_url("ops-1", ["ops"])) as ops,
        connect(gateway.ws_url("intruder")) as intruder,
    ):
        subscribed = await send_frame(owner, op="subscribe", channel=f"account:{account}")
        keys, channel = ChannelKeys(gateway.prefix), f"account:{account}"
        epoch = await channel_epoch(async_redis, keys, channel, ttl_seconds=86_400)
        assert subscribed == {
            "op": "subscribed",
            "channel": f"account:{account}",
            "offset": "0-0",
            "epoch": epoch,
            "recovered": False,
        }
        assert (await send_frame(ops, op="subscribe", channel="payments"))["op"] == "subscribed"
        refused = await send_frame(intruder, op="subscribe", channel=f"account:{account}")
        assert refused["op"] == "error"
        assert refused["code"] == "forbidden"
        refused = await send_frame(intruder, op="subscribe", channel="payments")
        assert refused["code"] == "forbidden"

        event, result = await _publish(
            async_redis, gateway.prefix, ["payments", f"account:{account}"], account_id=account
        )
        got = await next_frame(owner)
        assert got == {
            "op": "event",
            "channel": f"account:{account}",
            "offset": result.offsets[f"account:{account}"],
            "event": orjson.loads(event.to_json()),
        }
        got_ops = await next_frame(ops)
        assert got_ops["channel"] == "payments"
        assert got_ops["offset"] == result.offsets["payments"]
        assert got_ops["event"]["id"] == event.id
        # the intruder is still connected and saw no event: its next frame is the pong
        assert await send_frame(intruder, op="ping") == {"op": "pong"}


async def test_handshake_refuses_missing_invalid_and_expired_tokens(
    gateway: RunningGateway,
) -> None:
    bad = issue_token("another-secret-of-enough-length-123456", sub="a")
    expired = issue_token(SECRET, sub="a", ttl_seconds=-30)
    for url, message in (
        (gateway.ws, b"send Authorization: Bearer"),
        (f"{gateway.ws}?token=not-a-jwt", b"the token is not valid"),
        (f"{gateway.ws}?token={bad}", b"the token is not valid"),
        (f"{gateway.ws}?token={expired}", b"the token has expired"),
    ):
        with pytest.raises(InvalidStatus) as info:
            async with connect(url):
                pass
        assert info.value.response.status_code == 401
        assert message in info.value.response.body

    # the token may also come as a bearer header
    token = issue_token(SECRET, sub="header-user")
    async with connect(gateway.ws, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert await send_frame(ws, op="ping") == {"op": "pong"}

    metrics = await _metrics(gateway)
    assert _sample(metrics, 'pulse_ws_auth_failures_total{reason="expired"}') >= 1
    assert _sample(metrics, 'pulse_ws_auth_failures_total{reason="invalid"}') >= 2


async def test_one_redis_subscription_per_channel_shared_by_local_clients(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account = _account()
    channel = f"account:{account}"
    live_key = ChannelKeys(gateway.prefix).live(channel)
    async with (
        connect(gateway.ws_url(account)) as first,
        connect(gateway.ws_url(account)) as second,
    ):
        for ws in (first, second):
            assert (await send_frame(ws, op="subscribe", channel=channel))["op"] == "subscribed"
        assert await _numsub(async_redis, live_key) == 1

        event, _ = await _publish(async_redis, gateway.prefix, [channel])
        for ws in (first, second):
            assert (await next_frame(ws))["event"]["id"] == event.id

        assert await send_frame(first, op="unsubscribe", channel=channel) == {
            "op": "unsubscribed",
            "channel": channel,
        }
        assert await _numsub(async_redis, live_key) == 1
        again = await send_frame(first, op="unsubscribe", channel=channel)
        assert again["code"] == "not_subscribed"

        # the first client no longer receives; the second still does
        event2, _ = await _publish(async_redis, gateway.prefix, [channel])
        assert (await next_frame(second))["event"]["id"] == event2.id
        assert await send_frame(first, op="ping") == {"op": "pong"}

        assert (await send_frame(second, op="unsubscribe", channel=channel))["op"] == "unsubscribed"
        async with asyncio.timeout(3):
            while await _numsub(async_redis, live_key) != 0:
                await asyncio.sleep(0.05)


async def test_closing_a_connection_releases_its_subscriptions(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account = _account()
    live_key = ChannelKeys(gateway.prefix).live(f"account:{account}")
    async with connect(gateway.ws_url(account)) as ws:
        await send_frame(ws, op="subscribe", channel=f"account:{account}")
        assert await _numsub(async_redis, live_key) == 1
    async with asyncio.timeout(3):
        while await _numsub(async_redis, live_key) != 0:
            await asyncio.sleep(0.05)


async def test_since_replays_what_was_missed_then_continues_live_without_duplicates(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account = _account()
    channel = f"account:{account}"
    async with connect(gateway.ws_url(account)) as watcher:
        await send_frame(watcher, op="subscribe", channel=channel)
        offsets, live_frames = [], []
        for n in range(3):
            _, result = await _publish(async_redis, gateway.prefix, [channel], n=n)
            offsets.append(result.offsets[channel])
            live_frames.append(await asyncio.wait_for(watcher.recv(), 5))
    epoch = result.epochs[channel]

    async with connect(gateway.ws_url(account)) as ws:
        subscribed = await send_frame(
            ws, op="subscribe", channel=channel, since=offsets[0], epoch=epoch
        )
        assert subscribed == {
            "op": "subscribed",
            "channel": channel,
            "offset": offsets[2],
            "epoch": epoch,
            "recovered": True,
        }
        # the replayed frames are byte for byte the frames live clients got
        replayed = [await asyncio.wait_for(ws.recv(), 5) for _ in range(2)]
        assert replayed == live_frames[1:]

        event, _ = await _publish(async_redis, gateway.prefix, [channel], n=3)
        assert (await next_frame(ws))["event"]["id"] == event.id
        assert await send_frame(ws, op="ping") == {"op": "pong"}

    # once the history no longer reaches back, the client is told so
    await async_redis.xtrim(
        ChannelKeys(gateway.prefix).history(channel), maxlen=1, approximate=False
    )
    async with connect(gateway.ws_url(account)) as ws:
        subscribed = await send_frame(ws, op="subscribe", channel=channel, since=offsets[0])
        assert subscribed["recovered"] is False
        assert (await next_frame(ws))["event"]["id"] == event.id  # what is left is still sent


async def test_an_offset_of_another_epoch_is_not_recovered_and_the_epoch_is_replayed(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account = _account()
    channel = f"account:{account}"
    zeroth, first = await _publish(async_redis, gateway.prefix, [channel], n=0)
    oneth, _ = await _publish(async_redis, gateway.prefix, [channel], n=1)
    async with connect(gateway.ws_url(account)) as ws:
        # An offset of the old epoch names no entry of this one (an offset that did would
        # have been received from it: test_ws_gateway_delivery's subscriber across an expiry).
        subscribed = await send_frame(
            ws, op="subscribe", channel=channel, since="1-0", epoch="old-epoch"
        )
        assert subscribed["recovered"] is False
        assert subscribed["epoch"] == first.epochs[channel]
        # the offset is void in this epoch: every event of the epoch is owed, from its start
        assert (await next_frame(ws))["event"]["id"] == zeroth.id
        assert (await next_frame(ws))["event"]["id"] == oneth.id
        live, _ = await _publish(async_redis, gateway.prefix, [channel], n=2)
        assert (await next_frame(ws))["event"]["id"] == live.id
        assert await send_frame(ws, op="ping") == {"op": "pong"}


async def test_bad_frames_get_error_frames_and_the_connection_stays(
    gateway: RunningGateway,
) -> None:
    async with connect(gateway.ws_url("frames-user")) as ws:
        await ws.send("{not json")
        assert (await next_frame(ws))["code"] == "bad_request"
        await ws.send(b'{"op":"ping"}')
        assert (await next_frame(ws))["code"] == "bad_request"
        assert (await send_frame(ws, op="dance"))["code"] == "unknown_op"
        assert (await send_frame(ws, op="subscribe", channel=7))["code"] == "bad_request"
        assert (await send_frame(ws, op="subscribe", channel="nope"))["code"] == "unknown_channel"
        bad_since = await send_frame(ws, op="subscribe", channel="stats", since="x")
        assert bad_since["code"] == "bad_request"
        assert (await send_frame(ws, op="unsubscribe", channel="stats"))["code"] == "not_subscribed"
        assert await send_frame(ws, op="ping") == {"op": "pong"}

        await ws.send('{"op":"ping","pad":"' + "x" * 70_000 + '"}')
        with pytest.raises(ConnectionClosed) as info:
            await next_frame(ws)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1009


async def test_a_client_that_keeps_sending_after_an_oversized_frame_still_sees_1009(
    gateway: RunningGateway,
) -> None:
    """The gateway stops reading at the oversized frame; what the client sends after it must
    not turn the close into a reset (which would throw away the close frame unread)."""
    for _ in range(3):
        async with connect(gateway.ws_url("oversize-user"), max_size=None) as ws:
            await ws.send('{"op":"ping","pad":"' + "x" * 200_000 + '"}')
            with contextlib.suppress(ConnectionClosed):
                for _ in range(50):
                    await ws.send('{"op":"ping"}')
                    await asyncio.sleep(0.002)
            with pytest.raises(ConnectionClosed) as info:
                await _drain(ws)
            assert info.value.rcvd is not None, "no close frame: the connection was reset"
            assert info.value.rcvd.code == 1009


async def test_an_expired_token_closes_the_connection_with_4001(gateway: RunningGateway) -> None:
    async with connect(gateway.ws_url("short-lived", ttl=2)) as ws:
        assert (await send_frame(ws, op="subscribe", channel="stats"))["op"] == "subscribed"
        with pytest.raises(ConnectionClosed) as info:
            await next_frame(ws, timeout=6)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 4001
        assert info.value.rcvd.reason == "token expired"


async def test_a_refreshed_token_keeps_the_connection_and_its_channels(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account = _account()
    channel = f"account:{account}"
    async with connect(gateway.ws_url(account, ttl=2)) as ws:
        assert (await send_frame(ws, op="subscribe", channel=channel))["op"] == "subscribed"
        bad = await send_frame(ws, op="refresh", token="not-a-jwt")
        assert (bad["op"], bad["code"]) == ("error", "unauthorized")
        fresh = issue_token(SECRET, sub=account, ttl_seconds=600)
        refreshed = await send_frame(ws, op="refresh", token=fresh)
        assert refreshed["op"] == "refreshed"
        assert refreshed["exp"] > time.time() + 500
        await asyncio.sleep(3.5)  # past the first token's expiry and its grace period
        event, _ = await _publish(async_redis, gateway.prefix, [channel])
        assert (await next_frame(ws))["event"]["id"] == event.id


async def test_a_refresh_for_another_subject_closes_with_4003(gateway: RunningGateway) -> None:
    async with connect(gateway.ws_url("alice")) as ws:
        await ws.send(
            orjson.dumps({"op": "refresh", "token": issue_token(SECRET, sub="mallory")}).decode()
        )
        with pytest.raises(ConnectionClosed) as info:
            await next_frame(ws, timeout=5)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 4003


async def test_a_refresh_without_ops_drops_the_ops_channels(gateway: RunningGateway) -> None:
    async with connect(gateway.ws_url("carol", ["ops"])) as ws:
        assert (await send_frame(ws, op="subscribe", channel="payments"))["op"] == "subscribed"
        await ws.send(
            orjson.dumps({"op": "refresh", "token": issue_token(SECRET, sub="carol")}).decode()
        )
        dropped = await next_frame(ws)
        assert (dropped["op"], dropped["code"], dropped["channel"]) == (
            "error",
            "forbidden",
            "payments",
        )
        assert (await next_frame(ws))["op"] == "refreshed"
        gone = await send_frame(ws, op="unsubscribe", channel="payments")
        assert gone["code"] == "not_subscribed"


async def test_a_client_flooding_ops_is_refused_then_closed_with_4029(
    gateway: RunningGateway,
) -> None:
    async with connect(gateway.ws_url("flooder")) as ws:
        frames: list[dict[str, Any]] = []
        # Read while flooding, so the gateway's close frame is taken in as soon as it comes
        # (a client that only writes may find the socket gone before it reads the close).
        reader = asyncio.create_task(_collect(ws, frames))
        with contextlib.suppress(ConnectionClosed):
            for _ in range(100):  # burst 20, 50/s: most of these are over the limit
                await ws.send('{"op":"ping"}')
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(reader, 10)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 4029
        assert {"op": "pong"} in frames
        assert any(f.get("code") == "rate_limited" for f in frames)
    # a polite client is not affected
    async with connect(gateway.ws_url("polite")) as ws:
        for _ in range(5):
            assert await send_frame(ws, op="ping") == {"op": "pong"}


async def test_a_client_that_does_not_read_is_closed_with_4008(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account = _account()
    channel = f"account:{account}"
    publisher = ChannelPublisher(async_redis, gateway.prefix, history=SHORT_HISTORY)
    blob = "x" * 60_000
    async with connect(gateway.ws_url(account), max_queue=1, max_size=2**20) as ws:
        await send_frame(ws, op="subscribe", channel=channel)
        for n in range(2000):  # until TCP buffers and the send queue (64) are full
            event = new_event(type=PAYMENT_CREATED, source="/tests", data={"n": n, "b": blob})
            await publisher.append(event, [channel])
            if n % 50 == 0:
                await asyncio.sleep(0.05)
                if ws.protocol.close_rcvd is not None:
                    break
        with pytest.raises(ConnectionClosed) as info:
            await _drain(ws)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 4008


async def test_http_endpoints(gateway: RunningGateway) -> None:
    base = gateway.http
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == {"redis": "ok"}
        async with http.get(f"{base}/nope") as resp:
            assert resp.status == 404
    async with connect(gateway.ws_url("metrics-user")):
        metrics = await _metrics(gateway)
    assert _sample(metrics, "pulse_ws_connections") >= 1
    assert "pulse_ws_messages_sent_total" in metrics
    assert "pulse_ws_subscriptions" in metrics


async def test_sigterm_closes_clients_with_going_away_and_exits_0(
    gateways: GatewayFactory,
) -> None:
    gateway = gateways.start(secret=SECRET)
    async with connect(gateway.ws_url("ops", ["ops"])) as ws:
        assert (await send_frame(ws, op="subscribe", channel="payments"))["op"] == "subscribed"
        stopping = asyncio.create_task(asyncio.to_thread(gateway.process.stop))
        with pytest.raises(ConnectionClosed) as info:
            await next_frame(ws, timeout=10)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
        assert await stopping == 0, gateway.process.logs()[-3000:]
    assert "stopped" in gateway.process.logs()


async def test_ephemeral_publishes_reach_subscribers_are_throttled_and_never_stored(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    account = _account()
    channel = f"account:{account}"
    async with (
        connect(gateway.ws_url(account)) as typing,
        connect(gateway.ws_url(account)) as other_tab,
        connect(gateway.ws_url("ops-1", ["ops"])) as ops,
    ):
        await send_frame(other_tab, op="subscribe", channel=channel)
        assert (await send_frame(typing, op="publish", channel=channel, data={"typing": True})) == {
            "op": "published",
            "channel": channel,
        }
        assert await next_frame(other_tab) == {
            "op": "message",
            "channel": channel,
            "from": account,
            "data": {"typing": True},
        }
        assert await async_redis.exists(ChannelKeys(gateway.prefix).history(channel)) == 0
        for target, who in (("payments", ops), (f"account:{_account()}", typing)):
            refused = await send_frame(who, op="publish", channel=target, data={})
            assert (refused["code"], refused["channel"]) == ("forbidden", target)
        answers = [
            (await send_frame(typing, op="publish", channel=channel, data={"n": n}))
            for n in range(12)  # the publish bucket holds 10
        ]
        assert any(a.get("code") == "rate_limited" for a in answers)


async def test_an_offset_inside_a_published_message_never_silences_the_channel(
    gateway: RunningGateway, async_redis: aioredis.Redis
) -> None:
    """A client's ephemeral message is its own JSON: an "offset" key in it must not move the
    position the gateway has delivered, or every later event of the channel would be dropped
    as already seen — for every subscriber of the channel on every gateway."""
    account = _account()
    channel = f"account:{account}"
    async with (
        connect(gateway.ws_url(account)) as sender,
        connect(gateway.ws_url("ops-2", ["ops"])) as watcher,
    ):
        await send_frame(watcher, op="subscribe", channel=channel)
        crafted = {"offset": "99999999999999-0", "op": "event"}
        assert (await send_frame(sender, op="publish", channel=channel, data=crafted))["op"] == (
            "published"
        )
        assert (await next_frame(watcher))["data"] == crafted
        event, result = await _publish(async_redis, gateway.prefix, [channel])
        delivered = await next_frame(watcher)
        assert delivered["op"] == "event"
        assert delivered["event"]["id"] == event.id
        assert delivered["offset"] == result.offsets[channel]

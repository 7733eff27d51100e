"""An account reads its own channel and nobody else's: WebSocket, SSE, history, presence.

alice (no roles) tries bob's channel, the ops channels and channel names built to slip past
a careless check (case, blanks, a trailing newline, a NUL, a comma list, a path, a wildcard,
percent-encoding) through every door; each attempt is refused and none of bob's events
reaches her, while her own channel works through the same doors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from yarl import URL

from pulse.channels import ChannelPublisher
from pulse.events import PAYMENT_CREATED, new_event

pytestmark = pytest.mark.timeout(60)

OWN = "account:alice"
FOREIGN = (
    "account:bob",
    "payments",
    "alerts",
    "health",
    "account:Alice",
    "account:alice\n",
    "account:bob\n",
    "account:alice\x00",
    " account:alice",
    "account:alice ",
    "account:alice,account:bob",
    "account:alice/../bob",
    "account:*",
    "account:",
    "account:%62ob",
    "ACCOUNT:alice",
)
REFUSED_CODES = {"forbidden", "unknown_channel", "bad_request"}


def _url(base: str, channel: str, door: str) -> URL:
    return URL(f"{base}/v1/channels/{quote(channel, safe='')}/{door}", encoded=True)


async def _frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return dict(orjson.loads((await ws.receive(5)).data))


async def _send(ws: aiohttp.ClientWebSocketResponse, **frame: Any) -> dict[str, Any]:
    await ws.send_str(orjson.dumps(frame).decode())
    return await _frame(ws)


@pytest.fixture
async def publisher(redis_url: str, gateway: Any) -> Any:
    client = aioredis.Redis.from_url(redis_url)
    yield ChannelPublisher(client, gateway.prefix)
    await client.aclose()


async def _append(publisher: ChannelPublisher, channel: str, owner: str) -> str:
    event = new_event(type=PAYMENT_CREATED, source="/tests/security", data={"owner": owner})
    await publisher.append(event, [channel])
    return event.id


async def test_another_accounts_channel_is_refused_at_every_door(
    gateway: Any, http: aiohttp.ClientSession, mint: Any, publisher: ChannelPublisher
) -> None:
    bob_event = await _append(publisher, "account:bob", "bob")
    alice = mint(sub="alice")
    bearer = {"Authorization": f"Bearer {alice}"}
    async with http.ws_connect(f"{gateway.ws}?token={alice}") as ws:
        for channel in FOREIGN:
            for op in ("subscribe", "publish"):
                extra = {"data": {"x": 1}} if op == "publish" else {"since": "0-0"}
                reply = await _send(ws, op=op, channel=channel, **extra)
                assert reply["op"] == "error", (op, channel, reply)
                assert reply["code"] in REFUSED_CODES, (op, channel, reply)
            for door in ("history", "presence"):
                async with http.get(_url(gateway.http, channel, door), headers=bearer) as resp:
                    body = await resp.read()
                    assert resp.status in {400, 403, 404}, (door, channel, resp.status)
                    assert bob_event.encode() not in body
            sse = URL(f"{gateway.http}/sse", encoded=True).with_query(channels=channel)
            async with http.get(sse, headers=bearer) as resp:
                assert resp.status in {400, 403, 404}, ("sse", channel, resp.status)

        # Her own channel, through the same doors, works; bob's events never show up.
        subscribed = await _send(ws, op="subscribe", channel=OWN, since="0-0")
        assert subscribed["op"] == "subscribed"
        await _append(publisher, "account:bob", "bob")
        mine = await _append(publisher, OWN, "alice")
        frame = await _frame(ws)
        assert (frame["op"], frame["event"]["id"]) == ("event", mine)
    async with http.get(_url(gateway.http, OWN, "history"), headers=bearer) as resp:
        assert resp.status == 200
        events = (await resp.json())["events"]
        assert [e["event"]["data"]["owner"] for e in events] == ["alice"]


async def test_ops_reads_any_account_and_a_plain_user_only_stats(
    gateway: Any, http: aiohttp.ClientSession, mint: Any
) -> None:
    ops = {"Authorization": f"Bearer {mint(sub='oscar', roles=['ops'])}"}
    plain = {"Authorization": f"Bearer {mint(sub='carol')}"}
    for channel, headers, status in (
        ("account:bob", ops, 200),
        ("payments", ops, 200),
        ("stats", plain, 200),
        ("payments", plain, 403),
        ("alerts", plain, 403),
        ("health", ops, 200),
        ("health", plain, 403),
        ("account:bob", plain, 403),
    ):
        async with http.get(_url(gateway.http, channel, "history"), headers=headers) as resp:
            assert resp.status == status, (channel, resp.status)


async def test_a_subscriber_of_its_own_channel_gets_only_its_own_events_live(
    gateway: Any, http: aiohttp.ClientSession, mint: Any, publisher: ChannelPublisher
) -> None:
    async with (
        http.ws_connect(f"{gateway.ws}?token={mint(sub='dave')}") as dave,
        http.ws_connect(f"{gateway.ws}?token={mint(sub='erin')}") as erin,
    ):
        assert (await _send(dave, op="subscribe", channel="account:dave"))["op"] == "subscribed"
        assert (await _send(erin, op="subscribe", channel="account:erin"))["op"] == "subscribed"
        sent = {
            "dave": [await _append(publisher, "account:dave", "dave") for _ in range(3)],
            "erin": [await _append(publisher, "account:erin", "erin") for _ in range(3)],
        }
        for name, ws in (("dave", dave), ("erin", erin)):
            got = [(await _frame(ws))["event"]["id"] for _ in range(3)]
            assert got == sent[name]
            # nothing else is waiting for them
            assert await _send(ws, op="ping") == {"op": "pong"}

"""History and Server-Sent Events over HTTP, against a real gateway process and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from pulse.auth import issue_token
from pulse.channels import ChannelKeys, ChannelPublisher
from pulse.events import PAYMENT_CREATED, CloudEvent, new_event
from pulse_dev.testing import GatewayFactory, RunningGateway
from ws_gateway.sse import Cursor

SECRET = "ws-gateway-http-secret-0123456789abcdef"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def gateway(module_gateways: GatewayFactory) -> RunningGateway:
    return module_gateways.start(secret=SECRET)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _auth(sub: str, roles: list[str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, sub=sub, roles=roles)}"}


async def _append(redis: aioredis.Redis, prefix: str, channel: str, n: int) -> CloudEvent:
    event = new_event(type=PAYMENT_CREATED, source="/tests/ws-gateway", data={"n": n})
    await ChannelPublisher(redis, prefix).append(event, [channel])
    return event


async def test_history_pages_forward_from_since_or_returns_the_newest(
    gateway: RunningGateway, async_redis: aioredis.Redis, http: aiohttp.ClientSession
) -> None:
    base, prefix = gateway.http, gateway.prefix
    account = f"acct-{uuid.uuid4().hex[:8]}"
    url = f"{base}/v1/channels/account:{account}/history"
    sent = [await _append(async_redis, prefix, f"account:{account}", n) for n in range(5)]

    async with http.get(url, params={"limit": "3"}, headers=_auth(account)) as resp:
        assert resp.status == 200
        newest = await resp.json()
    assert [e["event"]["id"] for e in newest["events"]] == [e.id for e in sent[2:]]
    assert newest["offset"] == newest["events"][-1]["offset"]

    first = newest["events"][0]["offset"]
    params = {"since": first, "limit": "1", "epoch": newest["epoch"]}
    async with http.get(url, params=params, headers=_auth(account)) as resp:
        page = await resp.json()
    assert page["recovered"] is True
    assert [e["event"]["id"] for e in page["events"]] == [sent[3].id]

    # An offset of another epoch that names no entry here means nothing here.
    stale_params = {**params, "since": "1-0", "epoch": "another-epoch"}
    async with http.get(url, params=stale_params, headers=_auth(account)) as resp:
        stale = await resp.json()
    assert (stale["recovered"], stale["events"]) == (False, [])
    # One that names an entry of this stream was received from it (a client subscribed while
    # the channel expired idle and began this epoch): it goes on from there.
    async with http.get(url, params={**params, "epoch": "older"}, headers=_auth(account)) as resp:
        carried = await resp.json()
    assert carried["recovered"] is True
    assert [e["event"]["id"] for e in carried["events"]] == [sent[3].id]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/channels/account:someone-else/history", _auth("me"), 403),
        ("/v1/channels/payments/history", _auth("me"), 403),
        ("/v1/channels/nonsense/history", _auth("me"), 404),
        ("/v1/channels/stats/history", {}, 401),
        ("/v1/channels/stats/history?since=yesterday", _auth("me"), 400),
        ("/v1/channels/stats/history?limit=100000", _auth("me"), 400),
        ("/sse?channels=account:someone-else", _auth("me"), 403),
        ("/sse?channels=stats", {}, 401),
        ("/sse", _auth("me"), 400),
    ],
)
async def test_http_reads_are_authorised_like_subscriptions(
    gateway: RunningGateway,
    http: aiohttp.ClientSession,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    async with http.get(gateway.http + path, headers=headers) as resp:
        assert resp.status == status


class SseReader:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.last_id: str | None = None

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message's JSON data (comments skipped); remembers its id."""
        data = None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.response.content.readline()).decode().rstrip("\n")
                if line.startswith("id: "):
                    self.last_id = line[4:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data is not None:
                    return dict(orjson.loads(data))


async def test_sse_streams_events_and_resumes_with_last_event_id(
    gateway: RunningGateway, async_redis: aioredis.Redis, http: aiohttp.ClientSession
) -> None:
    base, prefix = gateway.http, gateway.prefix
    account = f"acct-{uuid.uuid4().hex[:8]}"
    channels = f"account:{account},stats"
    token = issue_token(SECRET, sub=account)
    async with http.get(f"{base}/sse", params={"channels": channels, "token": token}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        sse = SseReader(resp)
        assert {(await sse.next())["channel"] for _ in range(2)} == {f"account:{account}", "stats"}
        first = await _append(async_redis, prefix, f"account:{account}", 0)
        frame = await sse.next()
        assert (frame["op"], frame["event"]["id"]) == ("event", first.id)
        resume_from = sse.last_id
    assert resume_from is not None
    assert Cursor.parse(resume_from).positions[f"account:{account}"].offset is not None

    # disconnected: these are sent meanwhile, and must arrive once, in order, on resume
    missed = [await _append(async_redis, prefix, f"account:{account}", n) for n in range(1, 4)]
    headers = {"Last-Event-ID": resume_from}
    params = {"channels": channels, "token": token}
    async with http.get(f"{base}/sse", params=params, headers=headers) as resp:
        sse = SseReader(resp)
        frames = [await sse.next() for _ in range(5)]  # two subscribed + three missed
        subscribed = {f["channel"]: f for f in frames if f["op"] == "subscribed"}
        assert subscribed[f"account:{account}"]["recovered"] is True
        assert [f["event"]["id"] for f in frames if f["op"] == "event"] == [e.id for e in missed]
        live = await _append(async_redis, prefix, f"account:{account}", 4)
        assert (await sse.next())["event"]["id"] == live.id


async def test_a_closed_sse_stream_releases_its_subscription(
    gateway: RunningGateway, async_redis: aioredis.Redis, http: aiohttp.ClientSession
) -> None:
    base, prefix = gateway.http, gateway.prefix
    account = f"acct-{uuid.uuid4().hex[:8]}"
    live_key = ChannelKeys(prefix).live(f"account:{account}")
    params = {"channels": f"account:{account}", "token": issue_token(SECRET, sub=account)}
    async with http.get(f"{base}/sse", params=params) as resp:
        assert (await SseReader(resp).next())["op"] == "subscribed"
        assert (await async_redis.pubsub_shardnumsub(live_key))[0][1] == 1
    async with asyncio.timeout(5):
        while (await async_redis.pubsub_shardnumsub(live_key))[0][1] != 0:
            await asyncio.sleep(0.1)


async def test_refusals_are_problems_in_the_format_of_every_pulse_api(
    gateway: RunningGateway,
) -> None:
    """401 with the RFC 6750 challenge, 403 and 404 as RFC 9457 problem documents."""
    base = gateway.http
    tampered = {"Authorization": "Bearer " + issue_token(SECRET, sub="me")[:-3]}
    cases = [
        ("/v1/channels/stats/history", {}, 401, "unauthorized", 'Bearer realm="pulse"'),
        (
            "/v1/channels/stats/history",
            tampered,
            401,
            "unauthorized",
            (
                'Bearer realm="pulse", error="invalid_token", '
                'error_description="the token is not valid"'
            ),
        ),
        ("/v1/channels/payments/history", _auth("me"), 403, "forbidden", None),
        ("/v1/channels/nope/history", _auth("me"), 404, "unknown-channel", None),
        ("/v1/channels/stats/presence", _auth("me"), 404, "no-presence", None),
    ]
    async with aiohttp.ClientSession() as http:
        for path, headers, status, slug, challenge in cases:
            async with http.get(base + path, headers=headers) as resp:
                assert resp.status == status, path
                assert resp.content_type == "application/problem+json"
                body = await resp.json(content_type=None)
                assert body["type"] == f"https://pulse.dev/problems/{slug}"
                assert body["status"] == status
                assert resp.headers.get("WWW-Authenticate") == challenge

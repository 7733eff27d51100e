"""The browser client on networks that block WebSockets, in a real headless Chromium.

The test blocks them in the page: an init script whose WebSocket fails every handshake
(:data:`pulse_dev.browser.BLOCK_WEBSOCKETS`), or Playwright's WebSocket routing, which holds
a socket open and never hands it a frame until the test lets it through to the gateway. The
client must go on over Server-Sent Events with every event in order, once, and come back to
a WebSocket when one gets through. Schedules are shortened through the client's options.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING

import orjson
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, WebSocketRoute

from pulse.channels import ChannelPublisher
from pulse.events import PAYMENT_CREATED, new_event
from pulse_dev.browser import BLOCK_WEBSOCKETS
from pulse_dev.testing import GatewayFactory, RunningGateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.timeout(60)

WS_ROUTE = re.compile(r"/ws\?")

# A page of the gateway's origin using the client module, with short fallback schedules;
# it keeps every event's number, every state and every transport it goes through.
_PAGE = """
import { PulseClient } from "/static/pulse-client.js";
window.received = [];
window.states = [];
window.transports = [];
window.refused = [];
const pulse = new PulseClient({
  url: `ws://${location.host}/ws`,
  token: %(token)s,
  fallbackAfterMs: 1000,
  wsRetryMinMs: 500,
  wsRetryMaxMs: 1000,
});
window.pulse = pulse;
pulse.addEventListener("state", (e) => window.states.push(e.detail.state));
pulse.addEventListener("transport", (e) => window.transports.push(e.detail.transport));
pulse.addEventListener("refused", (e) => window.refused.push([e.detail.channel, e.detail.code]));
const keep = (event) => window.received.push(event.data.n);
pulse.subscribe(%(channel)s, keep, { history: %(history)d });
for (const other of %(others)s) pulse.subscribe(other, keep);
pulse.start();
"""


class Account:
    """A fresh account channel, and its events numbered as they are appended."""

    def __init__(self, redis: aioredis.Redis, gateway: RunningGateway) -> None:
        self.publisher = ChannelPublisher(redis, gateway.prefix)
        self.gateway = gateway
        self.id = f"acct-{uuid.uuid4().hex[:8]}"
        self.channel = f"account:{self.id}"

    async def publish(self, numbers: range, pause: float = 0.0) -> None:
        for n in numbers:
            event = new_event(type=PAYMENT_CREATED, source="/tests", data={"n": n})
            await self.publisher.append(event, [self.channel])
            await asyncio.sleep(pause)

    async def open(self, page: Page, history: int = 0, others: tuple[str, ...] = ()) -> None:
        """The page, subscribed to the account's channel (and ``others``), started."""
        await page.goto(f"{self.gateway.http}/healthz")
        script = _PAGE % {
            "token": orjson.dumps(self.gateway.token(self.id)).decode(),
            "channel": orjson.dumps(self.channel).decode(),
            "history": history,
            "others": orjson.dumps(others).decode(),
        }
        await page.add_script_tag(content=script, type="module")


@pytest.fixture
async def account(gateways: GatewayFactory, redis_url: str) -> AsyncIterator[Account]:
    gateway = gateways.start()
    redis = aioredis.Redis.from_url(redis_url)
    yield Account(redis, gateway)
    gateway.kill()
    await redis.aclose()


def _held_silent(ws: WebSocketRoute) -> None:
    """A routed WebSocket left alone: the page sees it open, and nothing ever arrives."""


async def _received(page: Page, last: int) -> list[int]:
    await page.wait_for_function(f"(window.received || []).includes({last})")
    received: list[int] = await page.evaluate("window.received")
    return received


async def test_a_client_whose_websockets_fail_goes_on_over_sse_from_where_its_history_ended(
    browser: Browser, account: Account
) -> None:
    await account.publish(range(10))
    page = await browser.new_page()
    await page.add_init_script(BLOCK_WEBSOCKETS)
    await account.open(page, history=10)
    await page.wait_for_function("(window.states || []).includes('live')")
    assert await page.evaluate("pulse.transport") == "sse"
    await account.publish(range(10, 30))
    # The stored ten from history, then the stream resumed just after them: once each.
    assert await _received(page, 29) == list(range(30))
    assert await page.evaluate("window.states") == ["connecting", "live"]
    assert await page.evaluate("window.transports") == ["sse"]


async def test_over_sse_a_channel_the_token_may_not_read_is_refused_and_the_rest_go_live(
    browser: Browser, account: Account
) -> None:
    page = await browser.new_page()
    await page.add_init_script(BLOCK_WEBSOCKETS)
    someone_else = "account:someone-else"
    await account.open(page, others=(someone_else,))
    await page.wait_for_function("(window.states || []).includes('live')")
    assert await page.evaluate("pulse.transport") == "sse"
    assert await page.evaluate("window.refused") == [[someone_else, "forbidden"]]
    await account.publish(range(5))
    assert await _received(page, 4) == list(range(5))


async def test_a_websocket_that_opens_but_never_carries_a_frame_is_left_for_sse(
    browser: Browser, account: Account
) -> None:
    page = await browser.new_page()
    await page.route_web_socket(WS_ROUTE, _held_silent)
    publishing = asyncio.create_task(account.publish(range(20), pause=0.05))
    await account.open(page)
    await page.wait_for_function("(window.states || []).includes('live')")
    await publishing
    await account.publish(range(20, 25))
    received = await _received(page, 24)
    assert received == list(range(received[0], 25))  # live from its start, in order, once
    assert await page.evaluate("window.transports") == ["sse"]


async def test_the_client_comes_back_to_websockets_when_they_get_through_and_misses_nothing(
    browser: Browser, account: Account
) -> None:
    blocked = True

    def route(ws: WebSocketRoute) -> None:
        if not blocked:
            ws.connect_to_server()

    page = await browser.new_page()
    await page.route_web_socket(WS_ROUTE, route)
    await account.publish(range(5))
    await account.open(page, history=5)
    await page.wait_for_function("(window.transports || []).includes('sse')")
    await account.publish(range(5, 10))
    await _received(page, 9)

    # Events keep coming while the client finds its way back to the gateway's WebSocket.
    publishing = asyncio.create_task(account.publish(range(10, 60), pause=0.03))
    blocked = False
    await page.wait_for_function("window.pulse.transport === 'websocket' && window.pulse.ws")
    await publishing
    await account.publish(range(60, 65))
    assert await _received(page, 64) == list(range(65))
    assert await page.evaluate("window.transports") == ["sse", "websocket"]
    assert await page.evaluate("window.states") == ["connecting", "live"]  # live throughout

"""The browser client module (``static/pulse-client.js``) in a real headless Chromium.

Pages of the gateway's origin use the module as any user of it would. Needs
/usr/bin/chromium: ``scripts/browser-tools.sh`` installs Debian's package.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser

from pulse.channels import ChannelPublisher
from pulse.events import PAYMENT_CREATED, new_event
from pulse_dev.testing import GatewayFactory

pytestmark = pytest.mark.timeout(90)


# A page of the gateway's origin using the client module as a user would, with the token
# from a function the test exposes (``window.freshToken``) or a fixed string.
_REFRESH_PAGE = """
import { PulseClient } from "/static/pulse-client.js";
const fixed = %(fixed)s;
window.states = [];
window.received = [];
window.refreshed = 0;
const pulse = new PulseClient({
  url: `ws://${location.host}/ws`,
  token: fixed || (() => window.freshToken()),
});
pulse.addEventListener("state", (e) => window.states.push(e.detail.state));
pulse.addEventListener("refreshed", () => { window.refreshed += 1; });
pulse.subscribe(%(channel)s, (event) => window.received.push(event.data.n));
pulse.start();
"""


async def test_the_client_refreshes_its_token_in_band_and_stays_connected_past_expiry(
    browser: Browser, gateways: GatewayFactory, redis_url: str
) -> None:
    ttl = 6
    gateway = gateways.start(PULSE_TOKEN_GRACE_SECONDS="2")
    redis = aioredis.Redis.from_url(redis_url)
    publisher = ChannelPublisher(redis, gateway.prefix)
    account = f"acct-{uuid.uuid4().hex[:8]}"
    channel = f"account:{account}"
    issued: list[str] = []

    def fresh_token() -> str:
        issued.append(gateway.token(account, ttl=ttl))
        return issued[-1]

    async def publish(n: int) -> None:
        event = new_event(type=PAYMENT_CREATED, source="/tests", data={"n": n})
        await publisher.append(event, [channel])

    try:
        refreshing = await browser.new_page()
        await refreshing.expose_function("freshToken", fresh_token)
        fixed = await browser.new_page()
        for page, token in ((refreshing, None), (fixed, fresh_token())):
            await page.goto(f"{gateway.http}/healthz")
            script = _REFRESH_PAGE % {
                "fixed": orjson.dumps(token).decode(),
                "channel": f'"{channel}"',
            }
            await page.add_script_tag(content=script, type="module")
            await page.wait_for_function("(window.states || []).includes('live')")
        await publish(1)
        for page in (refreshing, fixed):
            await page.wait_for_function("window.received.includes(1)")

        # Past the first tokens' expiry and grace, and past a second token's expiry too.
        await asyncio.sleep(2 * ttl + 2)
        await publish(2)
        await refreshing.wait_for_function("window.received.includes(2)")
        assert await refreshing.evaluate("window.states") == ["connecting", "live"]
        assert await refreshing.evaluate("window.refreshed") >= 2
        assert len(issued) >= 4  # the fixed page's token, the first one and the refreshes

        # The page with a fixed token was closed with 4001 and cannot get back in.
        assert "reconnecting" in await fixed.evaluate("window.states")
        assert 2 not in await fixed.evaluate("window.received")
    finally:
        gateway.kill()
        await redis.aclose()


_RETRY_DELAYS = """
async () => {
  const { PulseClient } = await import("/static/pulse-client.js");
  const client = new PulseClient({ url: "ws://127.0.0.1:9/ws", token: "t",
                                   backoffMinMs: 1000, backoffMaxMs: 8000 });
  const delays = [];
  window.setTimeout = (_fn, delay) => { delays.push(delay); return 0; };
  for (let i = 0; i < 400; i += 1) {
    client.attempt = 5;  // the window: min(8000, 1000 * 2**5) = 8000 ms
    client.retry();
  }
  return delays;
}
"""


async def test_the_client_backs_off_with_full_jitter(
    browser: Browser, gateways: GatewayFactory
) -> None:
    """Reconnect waits are drawn from the whole window (full jitter), as the services' are:
    clients dropped together by a gateway restart do not come back together."""
    gateway = gateways.start()
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/")
    delays: list[float] = await page.evaluate(_RETRY_DELAYS)
    assert len(delays) == 400
    assert all(0 <= d < 8000 for d in delays)
    assert min(delays) < 1000  # "equal jitter" would never wait less than half the window
    assert max(delays) > 7000


# The client opening a channel from its history (``history: N``) while events keep coming:
# it hands on the newest N stored events, then every live one, in order.
_HISTORY_PAGE = """
import { PulseClient } from "/static/pulse-client.js";
window.received = [];
window.fromHistory = 0;
window.refused = [];
window.states = [];
const pulse = new PulseClient({ url: `ws://${location.host}/ws`, token: %(token)s });
pulse.addEventListener("state", (e) => window.states.push(e.detail.state));
pulse.addEventListener("refused", (e) => window.refused.push(e.detail));
pulse.subscribe(%(channel)s, (event, frame) => {
  window.received.push(event.data.n);
  if (frame.history) window.fromHistory += 1;
}, { history: 20 });
pulse.subscribe("payments", () => {});
pulse.start();
"""


async def test_the_client_opens_from_history_and_goes_on_live_with_no_gap_or_duplicate(
    browser: Browser, gateways: GatewayFactory, redis_url: str
) -> None:
    gateway = gateways.start()
    redis = aioredis.Redis.from_url(redis_url)
    publisher = ChannelPublisher(redis, gateway.prefix)
    account = f"acct-{uuid.uuid4().hex[:8]}"
    channel = f"account:{account}"
    stored, total = 50, 120

    async def publish(n: int) -> None:
        event = new_event(type=PAYMENT_CREATED, source="/tests", data={"n": n})
        await publisher.append(event, [channel])

    async def keep_publishing() -> None:
        for n in range(stored, total):
            await publish(n)
            await asyncio.sleep(0.01)

    try:
        for n in range(stored):
            await publish(n)
        page = await browser.new_page()
        await page.goto(f"{gateway.http}/healthz")
        publishing = asyncio.create_task(keep_publishing())
        script = _HISTORY_PAGE % {
            "token": orjson.dumps(gateway.token(account)).decode(),
            "channel": orjson.dumps(channel).decode(),
        }
        await page.add_script_tag(content=script, type="module")
        await publishing
        await page.wait_for_function(f"(window.received || []).includes({total - 1})")
        received: list[int] = await page.evaluate("window.received")
        first = received[0]
        # The newest 20 stored when it opened, then everything after them: in order, once.
        assert received == list(range(first, total))
        assert first >= stored - 20
        assert await page.evaluate("window.fromHistory") == 20
        # A channel this token may not read is refused alone; the client is live for the rest.
        assert await page.evaluate("window.states") == ["connecting", "live"]
        refused = await page.evaluate("window.refused")
        assert [(r["channel"], r["code"]) for r in refused] == [("payments", "forbidden")]
    finally:
        gateway.kill()
        await redis.aclose()


_REJECTED_PAGE = """
import { PulseClient } from "/static/pulse-client.js";
window.states = [];
const tokens = %(tokens)s;
window.pulse = new PulseClient({
  url: `ws://${location.host}/ws`,
  token: async () => tokens.length > 1 ? tokens.shift() : tokens[0],
  backoffMinMs: 50,
  backoffMaxMs: 100,
});
window.pulse.addEventListener("state", (e) => window.states.push(e.detail));
window.pulse.subscribe("stats", () => {});
window.pulse.start();
"""


async def test_a_client_whose_token_function_gives_a_refused_token_says_why_and_tries_again(
    browser: Browser, gateways: GatewayFactory
) -> None:
    """A handshake refused for its token is explained (the HTTP side is asked with the same
    token); a token function is called again after a backoff, and a good token goes live."""
    gateway = gateways.start()
    tokens = [gateway.token("u-1", ttl=-30), "garbage", gateway.token("u-1")]
    page = await browser.new_page()
    await page.goto(f"{gateway.http}/healthz")
    script = _REJECTED_PAGE % {"tokens": orjson.dumps(tokens).decode()}
    await page.add_script_tag(content=script, type="module")
    await page.wait_for_function("(window.states || []).some((s) => s.state === 'live')")
    states = await page.evaluate("window.states")
    rejected = [(s["reason"], s["message"]) for s in states if s["state"] == "rejected"]
    assert rejected == [
        ("expired", "the token has expired"),
        ("invalid", "the token is not valid"),
    ]
    assert states[-1] == {"state": "live"}

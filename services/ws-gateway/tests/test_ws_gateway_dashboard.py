"""The dashboard and its client module in a real headless Chromium (Playwright).

Needs /usr/bin/chromium: ``scripts/browser-tools.sh`` installs Debian's package.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, async_playwright, expect

from pulse.channels import ALERTS, PAYMENTS, ChannelPublisher
from pulse.events import FRAUD_DECISION, PAYMENT_CREATED, PAYMENT_UPDATED, STATS, new_event
from pulse_dev.testing import GatewayFactory

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


def _payment(payment_id: str, account: str, status: str) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "account_id": account,
        "amount": "12.50",
        "currency": "EUR",
        "merchant_id": "m-1",
        "status": status,
        "created_at": "2026-01-01T10:00:00.000Z",
    }


async def _created(publisher: ChannelPublisher, payment_id: str, account: str) -> None:
    data = _payment(payment_id, account, "PENDING")
    event = new_event(type=PAYMENT_CREATED, source="/tests", subject=payment_id, data=data)
    await publisher.append(event, [PAYMENTS, f"account:{account}"])


async def _updated(publisher: ChannelPublisher, payment_id: str, account: str, status: str) -> None:
    data = {**_payment(payment_id, account, status), "old_status": "PENDING"}
    event = new_event(type=PAYMENT_UPDATED, source="/tests", subject=payment_id, data=data)
    await publisher.append(event, [PAYMENTS, f"account:{account}"])


async def test_the_dashboard_shows_payments_and_decisions_and_recovers_after_a_drop(
    browser: Browser, gateways: GatewayFactory, redis_url: str, tmp_path: Path
) -> None:
    gateway = gateways.start()
    redis = aioredis.Redis.from_url(redis_url)
    publisher = ChannelPublisher(redis, gateway.prefix)
    token = gateway.token("ops-dashboard", ["ops"])
    first, second, third = (f"pay-{uuid.uuid4().hex[:10]}" for _ in range(3))
    stats = {
        "events": {"created": 7, "updated": 4},
        "by_status": {"APPROVED": {"EUR": {"count": 5, "amount_minor": 6250}}},
        "series": [{"minute": "2026-01-01T10:00Z", "events": n} for n in (1, 4, 6)],
    }
    await publisher.append(new_event(type=STATS, source="/tests", data=stats), ["stats"])
    try:
        page = await browser.new_page()
        await page.goto(f"{gateway.http}/#token={token}")
        state = page.locator("#state")
        await expect(state).to_have_text("live")
        # the newest counters show at once, from the history
        await expect(page.locator("#counters")).to_contain_text("APPROVED5")

        await _created(publisher, first, "acct-1")
        status = page.locator(f"#payment-{first} .status")
        await expect(status).to_have_text("PENDING")
        await _updated(publisher, first, "acct-1", "APPROVED")
        await expect(status).to_have_text("APPROVED")

        await _created(publisher, second, "acct-2")
        decision = {
            "payment_id": second,
            "account_id": "acct-2",
            "decision": "DECLINED",
            "score": 95,
            "reasons": ["blocklisted_merchant"],
            "amount": "12.50",
            "currency": "EUR",
        }
        await publisher.append(
            new_event(type=FRAUD_DECISION, source="/tests", data=decision), [ALERTS]
        )
        await _updated(publisher, second, "acct-2", "DECLINED")
        await expect(page.locator(f'#alerts li[data-payment-id="{second}"]')).to_contain_text(
            "DECLINED"
        )
        await expect(page.locator(f"#payment-{second} .status")).to_have_text("DECLINED")

        # The connection drops (the gateway dies); events keep coming meanwhile.
        gateway.kill()
        await expect(state).to_have_text("reconnecting")
        await _created(publisher, third, "acct-3")
        await _updated(publisher, second, "acct-2", "REVIEW")
        gateway.start()

        await expect(state).to_have_text("recovered", timeout=20_000)
        await expect(page.locator(f"#payment-{third} .status")).to_have_text("PENDING")
        await expect(page.locator(f"#payment-{second} .status")).to_have_text("REVIEW")
        assert await page.locator("#gap").is_hidden()
        await expect(state).to_have_text("live", timeout=10_000)
        # live again after the recovery
        await _updated(publisher, third, "acct-3", "APPROVED")
        await expect(page.locator(f"#payment-{third} .status")).to_have_text("APPROVED")
        await page.screenshot(path=str(tmp_path / "dashboard.png"))
    finally:
        gateway.kill()
        await redis.aclose()


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

"""The operator's console (``GET /``) in a real headless Chromium (Playwright, system Chromium).

Each test runs a real gateway process on the test Redis and appends the events the pipeline
would (:class:`pulse_dev.console_page.PipelineEvents`, as the stream processor and workers
do); the page is driven only through its stable ``data-testid`` attributes. Screenshots are
kept in ``.artifacts/console/`` (git-ignored; ``pulse_dev.browser.artefacts``). The health
panels and the review desk are in ``test_ws_gateway_console_desk.py``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import time
from importlib import resources
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, expect
from pydantic import ValidationError

from fraud_worker import rules as fraud_rules
from pulse_dev.browser import BLOCK_WEBSOCKETS, artefacts
from pulse_dev.console_page import (
    DESKTOP,
    PHONE,
    PipelineEvents,
    new_ids,
    open_page,
    viewer_context,
)
from pulse_dev.testing import GatewayFactory, RunningGateway
from ws_gateway.settings import GatewaySettings

pytestmark = pytest.mark.timeout(90)

SHOTS = artefacts("console")
STATIC = Path(str(resources.files("ws_gateway") / "static"))

# Every text the page draws on a canvas (uPlot draws its axes there), kept from the start.
_DRAWN_TEXT = """
window.drawnText = [];
(() => {
  const fillText = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
    if (window.drawnText.length < 10000) window.drawnText.push(String(text));
    return fillText.call(this, text, ...rest);
  };
})();
"""


@pytest.fixture
async def gateway(gateways: GatewayFactory) -> RunningGateway:
    return gateways.start()


@pytest.fixture
async def pipeline(async_redis: aioredis.Redis, gateway: RunningGateway) -> PipelineEvents:
    return PipelineEvents(async_redis, gateway)


async def test_the_console_opens_full_from_history_and_follows_live_without_gap_or_duplicate(
    browser: Browser, gateway: RunningGateway, pipeline: PipelineEvents
) -> None:
    before = new_ids(30)
    for n, payment_id in enumerate(before):
        await pipeline.created(payment_id)
        await pipeline.updated(payment_id, "DECLINED" if n == 0 else "APPROVED")
    await pipeline.alert(before[0], "DECLINED", ["blocked_merchant", "amount_above_decline_limit"])
    await pipeline.stats(
        {
            "events": {"created": 30, "updated": 30, "deleted": 0},
            "created": {"EUR": {"count": 30, "amount": "375.00", "amount_minor": 37500}},
            "by_status": {
                "APPROVED": {"EUR": {"count": 29, "amount": "362.50", "amount_minor": 36250}},
                "DECLINED": {"EUR": {"count": 1, "amount": "12.50", "amount_minor": 1250}},
            },
            "series": [
                {
                    "minute": "2026-01-15T10:00Z",
                    "events": 60,
                    "created": {"EUR": {"count": 30, "amount": "375.00", "amount_minor": 37500}},
                    "statuses": {},
                }
            ],
        }
    )
    during = new_ids(40)

    async def publish_while_the_page_opens() -> None:
        for payment_id in during:
            await pipeline.created(payment_id)
            await asyncio.sleep(0.02)

    context = await viewer_context(browser)
    await context.add_init_script(_DRAWN_TEXT)
    publishing = asyncio.create_task(publish_while_the_page_opens())
    page, errors = await open_page(
        context, f"{gateway.http}/#token={gateway.token('ops-1', ['ops'])}"
    )
    await expect(page.get_by_test_id("connection-state")).to_have_text("live")
    await expect(page.get_by_test_id("connection-transport")).to_have_text("websocket")
    await publishing
    after = new_ids(5)
    for payment_id in after:
        await pipeline.created(payment_id)

    rows = page.get_by_test_id("feed-row")
    await expect(rows).to_have_count(75)
    shown = await rows.evaluate_all("rows => rows.map(r => r.dataset.paymentId)")
    assert sorted(shown) == sorted(before + during + after)  # every one, each once
    assert shown[0] == after[-1]  # newest on top
    first = page.locator(f'[data-testid="feed-row"][data-payment-id="{before[0]}"]')
    await expect(first.locator(".status")).to_have_text("DECLINED")
    # Times in the viewer's zone, labelled with it; amounts in the viewer's locale.
    await expect(first.locator(".time")).to_have_text("11:00:00")
    await expect(page.locator("#feed-title + .scroll th").first).to_have_text("time (CET)")
    await expect(first.locator(".amount")).to_have_text("€12.50")

    # The alert from history, its reasons in words.
    alert = page.get_by_test_id("alert-row")
    await expect(alert).to_have_count(1)
    await expect(alert).to_contain_text("The merchant is on the blocklist.")
    await expect(alert).to_contain_text("The amount is above the decline limit for its currency.")
    # The newest counters at once, from the stats history.
    totals = page.locator('[data-testid="totals-row"][data-currency="EUR"]')
    await expect(totals).to_contain_text("€375.00")

    # Rates per second and amounts per currency, in charts with axes, units and legends.
    await expect(page.get_by_test_id("rate-now")).to_have_text(re.compile(r"^[1-9][\d.,]*$"))
    rate_legend = page.locator("#chart-rate .u-legend .u-label")
    await expect(rate_legend).to_have_text(["time", "created", "approved", "review", "declined"])
    await expect(page.locator("#chart-amounts .u-legend .u-label")).to_have_text(["time", "EUR"])
    await page.locator("#chart-rate .u-over").hover()  # the legend shows the values there
    created_value = page.locator("#chart-rate .u-legend .u-series").nth(1).locator(".u-value")
    await expect(created_value).to_have_text(re.compile(r"^\d[\d.,]*/s$"))
    drawn: list[str] = await page.evaluate("window.drawnText")
    for label in ("time (CET)", "events per second", "amount per minute"):
        assert label in drawn, label  # axis titles, drawn on the charts' canvases

    # Live updates keep coming to the rows already shown.
    await pipeline.updated(during[0], "REVIEW")
    row = page.locator(f'[data-testid="feed-row"][data-payment-id="{during[0]}"] .status')
    await expect(row).to_have_text("REVIEW")
    await page.screenshot(path=str(SHOTS / "opens-full-1280.png"), full_page=True)
    assert errors == []
    await context.close()


async def test_the_console_recovers_what_it_missed_while_the_gateway_was_down(
    browser: Browser, gateway: RunningGateway, pipeline: PipelineEvents
) -> None:
    first, second = new_ids(2)
    context = await viewer_context(browser)
    page, errors = await open_page(
        context, f"{gateway.http}/#token={gateway.token('ops-1', ['ops'])}"
    )
    state = page.get_by_test_id("connection-state")
    await expect(state).to_have_text("live")
    await pipeline.created(first)
    status = page.locator(f'[data-testid="feed-row"][data-payment-id="{first}"] .status')
    await expect(status).to_have_text("PENDING")

    # The gateway dies; events keep coming meanwhile.
    gateway.kill()
    await expect(state).to_have_text("reconnecting")
    why = page.get_by_test_id("connection-why")
    await expect(why).to_have_text(re.compile("^(connection lost|cannot connect)$"))
    await pipeline.updated(first, "APPROVED")
    await pipeline.created(second)
    gateway.start()

    await expect(state).to_have_text("recovered", timeout=20_000)
    await expect(status).to_have_text("APPROVED")
    second_status = page.locator(f'[data-testid="feed-row"][data-payment-id="{second}"] .status')
    await expect(second_status).to_have_text("PENDING")
    assert await page.locator("#gap").is_hidden()
    await expect(state).to_have_text("live", timeout=10_000)
    await expect(why).to_be_hidden()
    await pipeline.updated(second, "DECLINED")
    await expect(second_status).to_have_text("DECLINED")
    await expect(page.get_by_test_id("feed-row")).to_have_count(2)
    assert errors == []
    await context.close()


async def test_where_websockets_are_blocked_the_console_follows_over_sse_and_says_so(
    browser: Browser, gateway: RunningGateway, pipeline: PipelineEvents
) -> None:
    payment_id = new_ids(1)[0]
    context = await viewer_context(browser)
    await context.add_init_script(BLOCK_WEBSOCKETS)
    page, errors = await open_page(
        context, f"{gateway.http}/#token={gateway.token('ops-1', ['ops'])}"
    )
    await expect(page.get_by_test_id("connection-state")).to_have_text("live")
    await expect(page.get_by_test_id("connection-transport")).to_have_text("sse")
    await pipeline.created(payment_id)
    status = page.locator(f'[data-testid="feed-row"][data-payment-id="{payment_id}"] .status')
    await expect(status).to_have_text("PENDING")
    await pipeline.updated(payment_id, "APPROVED")
    await expect(status).to_have_text("APPROVED")
    await expect(page.get_by_test_id("feed-row")).to_have_count(1)
    await page.screenshot(path=str(SHOTS / "over-sse-1280.png"))
    assert errors == []
    await context.close()


async def test_a_missing_bad_or_expired_token_is_explained_and_a_pasted_one_goes_live(
    browser: Browser, gateways: GatewayFactory, async_redis: aioredis.Redis
) -> None:
    gateway = gateways.start(PULSE_TOKEN_GRACE_SECONDS="0")
    (payment_id,) = new_ids(1)
    await PipelineEvents(async_redis, gateway).created(payment_id)
    context = await viewer_context(browser)
    badge = "connection-state"
    cases = [
        ("", "no token", "No token yet"),
        (gateway.token("ops-1", ["ops"], ttl=-60), "token rejected: expired", "expired"),
        ("not-a-jwt", "token rejected: invalid", "not valid"),
        (gateway.token("acct-1"), "forbidden: not an ops token", "needs the ops role"),
    ]
    for token, says, because in cases:
        url = f"{gateway.http}/#token={token}" if token else gateway.http
        page, errors = await open_page(context, url)
        await expect(page.get_by_test_id(badge)).to_have_text(says)
        await expect(page.get_by_test_id("token-message")).to_contain_text(because)
        assert errors == []
    # The last page (an account's token) takes an operator's: live, and the feed opens full.
    await page.get_by_test_id("token-input").fill(gateway.token("ops-1", ["ops"]))
    await page.get_by_test_id("token-submit").click()
    await expect(page.get_by_test_id(badge)).to_have_text("live", timeout=10_000)
    await expect(page.get_by_test_id("feed-row")).to_have_attribute("data-payment-id", payment_id)
    await page.close()

    # The page shown an expired token takes a pasted one and goes live, without reloading.
    page, errors = await open_page(context, f"{gateway.http}/#token={cases[1][0]}")
    await expect(page.get_by_test_id(badge)).to_have_text("token rejected: expired")
    await page.screenshot(path=str(SHOTS / "token-expired-1280.png"))
    assert "token=" not in page.url  # taken out of the address bar
    await page.get_by_test_id("token-input").fill(gateway.token("ops-2", ["ops"], ttl=3))
    await page.get_by_test_id("token-submit").click()
    await expect(page.get_by_test_id(badge)).to_have_text("live")
    await expect(page.get_by_test_id("token-panel")).to_be_hidden()
    # That token runs out while the page is open: the gateway closes with 4001, the page
    # tries again, learns why it cannot, and says so.
    await expect(page.get_by_test_id(badge)).to_have_text("token rejected: expired", timeout=15_000)
    await expect(page.get_by_test_id("token-panel")).to_be_visible()
    # A reload keeps the tab's token (sessionStorage), not the one that was in the address.
    await page.get_by_test_id("token-input").fill(gateway.token("ops-3", ["ops"]))
    await page.get_by_test_id("token-submit").click()
    await expect(page.get_by_test_id(badge)).to_have_text("live")
    await page.reload()
    await expect(page.get_by_test_id(badge)).to_have_text("live")
    await expect(page.locator("#who")).to_contain_text("ops-3 (ops)")
    assert errors == []
    await context.close()


# Every task longer than 50 ms the page runs (the Long Tasks API), kept from the start.
_LONG_TASKS = """
window.longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


async def test_at_50_payments_a_second_the_page_runs_no_task_over_200_ms(
    browser: Browser, gateway: RunningGateway, pipeline: PipelineEvents
) -> None:
    """Long tasks are wall time: on a machine busy with other tests the renderer can be
    descheduled in the middle of a short task. A page that does too much fails every run;
    so a window with a long task is followed by a second one, and one must be clean."""
    context = await viewer_context(browser)
    await context.add_init_script(_LONG_TASKS)
    page, errors = await open_page(
        context, f"{gateway.http}/#token={gateway.token('ops-1', ['ops'])}"
    )
    await expect(page.get_by_test_id("connection-state")).to_have_text("live")
    windows = []
    for _ in range(2):
        sent_per_s, long_tasks = await _busy_window(page, pipeline, rate=50, seconds=6)
        longest = max(long_tasks, default=0.0)
        windows.append(longest)
        print(  # noqa: T201 - the figure the issue asks for, in the test's output
            f"\n50 payments/s: sent {sent_per_s:.1f} payments/s ({2.2 * sent_per_s:.0f} "
            f"events/s); {len(long_tasks)} long tasks, longest {longest:.0f} ms"
        )
        assert sent_per_s >= 45
        if longest < 200:
            break
    await page.screenshot(path=str(SHOTS / "busy-1280.png"))
    assert min(windows) < 200, windows
    assert errors == []
    await context.close()


async def _busy_window(
    page: Page, pipeline: PipelineEvents, *, rate: int, seconds: int
) -> tuple[float, list[float]]:
    """``rate`` payments a second for ``seconds``, each created and decided (two events), one
    in ten with an alert; the rate sent and the page's long tasks (ms) until it showed the
    last and its charts ticked again."""
    await page.evaluate("window.longTasks = []")
    ids = new_ids(rate * seconds)
    started = time.monotonic()
    for n, payment_id in enumerate(ids):
        await pipeline.created(payment_id)
        await pipeline.updated(payment_id, "REVIEW" if n % 10 == 0 else "APPROVED")
        if n % 10 == 0:
            await pipeline.alert(payment_id, "REVIEW", ["velocity_count_review"])
        lag = started + (n + 1) / rate - time.monotonic()
        if lag > 0:
            await asyncio.sleep(lag)
    sent_per_s = len(ids) / (time.monotonic() - started)
    last = page.locator(f'[data-testid="feed-row"][data-payment-id="{ids[-1]}"] .status')
    await expect(last).to_have_text("APPROVED")
    await page.wait_for_timeout(1500)  # the charts' next ticks
    long_tasks: list[float] = await page.evaluate("window.longTasks")
    return sent_per_s, long_tasks


async def test_the_console_fits_a_phone_and_a_1280_px_screen(
    browser: Browser, gateway: RunningGateway, pipeline: PipelineEvents
) -> None:
    for payment_id in new_ids(5):
        await pipeline.created(payment_id)
        await pipeline.alert(payment_id, "REVIEW", ["country_mismatch"])
    token = gateway.token("ops-1", ["ops"])
    for name, viewport in (("phone", PHONE), ("1280", DESKTOP)):
        context = await viewer_context(browser, viewport)
        page, errors = await open_page(context, f"{gateway.http}/#token={token}")
        await expect(page.get_by_test_id("connection-state")).to_have_text("live")
        await expect(page.get_by_test_id("feed-row")).to_have_count(5)
        # Nothing wider than the screen: no sideways scrolling of the page itself.
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen"
        for testid in ("connection-state", "health-stream-lag", "feed-row", "alert-row"):
            box = await page.get_by_test_id(testid).first.bounding_box()
            assert box is not None
            assert box["x"] >= 0, (name, testid)
            assert box["x"] + box["width"] <= viewport["width"], (name, testid)
        feed = await page.locator(".panel.feed").bounding_box()
        alerts = await page.locator(".panel.alerts").bounding_box()
        assert feed is not None
        assert alerts is not None
        if name == "phone":
            assert alerts["y"] >= feed["y"] + feed["height"]  # stacked
        else:
            assert alerts["y"] == feed["y"]  # side by side
        await page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)
        assert errors == []
        await context.close()


def _reason_codes_the_rules_emit() -> set[str]:
    """Every ``(code, weight)`` hit the fraud rules can add, read from their source."""
    source = Path(inspect.getfile(fraud_rules)).read_text()
    codes = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Tuple)
            and len(node.elts) == 2  # a (reason, weight) pair
            and isinstance(node.elts[0], ast.Constant)
            and isinstance(node.elts[0].value, str)
            and isinstance(node.elts[1], ast.Name)
            and node.elts[1].id in {"REVIEW_SCORE", "DECLINE_SCORE"}
        ):
            codes.add(node.elts[0].value)
    return codes


def test_every_reason_the_fraud_rules_can_give_has_words_in_the_console() -> None:
    codes = _reason_codes_the_rules_emit()
    assert {"blocked_account", "country_mismatch", "velocity_amount_review"} <= codes
    words = orjson.loads((STATIC / "console" / "fraud-reasons.json").read_bytes())
    assert sorted(codes - words.keys()) == []
    for code in codes:
        sentence = words[code]
        assert sentence[0].isupper(), code
        assert sentence.endswith("."), code
        assert "_" not in sentence, code


async def test_the_gateway_serves_the_console_its_settings_and_nothing_outside_static(
    gateways: GatewayFactory,
) -> None:
    configured = gateways.start(PULSE_CONSOLE_INGEST_URL="http://127.0.0.1:8080/")
    bare = gateways.start()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{configured.http}/console/config.json") as response:
            assert await response.json() == {"ingest_url": "http://127.0.0.1:8080"}
        async with http.get(f"{bare.http}/console/config.json") as response:
            assert await response.json() == {"ingest_url": ""}
        async with http.get(f"{configured.http}/") as response:
            assert response.content_type == "text/html"
            policy = response.headers["Content-Security-Policy"]
            assert "connect-src 'self' http://127.0.0.1:8080;" in policy
            assert "script-src 'self';" in policy  # no inline script, no CDN
        for path, content_type in (
            ("/static/pulse-client.js", "text/javascript"),
            ("/static/console/app.js", "text/javascript"),
            ("/static/vendor/uplot/uPlot.iife.min.js", "text/javascript"),
            ("/static/vendor/uplot/uPlot.min.css", "text/css"),
            ("/static/vendor/uplot/LICENSE", "text/plain"),
        ):
            async with http.get(f"{bare.http}{path}") as response:
                assert response.status == 200, path
                assert response.content_type == content_type, path
        for path in ("/static/nope.js", "/static/../settings.py", "/static/%2e%2e/server.py"):
            async with http.get(f"{bare.http}{path}") as response:
                assert response.status == 404, path


@pytest.mark.parametrize("url", ["ftp://ingest", "ingest:8080", "http://", "http://i/?a=1"])
def test_a_console_ingest_url_that_is_not_an_http_base_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="console_ingest_url"):
        GatewaySettings(console_ingest_url=url)

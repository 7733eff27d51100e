"""The console's pipeline health panels and its review desk, in a real headless Chromium.

As in ``test_ws_gateway_console.py``: a real gateway process on the test Redis, the events
the pipeline would append (:class:`pulse_dev.console_page.PipelineEvents`); the review desk
calls a real ingest process (moto, the test's tables). Screenshots in ``.artifacts/console/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, expect

from pulse.auth import issue_token
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.browser import artefacts
from pulse_dev.console_page import PipelineEvents, new_ids, open_page, viewer_context
from pulse_dev.testing import GATEWAY_SECRET, GatewayFactory, free_port, put_in_review

pytestmark = pytest.mark.timeout(90)

SHOTS = artefacts("console")


def _measured(seconds_ago: float = 0.0) -> str:
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _health(service: str, instance: str, interval: float = 5, **figures: Any) -> dict[str, Any]:
    return {
        "service": service,
        "instance": instance,
        "interval_seconds": interval,
        "measured_at": _measured(figures.pop("seconds_ago", 0.0)),
        **figures,
    }


def _queue(name: str, role: str, depth: int, oldest: float | None = None) -> dict[str, Any]:
    return {"name": name, "role": role, "depth": depth, "in_flight": 0, "oldest_age_s": oldest}


async def test_the_health_panels_show_what_the_pipeline_reports_and_drop_silent_sources(
    browser: Browser, gateways: GatewayFactory, async_redis: aioredis.Redis
) -> None:
    gateway = gateways.start()
    pipeline = PipelineEvents(async_redis, gateway)
    # In the history before the page opens: a processor, two replicas of the fraud worker
    # (measuring the same queues), the notify worker, two gateways — and a processor that
    # stopped reporting a minute ago, whose huge lag must not show.
    processor = "/pulse/stream-processor/h-1"
    failures = [_queue("stream-failures", "failures", 2, 30.0)]
    shards = [
        {"shard_id": "shard-a", "iterator_age_ms": 1500, "records_per_s": 40.0},
        {"shard_id": "shard-b", "iterator_age_ms": 250, "records_per_s": 12.5},
    ]
    await pipeline.health(
        processor,
        _health(
            "stream-processor",
            "h-1",
            shards=shards,
            queues=failures,
            throughput={"messages_per_s": 52.5, "failures_per_s": 0.0},
        ),
    )
    gone = {"shard_id": "shard-a", "iterator_age_ms": 999_999, "records_per_s": 0.0}
    await pipeline.health(
        "/pulse/stream-processor/old",
        _health("stream-processor", "old", shards=[gone], seconds_ago=60),
    )
    for instance, depth, rate in (("f-1", 7, 10.0), ("f-2", 9, 12.0)):
        await pipeline.health(
            f"/pulse/fraud-worker/{instance}",
            _health(
                "fraud-worker",
                instance,
                queues=[_queue("fraud", "queue", depth, 4.5), _queue("fraud-dlq", "dlq", 3, 600)],
                throughput={"messages_per_s": rate, "failures_per_s": 0.5},
            ),
        )
    await pipeline.health(
        "/pulse/notify-worker/n-1",
        _health(
            "notify-worker",
            "n-1",
            queues=[_queue("notify", "queue", 4, 1.0), _queue("notify-dlq", "dlq", 0)],
            throughput={"messages_per_s": 8.0, "failures_per_s": 0.0},
        ),
    )
    for instance, p99, clients in (("g-1", 180.5, 3), ("g-2", 250.0, 2)):
        e2e = {"p50": 40.0, "p99": p99, "samples": 300, "window_s": 60}
        await pipeline.health(
            f"/pulse/ws-gateway/{instance}",
            _health("ws-gateway", instance, e2e_ms=e2e, connections=clients),
        )

    context = await viewer_context(browser)
    page, errors = await open_page(
        context, f"{gateway.http}/#token={gateway.token('ops-1', ['ops'])}"
    )
    await expect(page.get_by_test_id("connection-state")).to_have_text("live")
    lag = page.get_by_test_id("health-stream-lag")
    await expect(lag).to_have_text("1,500")  # ms, the larger shard's; the silent one is gone
    await expect(page.get_by_test_id("health-shard-row")).to_have_count(2)
    await expect(page.get_by_test_id("health-queue-depth")).to_have_text("13")  # fraud 9 + notify 4
    dlq = page.get_by_test_id("health-dlq-depth")
    await expect(dlq).to_have_text("5")  # fraud-dlq 3 + notify-dlq 0 + stream-failures 2
    await expect(page.get_by_test_id("health-e2e-p99")).to_have_text("250")
    await expect(page.locator("#health-e2e-p50")).to_have_text("40")
    # How long the oldest message has waited: of the work queues, and of each DLQ.
    await expect(page.locator("#health-queue-oldest")).to_have_text("5 s")  # fraud's 4.5 s
    fraud_dlq = page.locator('[data-testid="health-dlq-row"][data-queue="fraud-dlq"]')
    await expect(fraud_dlq).to_contain_text("oldest 10 min")
    await expect(page.get_by_test_id("health-connections")).to_have_text("5")
    fraud = page.locator('[data-testid="health-throughput-row"][data-service="fraud-worker"]')
    await expect(fraud).to_contain_text("fraud-worker (2 processes)")
    await expect(fraud).to_contain_text("22/s")

    # Live: the processor's next report moves the lag; a second notify worker with a 1 s
    # interval shows a deeper notify DLQ (the largest figure of a queue counts), and drops
    # out three intervals after it falls silent.
    later = _health("stream-processor", "h-1", shards=shards[1:], queues=failures)
    await pipeline.health(processor, later)
    await expect(lag).to_have_text("250")
    await pipeline.health(
        "/pulse/notify-worker/n-2",
        _health("notify-worker", "n-2", interval=1, queues=[_queue("notify-dlq", "dlq", 10)]),
    )
    await expect(dlq).to_have_text("15")
    await page.screenshot(path=str(SHOTS / "health-1280.png"))
    await expect(dlq).to_have_text("5", timeout=10_000)
    assert errors == []
    await context.close()


@dataclass
class Ingest:
    """A real ingest process (moto, the test's tables) the console calls from the browser."""

    url: str
    ddb: Any
    table: str
    token: str

    def in_review(self, *reasons: str) -> str:
        return put_in_review(self.ddb, self.table, reasons=reasons)

    async def payment(self, payment_id: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(f"{self.url}/v1/payments/{payment_id}") as response,
        ):
            assert response.status == 200
            return dict(await response.json())

    async def review(self, payment_id: str, decision: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{self.url}/v1/payments/{payment_id}/review"
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(url, json={"decision": decision, "note": "by the API"}) as response,
        ):
            assert response.status == 200


@pytest.fixture
def console_port() -> int:
    """The console's port, chosen before ingest starts: ingest's CORS setting names it."""
    return free_port()


@pytest.fixture
async def ingest(
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    console_port: int,
) -> Ingest:
    port = free_port()
    service_process(
        "ingest",
        PULSE_HTTP_PORT=str(port),
        PULSE_JWT_SECRET=GATEWAY_SECRET,  # the gateway's tokens are ingest's too
        PULSE_CORS_ORIGINS=f"http://127.0.0.1:{console_port}",
    ).start(wait_port=port)
    return Ingest(
        f"http://127.0.0.1:{port}",
        aws_client("dynamodb", stack_settings),
        stack_settings.names.payments_table,
        issue_token(GATEWAY_SECRET, sub="ops-api", roles=["ops"]),
    )


async def test_the_review_desk_decides_through_ingest_and_shows_the_decision_s_event(
    browser: Browser,
    gateways: GatewayFactory,
    ingest: Ingest,
    console_port: int,
    async_redis: aioredis.Redis,
) -> None:
    gateway = gateways.start(port=console_port, PULSE_CONSOLE_INGEST_URL=ingest.url)
    pipeline = PipelineEvents(async_redis, gateway)
    approve = ingest.in_review("amount_above_review_limit", "country_mismatch")
    taken = ingest.in_review("velocity_count_review")
    # Held and decided before the page opened: in the feed's history, not on the desk.
    (done,) = new_ids(1)
    await pipeline.updated(done, "REVIEW")
    await pipeline.updated(done, "APPROVED", old_status="REVIEW", reviewed_by="ops-0")
    context = await viewer_context(browser)
    page, errors = await open_page(
        context, f"{gateway.http}/#token={gateway.token('ops-1', ['ops'])}"
    )
    await expect(page.get_by_test_id("connection-state")).to_have_text("live")

    # Listed from ingest, oldest first, with the reasons in words.
    rows = page.get_by_test_id("review-row")
    await expect(rows).to_have_count(2)
    assert await rows.evaluate_all("rows => rows.map(r => r.dataset.paymentId)") == [
        approve,
        taken,
    ]
    done_row = page.locator(f'[data-testid="feed-row"][data-payment-id="{done}"] .status')
    await expect(done_row).to_have_text("APPROVED")
    row = page.locator(f'[data-testid="review-row"][data-payment-id="{approve}"]')
    await expect(row).to_contain_text("The amount is above the review limit for its currency.")
    await expect(row).to_contain_text("another country than the account's recent payments")

    # Approved from the page: ingest accepts it, but the row waits for the pipeline's event.
    await row.get_by_test_id("review-note").fill("known customer")
    await row.get_by_test_id("review-approve").click()
    await expect(row).to_contain_text("waiting for the pipeline's event")
    await expect(row.get_by_test_id("review-status")).to_have_text("REVIEW")
    decided = await ingest.payment(approve)
    assert (decided["status"], decided["reviewed_by"]) == ("APPROVED", "ops-1")
    assert decided["review_note"] == "known customer"
    await pipeline.updated(approve, "APPROVED", old_status="REVIEW", **_decision(decided))
    await expect(row.get_by_test_id("review-status")).to_have_text("APPROVED")
    await expect(row).to_contain_text("by ops-1")
    await expect(row).to_contain_text("known customer")
    await expect(row.get_by_test_id("review-approve")).to_have_count(0)

    # Someone decided the other one first: the page's click is refused, in words.
    await ingest.review(taken, "APPROVED")
    other = page.locator(f'[data-testid="review-row"][data-payment-id="{taken}"]')
    await other.get_by_test_id("review-decline").click()
    await expect(other.get_by_test_id("review-error")).to_contain_text("Already decided")
    await expect(other.get_by_test_id("review-decline")).to_be_disabled()

    # A payment put in REVIEW while the page is open arrives with its event.
    arriving = ingest.in_review("amount_above_review_limit")
    now_in_review = await ingest.payment(arriving)
    await pipeline.updated(arriving, "REVIEW", **_decision(now_in_review))
    await expect(rows).to_have_count(3)
    await page.screenshot(path=str(SHOTS / "review-desk-1280.png"), full_page=True)

    # ... and declined from the page: declined in ingest, shown so when its event arrives.
    declining = page.locator(f'[data-testid="review-row"][data-payment-id="{arriving}"]')
    await declining.get_by_test_id("review-decline").click()
    await expect(declining).to_contain_text("waiting for the pipeline's event")
    declined = await ingest.payment(arriving)
    assert (declined["status"], declined["reviewed_by"]) == ("DECLINED", "ops-1")
    await pipeline.updated(arriving, "DECLINED", old_status="REVIEW", **_decision(declined))
    await expect(declining.get_by_test_id("review-status")).to_have_text("DECLINED")
    assert errors == []
    await context.close()


def _decision(payment: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``payment`` a ``pulse.payment.updated`` event carries beyond the basics."""
    keys = ("fraud_score", "fraud_reasons", "reviewed_by", "review_note", "reviewed_at")
    return {k: payment[k] for k in keys if payment.get(k) is not None}

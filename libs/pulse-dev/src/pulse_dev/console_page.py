"""What the console's browser tests share: the events the pipeline would append to a
gateway's channels (:class:`PipelineEvents`), and the console opened as a viewer in Paris.

The tests drive a real gateway process and a real headless Chromium
(:mod:`pulse_dev.browser`); these helpers only write to the channels as the stream processor
and the workers do (``ChannelPublisher``) and open pages.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final

from pulse.channels import ALERTS, HEALTH, PAYMENTS, STATS, ChannelPublisher
from pulse.events import FRAUD_DECISION, PAYMENT_CREATED, PAYMENT_UPDATED, new_event

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from playwright.async_api import Browser, BrowserContext, Page, ViewportSize

    from pulse_dev.testing import RunningGateway

__all__ = [
    "CREATED_AT",
    "DESKTOP",
    "PHONE",
    "PipelineEvents",
    "new_ids",
    "open_page",
    "payment",
    "viewer_context",
]

DESKTOP: Final[ViewportSize] = {"width": 1280, "height": 900}
PHONE: Final[ViewportSize] = {"width": 390, "height": 844}
CREATED_AT: Final = "2026-01-15T10:00:00.000Z"  # 11:00:00 in Paris (CET, winter)


def payment(payment_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """A payment of 12.50 EUR of account ``acct-1``, created at :data:`CREATED_AT`."""
    return {
        "payment_id": payment_id,
        "account_id": "acct-1",
        "amount": "12.50",
        "currency": "EUR",
        "merchant_id": "m-1",
        "status": status,
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
        **extra,
    }


class PipelineEvents:
    """Appends events to a gateway's channels as the pipeline's services would."""

    def __init__(self, redis: aioredis.Redis, gateway: RunningGateway) -> None:
        self.publisher = ChannelPublisher(redis, gateway.prefix)

    async def created(self, payment_id: str, **extra: Any) -> None:
        data = payment(payment_id, "PENDING", **extra)
        event = new_event(type=PAYMENT_CREATED, source="/tests", subject=payment_id, data=data)
        await self.publisher.append(event, [PAYMENTS])

    async def updated(
        self, payment_id: str, status: str, old_status: str = "PENDING", **extra: Any
    ) -> None:
        data = {**payment(payment_id, status, **extra), "old_status": old_status}
        event = new_event(type=PAYMENT_UPDATED, source="/tests", subject=payment_id, data=data)
        await self.publisher.append(event, [PAYMENTS])

    async def alert(self, payment_id: str, decision: str, reasons: list[str]) -> None:
        data = {
            "payment_id": payment_id,
            "account_id": "acct-1",
            "decision": decision,
            "score": 85,
            "reasons": reasons,
            "amount": "25000.00",
            "currency": "EUR",
        }
        await self.publisher.append(
            new_event(type=FRAUD_DECISION, source="/tests", data=data), [ALERTS]
        )

    async def stats(self, data: dict[str, Any]) -> None:
        event = new_event(type="pulse.stats", source="/tests", data=data)
        await self.publisher.append(event, [STATS])

    async def health(self, source: str, data: dict[str, Any]) -> None:
        event = new_event(type="pulse.health", source=source, data=data)
        await self.publisher.append(event, [HEALTH])


async def viewer_context(browser: Browser, viewport: ViewportSize = DESKTOP) -> BrowserContext:
    """A browser context of a viewer in Paris with a British locale: times read
    "11:00:00", labelled "CET"."""
    return await browser.new_context(viewport=viewport, locale="en-GB", timezone_id="Europe/Paris")


async def open_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    """The page at ``url`` and the list its script errors go to (asserted empty by callers)."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    return page, errors


def new_ids(n: int) -> list[str]:
    """``n`` new payment ids."""
    return [str(uuid.uuid4()) for _ in range(n)]

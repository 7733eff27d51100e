"""Each attempt's outcome kept on its endpoint, and the disabling of an endpoint that keeps
failing (``PULSE_WEBHOOK_DISABLE_AFTER_SECONDS``; the row's fields and the conditional
writes: :mod:`pulse.webhook_endpoint_health`).

:class:`EndpointHealth` is told of every attempt the deliverer makes
(:mod:`notify_worker.delivery`):

- after a failure, ``failing_since`` is set unless the endpoint as cached
  (:class:`~notify_worker.endpoints.EndpointDirectory`) already shows it; once it is old
  enough, the one conditional write that disables the endpoint, and by its winner the
  announcement: the :data:`~pulse.events.WEBHOOK_ENDPOINT_DISABLED` event appended to the
  account's channel (``account:{id}``, once per event id) and queued for the account's
  other endpoints that want it (the fan-out, deduplicated per event and endpoint). Then the
  announcement is recorded on the row.
- after a success, ``failing_since`` is removed — only when the cached endpoint shows it,
  or this process saw the endpoint fail within the last minute, or this process has not
  removed it for a minute (another replica may have set it): a healthy endpoint costs no
  write per delivery, at most one a minute per process.

A delivery for an endpoint the cache shows disabled is not attempted
(:meth:`EndpointHealth.disabled`): the deliverer dead-letters it ("endpoint disabled"), so
``pulse webhooks recover`` can send it once the endpoint is enabled again. Finding such an
endpoint disabled automatically with its announcement not recorded — its winner died
before announcing — sends the announcement (same event id: no duplicate reaches anyone).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from cachetools import TTLCache
from prometheus_client import Counter

from pulse.events import utc_now
from pulse.logging import get_logger
from pulse.webhook_endpoint_health import (
    disabled_automatically,
    due_for_disabling,
    endpoint_disabled_event,
)

if TYPE_CHECKING:
    from notify_worker.endpoints import EndpointDirectory
    from notify_worker.notifiers import AccountChannelNotifier
    from notify_worker.webhooks import Delivery, WebhookFanout
    from pulse.webhook_endpoint_health import EndpointHealthTable
    from pulse.webhook_endpoints import WebhookEndpoint

__all__ = ["EndpointHealth"]

log = get_logger("notify_worker.endpoint_health")

DISABLED = Counter(
    "pulse_webhook_endpoints_disabled_total",
    "Webhook endpoints disabled for failing continuously (counted by the worker that did it)",
)

# How long an endpoint's own failure here, or its clearing, spares the next success a write.
CLEAR_INTERVAL_SECONDS: Final = 60.0
_REMEMBERED: Final = 10_000


class EndpointHealth:
    """Attempt outcomes on their endpoints; the disabling and its announcement (module doc)."""

    def __init__(
        self,
        table: EndpointHealthTable,
        directory: EndpointDirectory,
        *,
        channel: AccountChannelNotifier,
        fanout: WebhookFanout,
        disable_after_seconds: int,
        clear_interval_seconds: float = CLEAR_INTERVAL_SECONDS,
    ) -> None:
        self._table = table
        self._directory = directory
        self._channel = channel
        self._fanout = fanout
        self._disable_after = disable_after_seconds
        # Endpoints that failed here lately, and those whose failing_since was removed lately.
        self._failed: TTLCache[str, bool] = TTLCache(_REMEMBERED, clear_interval_seconds)
        self._cleared: TTLCache[str, bool] = TTLCache(_REMEMBERED, clear_interval_seconds)
        # (endpoint, failing_since) of disablings known to be announced: no read per delivery
        # held back for them.
        self._announced: TTLCache[tuple[str, str], bool] = TTLCache(_REMEMBERED, 3600)

    async def disabled(self, endpoint: WebhookEndpoint | None) -> bool:
        """Whether a delivery's endpoint (as the worker's cache shows it) is disabled: then
        the delivery is not attempted. Sends the announcement of an automatic disabling that
        was not recorded as sent."""
        if endpoint is None or not endpoint.disabled:
            return False
        known = (endpoint.endpoint_id, endpoint.failing_since or "")
        if disabled_automatically(endpoint) and known not in self._announced:
            pending = await asyncio.to_thread(
                self._table.pending_announcement, endpoint.account_id, endpoint.endpoint_id
            )
            if pending is not None:
                await self._announce(pending)
            self._announced[known] = True
        return True

    async def attempted(self, delivery: Delivery, *, failed: bool) -> None:
        """Keep the outcome of an attempt on its endpoint (module doc)."""
        endpoint = await self._directory.endpoint(delivery.account_id, delivery.endpoint_id)
        if failed:
            await self._failed_attempt(delivery, endpoint)
        else:
            await self._succeeded(delivery, endpoint)

    async def _succeeded(self, delivery: Delivery, endpoint: WebhookEndpoint | None) -> None:
        key = delivery.endpoint_id
        shown = endpoint is not None and endpoint.failing_since is not None
        if not shown and key not in self._failed and key in self._cleared:
            return
        self._cleared[key] = True
        self._failed.pop(key, None)
        await asyncio.to_thread(self._table.clear_failing, delivery.account_id, key)

    async def _failed_attempt(self, delivery: Delivery, endpoint: WebhookEndpoint | None) -> None:
        self._failed[delivery.endpoint_id] = True
        now = utc_now()
        since = endpoint.failing_since if endpoint is not None else None
        if since is None:
            since = await asyncio.to_thread(
                self._table.mark_failing, delivery.account_id, delivery.endpoint_id, now=now
            )
        if since is None or not due_for_disabling(since, now, self._disable_after):
            return
        disabling = await asyncio.to_thread(
            self._table.disable,
            delivery.account_id,
            delivery.endpoint_id,
            since,
            disable_after_seconds=self._disable_after,
            now=now,
        )
        if disabling.won:
            DISABLED.inc()
            log.warning(
                "webhook endpoint disabled: failing continuously",
                failing_since=disabling.endpoint and disabling.endpoint.failing_since,
            )
        if disabling.announce and disabling.endpoint is not None:
            await self._announce(disabling.endpoint)

    async def _announce(self, endpoint: WebhookEndpoint) -> None:
        """Tell the account: its channel, and its other endpoints that want the event; then
        record that it was told."""
        event = endpoint_disabled_event(endpoint)
        await self._channel.notify(event)
        await self._fanout.notify(event, skip_endpoint=endpoint.endpoint_id)
        await asyncio.to_thread(self._table.mark_announced, endpoint)
        self._announced[endpoint.endpoint_id, endpoint.failing_since or ""] = True
        log.info("webhook endpoint disabling announced", announcement_id=event.id)

"""Where notifications go. Each destination is a :class:`Notifier`.

The account's channel (the user's browsers) and signed webhooks to third parties
(:class:`notify_worker.webhooks.WebhookFanout`); the worker sends each notification to every
notifier it holds.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from pulse.audit_positions import channel_event_item
from pulse.aws_errors import AWS_ERRORS, as_pulse_error
from pulse.channels import ChannelPublisher, account_channel, is_valid_channel
from pulse.errors import PermanentError

if TYPE_CHECKING:
    from pulse.channels import ChannelPosition
    from pulse.events import CloudEvent

__all__ = ["AccountChannelNotifier", "ChannelEventRecord", "Notifier"]


class Notifier(Protocol):
    """Delivers one ``pulse.notification`` event; must be idempotent per event id.

    Raises :class:`~pulse.errors.RetryableError` when delivery may work later and
    :class:`~pulse.errors.PermanentError` when it never can.
    """

    async def notify(self, notification: CloudEvent) -> bool:
        """Deliver; False if nothing was sent (delivered before, or nowhere to send it)."""
        ...


class ChannelEventRecord:
    """Writes the events-table row of an event only an account channel carries, with its
    position there (:func:`pulse.audit_positions.channel_event_item`), so the gateway can
    recover it after Redis no longer holds it. Rewriting it is harmless (same key)."""

    def __init__(self, ddb: Any, table: str, *, ttl_days: int) -> None:
        self._ddb = ddb
        self._table = table
        self._ttl_seconds = ttl_days * 86_400

    async def write(self, event: CloudEvent, account_id: str, position: ChannelPosition) -> None:
        """Raises :class:`~pulse.errors.RetryableError` (or another Pulse error) if it failed."""
        item = channel_event_item(
            event, account_id, position, expires_at=int(time.time()) + self._ttl_seconds
        )
        try:
            await asyncio.to_thread(self._ddb.put_item, TableName=self._table, Item=item)
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, "record the channel event", delay=1.0) from exc


class AccountChannelNotifier:
    """Appends the notification to ``account:{account_id}``, once per event id, then (with a
    ``record``) writes its durable row: after a failed write the message comes again, the
    append's guard gives back the position it had, and the row is written with it."""

    def __init__(
        self, publisher: ChannelPublisher, record: ChannelEventRecord | None = None
    ) -> None:
        self._publisher = publisher
        self._record = record

    async def notify(self, notification: CloudEvent) -> bool:
        account = str(notification.data["account_id"])
        channel = account_channel(account)
        if not is_valid_channel(channel):
            raise PermanentError(f"account id not usable as a channel: {channel!r}")
        result = await self._publisher.append(notification, [channel])
        position = result.positions.get(channel)
        if self._record is not None and position is not None:
            await self._record.write(notification, account, position)
        return result.applied

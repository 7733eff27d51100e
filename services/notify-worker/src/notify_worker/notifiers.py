"""Where notifications go. Each destination is a :class:`Notifier`.

The account's channel (the user's browsers) and signed webhooks to third parties
(:class:`notify_worker.webhooks.WebhookFanout`); the worker sends each notification to every
notifier it holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pulse.channels import ChannelPublisher, account_channel, is_valid_channel
from pulse.errors import PermanentError

if TYPE_CHECKING:
    from pulse.events import CloudEvent

__all__ = ["AccountChannelNotifier", "Notifier"]


class Notifier(Protocol):
    """Delivers one ``pulse.notification`` event; must be idempotent per event id.

    Raises :class:`~pulse.errors.RetryableError` when delivery may work later and
    :class:`~pulse.errors.PermanentError` when it never can.
    """

    async def notify(self, notification: CloudEvent) -> bool:
        """Deliver; False if nothing was sent (delivered before, or nowhere to send it)."""
        ...


class AccountChannelNotifier:
    """Appends the notification to ``account:{account_id}``, once per event id."""

    def __init__(self, publisher: ChannelPublisher) -> None:
        self._publisher = publisher

    async def notify(self, notification: CloudEvent) -> bool:
        channel = account_channel(str(notification.data["account_id"]))
        if not is_valid_channel(channel):
            raise PermanentError(f"account id not usable as a channel: {channel!r}")
        result = await self._publisher.append(notification, [channel])
        return result.applied

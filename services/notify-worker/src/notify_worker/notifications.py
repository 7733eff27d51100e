"""The notification of a payment's new status: built by :mod:`pulse.notifications` (ingest's
webhook replay builds the very same one, with the same id)."""

from pulse.notifications import SOURCE, Notification, notification_event, notification_text

__all__ = ["SOURCE", "Notification", "notification_event", "notification_text"]

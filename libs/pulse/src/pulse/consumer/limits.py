"""SQS's quotas the consumer works within."""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_BATCH", "MAX_MESSAGE_ATTRIBUTES", "MAX_VISIBILITY_SECONDS"]

MAX_BATCH: Final = 10  # messages per ReceiveMessage and entries per *Batch call
MAX_VISIBILITY_SECONDS: Final = 43_200  # the longest visibility timeout: 12 hours
MAX_MESSAGE_ATTRIBUTES: Final = 10  # message attributes per message

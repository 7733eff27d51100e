"""When a received message shows again: released at once, or hidden for a retry delay."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pulse.consumer.limits import MAX_BATCH
from pulse.consumer.metrics import RELEASED
from pulse.logging import get_logger

if TYPE_CHECKING:
    from pulse.consumer.message import SqsMessage

__all__ = ["Visibility"]

log = get_logger("pulse.consumer")


class Visibility:
    """Visibility changes of the messages of one queue."""

    def __init__(self, sqs_client: Any, queue_url: str, queue_name: str) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._released = RELEASED.labels(queue_name)

    def release(self, messages: list[SqsMessage]) -> None:
        """Make ``messages`` visible again now, unhandled (blocking: safe from any thread).

        A failed release is logged only: the messages show again when their timeout ends.
        """
        for start in range(0, len(messages), MAX_BATCH):
            chunk = messages[start : start + MAX_BATCH]
            try:
                self._sqs.change_message_visibility_batch(
                    QueueUrl=self._queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                        for i, m in enumerate(chunk)
                    ],
                )
            except Exception as exc:  # they become visible anyway when the timeout ends
                log.warning("could not release messages", count=len(chunk), error=str(exc))
        self._released.inc(len(messages))

    async def release_soon(self, messages: list[SqsMessage]) -> None:
        """:meth:`release`, off the event loop."""
        await asyncio.to_thread(self.release, messages)

    async def hide(self, message: SqsMessage, seconds: int, *, reason: str | None = None) -> None:
        """Keep ``message`` invisible for ``seconds`` from now: its retry delay.

        A refused change is logged only: the message shows again when its current timeout
        ends, a little sooner or later than asked.
        """
        try:
            await asyncio.to_thread(
                self._sqs.change_message_visibility,
                QueueUrl=self._queue_url,
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=seconds,
            )
        except Exception as exc:  # it comes back when the current timeout ends
            log.warning("could not set retry delay", error=str(exc), reason=reason)

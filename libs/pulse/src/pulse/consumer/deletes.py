"""Deleting handled messages in batches: ``DeleteMessageBatch`` of up to 10, or after ~100 ms."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pulse.consumer.limits import MAX_BATCH
from pulse.consumer.metrics import DELETE_FAILURES
from pulse.logging import get_logger

if TYPE_CHECKING:
    from pulse.consumer.message import SqsMessage

__all__ = ["DeleteBatcher"]

log = get_logger("pulse.consumer")


class DeleteBatcher:
    """Deletes handled messages in batches of up to 10, or after ``max_delay`` seconds.

    A failed delete is counted (``pulse_sqs_delete_failures_total``) and logged: the message
    is redelivered, and its handler's effects must be idempotent anyway.
    """

    def __init__(
        self, sqs_client: Any, queue_url: str, queue_name: str, *, max_delay: float = 0.1
    ) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._queue_name = queue_name
        self._max_delay = max_delay
        self._pending: asyncio.Queue[SqsMessage | None] = asyncio.Queue()
        self._sends: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sqs-delete:{self._queue_name}")

    def add(self, message: SqsMessage) -> None:
        self._pending.put_nowait(message)

    async def close(self) -> None:
        """Send everything added so far, then stop."""
        self._pending.put_nowait(None)
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        closing = False
        while not closing:
            first = await self._pending.get()
            if first is None:
                break
            batch = [first]
            deadline = loop.time() + self._max_delay
            while len(batch) < MAX_BATCH:
                try:
                    item = await asyncio.wait_for(
                        self._pending.get(), timeout=max(deadline - loop.time(), 0)
                    )
                except TimeoutError:
                    break
                if item is None:
                    closing = True
                    break
                batch.append(item)
            task = asyncio.create_task(self._send(batch))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        if self._sends:
            await asyncio.gather(*self._sends)

    async def _send(self, batch: list[SqsMessage]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(batch)]
        try:
            response = await asyncio.to_thread(
                self._sqs.delete_message_batch, QueueUrl=self._queue_url, Entries=entries
            )
        except Exception as exc:
            DELETE_FAILURES.labels(self._queue_name).inc(len(batch))
            log.warning("delete batch failed", count=len(batch), error=str(exc))
            return
        failed = response.get("Failed") or []
        if failed:
            DELETE_FAILURES.labels(self._queue_name).inc(len(failed))
            log.warning("some deletes failed", count=len(failed), failed=failed[:3])

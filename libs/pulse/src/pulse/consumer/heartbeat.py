"""The visibility heartbeat: messages whose handlers still run stay hidden, leases renewed.

Every beat, one ``ChangeMessageVisibilityBatch`` extends the visibility of each message held
a beat or more, and the callbacks its handler registered with :func:`on_heartbeat` (an
idempotency lease, say) run. When an extension is refused (the receipt handle is no longer
valid: the message was received or deleted elsewhere) or a callback reports its lease lost,
the handler is cancelled: it no longer owns the message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pulse.consumer.limits import MAX_BATCH
from pulse.consumer.metrics import HEARTBEAT_EXTENSIONS, VISIBILITY_LOST
from pulse.logging import event_context, get_logger

if TYPE_CHECKING:
    from pulse.consumer.message import SqsMessage
    from pulse.consumer.outcome import Outcome

__all__ = ["CURRENT", "Heartbeat", "HeartbeatCallback", "InFlight", "on_heartbeat"]

log = get_logger("pulse.consumer")

HeartbeatCallback = Callable[[], Awaitable[bool]]


@dataclass(eq=False)
class InFlight:
    """A message being handled: when it was last made invisible, what else to renew."""

    message: SqsMessage
    extended_at: float  # loop time of the receive or of the last extension
    renewals: list[HeartbeatCallback] = field(default_factory=list)
    lost: str | None = None  # why the heartbeat stopped the handler
    task: asyncio.Task[None] | None = None
    # FIFO: the previous message of the same group in flight, handled first.
    after: InFlight | None = None
    outcome: Outcome | None = None  # once applied


CURRENT: ContextVar[InFlight | None] = ContextVar("pulse_sqs_in_flight", default=None)
"""The message the running handler is handling (set in each handler's own task)."""


def on_heartbeat(renew: HeartbeatCallback) -> Callable[[], None] | None:
    """Run ``renew`` on every heartbeat of the message the calling handler is handling.

    ``renew`` returns False (or raises) when what it renews is lost; the handler is then
    cancelled like on a failed visibility extension. Returns a function that unregisters
    ``renew``, or None when not called from inside an :class:`SqsConsumer` handler.
    """
    state = CURRENT.get()
    if state is None:
        return None
    state.renewals.append(renew)

    def unregister() -> None:
        with contextlib.suppress(ValueError):
            state.renewals.remove(renew)

    return unregister


class Heartbeat:
    """Beats every ``interval`` seconds over the messages of ``in_flight`` (shared, live)."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        queue_name: str,
        in_flight: Mapping[Any, InFlight],
        *,
        visibility_timeout: int,
        interval: float,
    ) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._queue_name = queue_name
        self._in_flight = in_flight
        self._visibility_timeout = visibility_timeout
        self._interval = interval

    async def run(self) -> None:
        """Beat until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.beat()
            except Exception:  # never let one bad beat end the heartbeat
                log.exception("heartbeat failed", queue=self._queue_name)

    async def beat(self) -> None:
        """Extend the visibility of messages held a beat or more; run the renewals."""
        now = asyncio.get_running_loop().time()
        live = [s for s in self._in_flight.values() if s.lost is None]
        due = [s for s in live if now - s.extended_at >= self._interval * 0.9]
        renewing = [s for s in live if s.renewals]
        await asyncio.gather(
            *(self._extend(due[i : i + MAX_BATCH], now) for i in range(0, len(due), MAX_BATCH)),
            *(self._renew(s) for s in renewing),
        )

    async def _extend(self, batch: list[InFlight], now: float) -> None:
        entries = [
            {
                "Id": str(i),
                "ReceiptHandle": s.message.receipt_handle,
                "VisibilityTimeout": self._visibility_timeout,
            }
            for i, s in enumerate(batch)
        ]
        try:
            response = await asyncio.to_thread(
                self._sqs.change_message_visibility_batch, QueueUrl=self._queue_url, Entries=entries
            )
        except Exception as exc:
            log.warning("visibility extension failed", count=len(batch), error=str(exc))
            for state in batch:  # stop only those that will be visible before the next beat
                if state.extended_at + self._visibility_timeout - now < self._interval * 1.5:
                    self.stop_handler(state, f"visibility extension failed: {exc}")
            return
        failed = {str(f["Id"]): f for f in response.get("Failed") or []}
        for i, state in enumerate(batch):
            failure = failed.get(str(i))
            if failure is None:
                state.extended_at = now
                HEARTBEAT_EXTENSIONS.labels(self._queue_name).inc()
            else:
                self.stop_handler(state, f"visibility extension refused: {failure.get('Code')}")

    async def _renew(self, state: InFlight) -> None:
        for renew in list(state.renewals):
            try:
                kept = await renew()
            except Exception as exc:
                log.warning("heartbeat renewal failed", error=str(exc))
                kept = False
            if not kept:
                self.stop_handler(state, "lease lost")
                return

    def stop_handler(self, state: InFlight, reason: str) -> None:
        """Cancel the handler of ``state``: its message (or lease) is no longer ours."""
        if state.lost is not None or state.task is None or state.task.done():
            return
        state.lost = reason
        VISIBILITY_LOST.labels(self._queue_name).inc()
        with event_context(None, None, sqs_message_id=state.message.message_id):
            log.warning("stopping handler", queue=self._queue_name, reason=reason)
        state.task.cancel()

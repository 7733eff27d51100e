"""The receive loop: :class:`SqsConsumer` takes messages in, runs their handlers at most
``max_in_flight`` at a time, and applies the outcome :mod:`pulse.consumer.outcome` gives each.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from pulse.consumer.dead_letter import DeadLetters
from pulse.consumer.deletes import DeleteBatcher
from pulse.consumer.depth import poll_depths
from pulse.consumer.health import ConsumerHealth
from pulse.consumer.heartbeat import CURRENT, Heartbeat, InFlight
from pulse.consumer.limits import MAX_BATCH
from pulse.consumer.long_poll import Receiver
from pulse.consumer.metrics import RECEIVE_COUNT
from pulse.consumer.outcome import Action, Outcome, OutcomePolicy
from pulse.consumer.visibility import Visibility
from pulse.errors import Hold, PermanentError, RetryableError
from pulse.logging import event_context, get_logger

if TYPE_CHECKING:
    from pulse.consumer.message import MessageHandler, SqsMessage
    from pulse.metrics import StageMetrics

__all__ = ["SqsConsumer"]

log = get_logger("pulse.consumer")


class SqsConsumer:
    """Long-polls ``queue_url`` and runs ``handler`` on each message; see :mod:`pulse.consumer`."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        handler: MessageHandler,
        stage_metrics: StageMetrics,
        *,
        max_in_flight: int = 10,
        wait_time_seconds: int = 20,
        visibility_timeout: int = 30,
        dlq_url: str | None = None,
        shutdown_grace_seconds: float = 20.0,
        max_backoff_seconds: float = 300.0,
        delete_delay_seconds: float = 0.1,
        receive_error_backoff_seconds: float = 1.0,
        batch_window_seconds: float = 0.1,
        heartbeat_seconds: float | None = None,
        depth_poll_seconds: float = 30.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        heartbeat = heartbeat_seconds if heartbeat_seconds is not None else visibility_timeout / 3
        if not 0 < heartbeat < visibility_timeout:
            raise ValueError("heartbeat_seconds must be above 0 and below the visibility timeout")
        self._sqs = sqs_client
        self.queue_url = queue_url
        self.queue_name = name = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._handler = handler
        self._metrics = stage_metrics
        self._max_in_flight = max_in_flight
        self._grace = shutdown_grace_seconds
        self._receive_error_backoff = receive_error_backoff_seconds
        self._batch_window = batch_window_seconds
        self._depth_poll = depth_poll_seconds
        self._policy = OutcomePolicy.capped(max_backoff_seconds)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: dict[asyncio.Task[None], InFlight] = {}
        self._visibility = Visibility(sqs_client, queue_url, name)
        self._receiver = Receiver(
            sqs_client,
            queue_url,
            name,
            self._visibility,
            wait_time_seconds=wait_time_seconds,
            visibility_timeout=visibility_timeout,
        )
        self._deletes = DeleteBatcher(sqs_client, queue_url, name, max_delay=delete_delay_seconds)
        self._dead_letters = DeadLetters(sqs_client, queue_url, name, dlq_url)
        self._heartbeat = Heartbeat(
            sqs_client,
            queue_url,
            name,
            self._in_flight,
            visibility_timeout=visibility_timeout,
            interval=heartbeat,
        )
        self._receive_count = RECEIVE_COUNT.labels(name)
        # The queue and its DLQ in the health report (pulse.health): add it to a reporter.
        self.health = ConsumerHealth(sqs_client, queue_url, self._dead_letters, self._in_flight)
        self._fifo = name.endswith(".fifo")
        self._group_tails: dict[str, InFlight] = {}

    async def dlq_url(self) -> str | None:
        """The dead-letter queue: as given, else the target of the queue's RedrivePolicy."""
        return await self._dead_letters.url()

    # -- the receive loop -----------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set; then drain in-flight work and return."""
        log.info("consuming", queue=self.queue_name, max_in_flight=self._max_in_flight)
        self._deletes.start()
        stop_wait = asyncio.create_task(stopping.wait())
        background = [
            asyncio.create_task(self._heartbeat.run(), name=f"sqs-heartbeat:{self.queue_name}")
        ]
        if self._depth_poll > 0:
            depths = poll_depths(
                self._sqs, self.queue_url, self.queue_name, self._dead_letters, self._depth_poll
            )
            background.append(asyncio.create_task(depths, name=f"sqs-depth:{self.queue_name}"))
        try:
            while not stopping.is_set():
                slots = await self._acquire_slots(stop_wait)
                if not slots:
                    break
                messages = await self._receiver.receive(slots, stop_wait)
                for _ in range(slots - len(messages or ())):
                    self._slots.release()
                for message in messages or ():
                    self._start(message)
                if messages is None:  # the receive failed: do not spin on a broken queue
                    await self._pause(stop_wait, self._receive_error_backoff)
                elif 0 < len(messages) < slots:  # a trickle: let the next batch gather
                    await self._pause(stop_wait, self._batch_window)
        finally:
            stop_wait.cancel()
            await self._drain()  # the heartbeat keeps running: a drain may outlast a timeout
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._deletes.close()
            log.info("consumer stopped", queue=self.queue_name)

    @staticmethod
    async def _pause(stop_wait: asyncio.Task[bool], seconds: float) -> None:
        """Sleep ``seconds`` unless stopping comes first."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stop_wait), timeout=seconds)

    async def _acquire_slots(self, stop_wait: asyncio.Task[bool]) -> int:
        """Wait for at least one free slot (0 if stopping first); take up to 10 free ones."""
        acquire = asyncio.ensure_future(self._slots.acquire())
        await asyncio.wait({acquire, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
        if not acquire.done() or acquire.cancelled():
            return 0
        if stop_wait.done():
            self._slots.release()
            return 0
        slots = 1
        while slots < MAX_BATCH and not self._slots.locked():
            await self._slots.acquire()  # does not block: a slot is free
            slots += 1
        return slots

    # -- one message ----------------------------------------------------------------------
    def _start(self, message: SqsMessage) -> None:
        self._metrics.received.inc()
        self._receive_count.observe(message.receive_count)
        age = message.age_seconds()
        if age is not None:
            self._metrics.observe_age(age)
        self.health.received(age)
        state = InFlight(message, asyncio.get_running_loop().time())
        group = message.attributes.get("MessageGroupId") if self._fifo else None
        if group is not None:
            tail = self._group_tails.get(group)
            if tail is not None and tail.outcome is None:
                state.after = tail
            self._group_tails[group] = state
        task = asyncio.create_task(self._handle(state), name=f"sqs:{message.message_id}")
        state.task = task
        self._in_flight[task] = state
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        state = self._in_flight.pop(task, None)
        if state is not None:
            group = state.message.attributes.get("MessageGroupId")
            if group is not None and self._group_tails.get(group) is state:
                del self._group_tails[group]
        self._slots.release()

    async def _handle(self, state: InFlight) -> None:
        message = state.message
        CURRENT.set(state)  # this task's own context: seen by on_heartbeat in the handler
        start = time.perf_counter()
        self._metrics.in_progress.inc()
        label = "retry"  # cancelled while the consumer stops: the drain releases the message
        try:
            with event_context(
                None, None, sqs_message_id=message.message_id, queue=self.queue_name
            ):
                label = (await self._settle(state)).label
        finally:
            self._metrics.in_progress.dec()
            self._metrics.observe(label, time.perf_counter() - start)

    async def _settle(self, state: InFlight) -> Outcome:
        """Run the handler in its group's turn, then apply and record the policy's outcome."""
        message = state.message
        outcome: Outcome | None = None
        if state.after is not None:
            outcome = self._policy.in_turn(await _ended(state.after))
        if outcome is None:
            error: Exception | None = None
            stopped: str | None = None
            try:
                await self._handler(message)
            except asyncio.CancelledError:
                if state.lost is None:
                    raise  # the consumer is stopping, not the heartbeat
                _uncancel()
                stopped = state.lost
            except Exception as exc:
                error = exc
                _log_failure(exc, message.receive_count)
            max_receives = await self._dead_letters.max_receives() if error else None
            outcome = self._policy.after(
                message.receive_count, error, stopped=stopped, max_receives=max_receives
            )
        if outcome.action is Action.ACK:
            self._deletes.add(message)  # batched: nothing to wait for
        else:
            outcome = await self._apply(outcome, message)
        state.outcome = outcome
        return outcome

    async def _apply(self, outcome: Outcome, message: SqsMessage) -> Outcome:
        """Do what ``outcome`` (other than ACK) says; returns the outcome that came of it."""
        if outcome.action is Action.DEAD_LETTER:
            return await self._dead_letter(message, outcome)
        if outcome.action is Action.RETRY:
            await self._visibility.hide(message, outcome.delay, reason=outcome.reason)
        elif outcome.action is Action.RELEASE:
            # Handed back unhandled: the group stays blocked behind the failed message.
            await self._visibility.release_soon([message])
        elif outcome.action is Action.LEAVE:
            # Stopped by the heartbeat: another consumer may own the message now, so leave
            # it alone (no delete, no visibility change).
            log.warning("handler stopped: message no longer ours", reason=outcome.reason)
        return outcome

    async def _dead_letter(self, message: SqsMessage, outcome: Outcome) -> Outcome:
        """Send the message to the DLQ with its reason, then delete it; RETRY if that fails."""
        reason = outcome.reason or ""
        try:
            await self._dead_letters.send(message, reason)
        except Exception as exc:
            # Left for redelivery: the redrive policy dead-letters it in the end.
            log.error("could not dead-letter message", reason=reason, error=str(exc))  # noqa: TRY400
            retry = self._policy.retry(message.receive_count)
            await self._visibility.hide(message, retry.delay)
            return retry
        log.warning("message dead-lettered", reason=reason)
        self._deletes.add(message)
        return outcome

    # -- shutdown -------------------------------------------------------------------------
    async def _drain(self) -> None:
        if not self._in_flight:
            return
        log.info("stopping: finishing in-flight messages", count=len(self._in_flight))
        tasks = set(self._in_flight)
        _done, pending = await asyncio.wait(tasks, timeout=self._grace)
        if not pending:
            return
        unfinished = [
            self._in_flight[t].message
            for t in pending
            if t in self._in_flight and self._in_flight[t].lost is None
        ]
        log.warning("grace period over: abandoning handlers", count=len(pending))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._visibility.release_soon(unfinished)


async def _ended(before: InFlight) -> Outcome | None:
    """FIFO: how the group's previous message ended, once it has (None: without an outcome)."""
    if before.task is not None and not before.task.done():
        await asyncio.wait({before.task})
    return before.outcome


def _uncancel() -> None:
    """Take back the heartbeat's cancellation: the handler ended, its task goes on."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _log_failure(error: Exception, attempt: int) -> None:
    """Log a handler's failure (a crash with its traceback)."""
    if isinstance(error, Hold):
        log.info("message held", reason=str(error), delay=error.delay)
    elif isinstance(error, RetryableError):
        log.warning("handler failed, will retry", error=str(error), attempt=attempt)
    elif not isinstance(error, PermanentError):  # dead-lettering logs its own line
        log.error("handler crashed, will retry", attempt=attempt, exc_info=error)

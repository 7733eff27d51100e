"""The SQS consumer runtime the workers run on.

:class:`SqsConsumer` long-polls one queue and hands each message to an async handler,
several at once (at most ``max_in_flight``). What happens to a message depends on how its
handler ended:

- returned: the message is deleted (batched: ``DeleteMessageBatch`` of up to 10, or after
  ~100 ms), never before the handler's effects are done;
- raised :class:`~pulse.errors.RetryableError` (or anything unexpected): the message's
  visibility is set to a backoff (the error's ``delay``, else ``min(2**receive_count, 300)``
  seconds) so it comes back later; the queue's redrive policy (``maxReceiveCount``) moves
  a message that keeps failing to the dead-letter queue;
- raised :class:`~pulse.errors.PermanentError`: the body goes to the dead-letter queue at
  once with a message attribute ``error`` giving the reason, then the original is deleted.

Visibility heartbeat: while a handler runs, its message's visibility is extended (one
``ChangeMessageVisibilityBatch`` for every message held at least ``heartbeat_seconds``, default
a third of the visibility timeout) so no other consumer receives it meanwhile. Callbacks a
handler registered with :func:`on_heartbeat` (an idempotency lease, say) run on the same beat.
If an extension is refused (the receipt handle is no longer valid: the message was received
or deleted elsewhere) or a callback reports its lease lost, the handler is cancelled — it no
longer owns the message — and the message is neither deleted nor retried by this consumer.

FIFO queues (the URL ends in ``.fifo``): the messages of one message group are handled one
after the other, in the order received; when one does not succeed (a retry, a lost
heartbeat), the group's later messages of the same batch are made visible again unhandled,
so the group stays blocked behind the failed message and its order holds. Dead-lettering to
a FIFO DLQ keeps the group id.

Depth: every ``depth_poll_seconds`` the queue's depth and its dead-letter queue's depth are
read into the gauges ``pulse_sqs_queue_depth{queue}`` and ``pulse_sqs_dlq_depth{queue}``.

Batching window: when a receive returns fewer messages than it asked for, the next receive
waits ``batch_window_seconds`` (default 0.1 s), so a trickle of messages is fetched in
batches rather than one ``ReceiveMessage`` per message — Lambda's
``MaximumBatchingWindowInSeconds``, trading that much latency for far fewer calls.

Shutdown (``stopping`` set): receiving stops at once — a pending long poll is abandoned,
and any messages it returns later are made visible again (``ChangeMessageVisibility`` 0);
in-flight handlers get ``shutdown_grace_seconds`` to finish (the messages of those that do
not are released the same way); pending deletes are flushed; :meth:`SqsConsumer.run` returns.

Every boto3 call runs off the event loop. The long poll runs in its own daemon thread rather
than the default executor: ``asyncio.run`` joins executor threads at exit, which would hold a
stopping process for the rest of a 20 s poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from pulse.errors import PermanentError, RetryableError
from pulse.events import CloudEvent
from pulse.logging import event_context, get_logger
from pulse.service import retry_until_found
from pulse.settings import PulseSettings

if TYPE_CHECKING:
    from pulse.metrics import StageMetrics
    from pulse.service import Lifecycle

__all__ = [
    "MessageHandler",
    "SqsConsumer",
    "SqsConsumerSettings",
    "SqsMessage",
    "backoff_seconds",
    "consume",
    "on_heartbeat",
    "wait_for_queue_url",
]

log = get_logger("pulse.consumer")

MAX_BATCH: Final = 10  # SQS's limit for ReceiveMessage and the *Batch calls
MAX_VISIBILITY_SECONDS: Final = 43_200  # SQS's limit: 12 hours
_MAX_MESSAGE_ATTRIBUTES: Final = 10  # SQS's limit per message
_MAX_REASON_CHARS: Final = 1_000

RECEIVE_COUNT = Histogram(
    "pulse_sqs_message_receive_count",
    "How many times a message had been received (ApproximateReceiveCount) when handled",
    ["queue"],
    buckets=(1, 2, 3, 4, 5, 10, 20),
)
DELETE_FAILURES = Counter(
    "pulse_sqs_delete_failures_total",
    "Messages whose delete failed after successful handling (they will be redelivered)",
    ["queue"],
)
VISIBILITY_LOST = Counter(
    "pulse_sqs_visibility_lost_total",
    "Handlers stopped because their message's visibility or lease could not be extended",
    ["queue"],
)
HEARTBEAT_EXTENSIONS = Counter(
    "pulse_sqs_visibility_extensions_total",
    "Visibility extensions of messages whose handlers were still running",
    ["queue"],
)
QUEUE_DEPTH = Gauge(
    "pulse_sqs_queue_depth",
    "Messages in the queue (visible plus in flight), polled",
    ["queue"],
)
DLQ_DEPTH = Gauge(
    "pulse_sqs_dlq_depth",
    "Messages in the queue's dead-letter queue, polled",
    ["queue"],
)
RELEASED = Counter(
    "pulse_sqs_messages_released_total",
    "Messages made visible again unhandled because the consumer was stopping",
    ["queue"],
)


@dataclass(frozen=True)
class SqsMessage:
    """One received SQS message, decoded."""

    message_id: str
    receipt_handle: str
    body: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    message_attributes: dict[str, Any] = field(default_factory=dict)
    receive_count: int = 1
    sent_at: datetime | None = None

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> SqsMessage:
        """Build from one entry of ``ReceiveMessage``'s ``Messages``."""
        attributes = {str(k): str(v) for k, v in (raw.get("Attributes") or {}).items()}
        sent_ms = attributes.get("SentTimestamp")
        sent_at = (
            datetime.fromtimestamp(int(sent_ms) / 1000, UTC)
            if sent_ms and sent_ms.isdigit()
            else None
        )
        count = attributes.get("ApproximateReceiveCount", "1")
        return cls(
            message_id=str(raw["MessageId"]),
            receipt_handle=str(raw["ReceiptHandle"]),
            body=str(raw.get("Body", "")).encode(),
            attributes=attributes,
            message_attributes=dict(raw.get("MessageAttributes") or {}),
            receive_count=int(count) if count.isdigit() else 1,
            sent_at=sent_at,
        )

    def string_attribute(self, name: str) -> str | None:
        """The value of String (or Number) message attribute ``name``, if present."""
        value = self.message_attributes.get(name)
        if not isinstance(value, dict):
            return None
        text = value.get("StringValue")
        return str(text) if text is not None else None

    def cloud_event(self, *types: str) -> CloudEvent:
        """The CloudEvent in the body; :class:`PermanentError` if it is not one of ``types``."""
        try:
            event = CloudEvent.from_json(self.body)
        except (ValidationError, orjson.JSONDecodeError) as exc:
            raise PermanentError(f"not a CloudEvent: {type(exc).__name__}") from exc
        if types and event.type not in types:
            raise PermanentError(f"unexpected event type {event.type!r}")
        return event

    def age_seconds(self, now: float | None = None) -> float | None:
        """Seconds since the message was sent, or None without a SentTimestamp."""
        if self.sent_at is None:
            return None
        return (time.time() if now is None else now) - self.sent_at.timestamp()


MessageHandler = Callable[[SqsMessage], Awaitable[None]]
HeartbeatCallback = Callable[[], Awaitable[bool]]


@dataclass(eq=False)
class _InFlight:
    """A message being handled: when it was last made invisible, what else to renew."""

    message: SqsMessage
    extended_at: float  # loop time of the receive or of the last extension
    renewals: list[HeartbeatCallback] = field(default_factory=list)
    lost: str | None = None
    task: asyncio.Task[None] | None = None
    # FIFO: the previous message of the same group in flight, handled first.
    after: _InFlight | None = None
    outcome: str | None = None


_CURRENT: ContextVar[_InFlight | None] = ContextVar("pulse_sqs_in_flight", default=None)


def on_heartbeat(renew: HeartbeatCallback) -> Callable[[], None] | None:
    """Run ``renew`` on every heartbeat of the message the calling handler is handling.

    ``renew`` returns False (or raises) when what it renews is lost; the handler is then
    cancelled like on a failed visibility extension. Returns a function that unregisters
    ``renew``, or None when not called from inside an :class:`SqsConsumer` handler.
    """
    state = _CURRENT.get()
    if state is None:
        return None
    state.renewals.append(renew)

    def unregister() -> None:
        with contextlib.suppress(ValueError):
            state.renewals.remove(renew)

    return unregister


def backoff_seconds(receive_count: int, *, maximum: float = 300.0) -> float:
    """Visibility delay before the next attempt: ``min(2**receive_count, maximum)``."""
    return float(min(2 ** min(max(receive_count, 0), 20), maximum))


async def wait_for_queue_url(
    sqs_client: Any, queue_name: str, stopping: asyncio.Event, *, retry_seconds: float = 2.0
) -> str | None:
    """The URL of ``queue_name``, retrying until it exists; None if ``stopping`` is set first."""

    def find() -> str:
        return str(sqs_client.get_queue_url(QueueName=queue_name)["QueueUrl"])

    return await retry_until_found(
        f"queue {queue_name}", find, stopping, retry_seconds=retry_seconds
    )


def _release_sync(sqs_client: Any, queue_url: str, messages: list[SqsMessage]) -> None:
    """Make ``messages`` visible again now (blocking; runs in a worker thread)."""
    for start in range(0, len(messages), MAX_BATCH):
        chunk = messages[start : start + MAX_BATCH]
        try:
            sqs_client.change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )
        except Exception as exc:  # they become visible anyway when the timeout ends
            log.warning("could not release messages", count=len(chunk), error=str(exc))


class _LongPoll:
    """One ``ReceiveMessage`` call in a daemon thread that the caller may abandon.

    If abandoned, the thread itself releases whatever the call returns, so no message stays
    invisible for a whole visibility timeout because the process was stopping.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        call: Callable[[], list[SqsMessage]],
        release: _QueueRelease,
    ) -> None:
        self._loop = loop
        self._call = call
        self._release = release
        self._lock = threading.Lock()
        self._abandoned = False
        self._delivered = False
        self.future: asyncio.Future[list[SqsMessage]] = loop.create_future()
        threading.Thread(target=self._target, name="sqs-receive", daemon=True).start()

    def _target(self) -> None:
        result: list[SqsMessage] = []
        error: BaseException | None = None
        try:
            result = self._call()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with self._lock:
            abandoned = self._abandoned
            self._delivered = not abandoned
        if not abandoned:
            try:
                self._loop.call_soon_threadsafe(self._settle, result, error)
                return  # noqa: TRY300 - the release below is for a closed loop only
            except RuntimeError:  # the loop is closed: nobody will handle these
                pass
        if result:
            self._release(result)
            RELEASED.labels(self._release.queue_name).inc(len(result))

    def _settle(self, result: list[SqsMessage], error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)

    def abandon(self) -> bool:
        """Give up on the call; False if its result is already on its way to the loop."""
        with self._lock:
            if self._delivered:
                return False
            self._abandoned = True
            return True


class _DeleteBatcher:
    """Deletes handled messages in batches of up to 10, or after ``max_delay`` seconds."""

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


class SqsConsumer:
    """Long-polls ``queue_url`` and runs ``handler`` on each message; see the module doc."""

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
        self._sqs = sqs_client
        self.queue_url = queue_url
        self.queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._handler = handler
        self._metrics = stage_metrics
        self._max_in_flight = max_in_flight
        self._wait_time = max(0, min(wait_time_seconds, 20))
        self._visibility_timeout = visibility_timeout
        self._dlq_url = dlq_url
        self._grace = shutdown_grace_seconds
        self._max_backoff = max_backoff_seconds
        self._receive_error_backoff = receive_error_backoff_seconds
        self._batch_window = batch_window_seconds
        self._heartbeat = (
            heartbeat_seconds if heartbeat_seconds is not None else visibility_timeout / 3
        )
        if not 0 < self._heartbeat < visibility_timeout:
            raise ValueError("heartbeat_seconds must be above 0 and below the visibility timeout")
        self._depth_poll = depth_poll_seconds
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: dict[asyncio.Task[None], _InFlight] = {}
        self._deletes = _DeleteBatcher(
            sqs_client, queue_url, self.queue_name, max_delay=delete_delay_seconds
        )
        self._receive_count = RECEIVE_COUNT.labels(self.queue_name)
        self._fifo = self.queue_name.endswith(".fifo")
        self._group_tails: dict[str, _InFlight] = {}

    # -- the receive loop -----------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set; then drain in-flight work and return."""
        log.info("consuming", queue=self.queue_name, max_in_flight=self._max_in_flight)
        self._deletes.start()
        stop_wait = asyncio.create_task(stopping.wait())
        background = [
            asyncio.create_task(self._heartbeat_loop(), name=f"sqs-heartbeat:{self.queue_name}")
        ]
        if self._depth_poll > 0:
            background.append(
                asyncio.create_task(self._depth_loop(), name=f"sqs-depth:{self.queue_name}")
            )
        try:
            while not stopping.is_set():
                slots = await self._acquire_slots(stop_wait)
                if not slots:
                    break
                messages = await self._receive(slots, stop_wait)
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

    def _receive_sync(self, count: int) -> list[SqsMessage]:
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=self._wait_time,
            VisibilityTimeout=self._visibility_timeout,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [SqsMessage.from_sqs(raw) for raw in response.get("Messages") or []]

    async def _receive(self, count: int, stop_wait: asyncio.Task[bool]) -> list[SqsMessage] | None:
        """Up to ``count`` messages; [] when stopping; None when ReceiveMessage failed."""
        loop = asyncio.get_running_loop()
        release = _QueueRelease(self._sqs, self.queue_url, self.queue_name)
        poll = _LongPoll(loop, lambda: self._receive_sync(count), release)
        waiters: set[asyncio.Future[Any]] = {poll.future, stop_wait}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not poll.future.done() and poll.abandon():
            log.info("stopping: long poll abandoned", queue=self.queue_name)
            return []
        try:
            messages = await poll.future
        except Exception as exc:
            log.warning("receive failed", queue=self.queue_name, error=str(exc))
            return None
        if stop_wait.done() and messages:
            # Stopping: hand them straight back rather than start new work.
            await asyncio.to_thread(release, messages)
            RELEASED.labels(self.queue_name).inc(len(messages))
            return []
        return messages

    # -- one message ----------------------------------------------------------------------
    def _start(self, message: SqsMessage) -> None:
        self._metrics.received.inc()
        self._receive_count.observe(message.receive_count)
        age = message.age_seconds()
        if age is not None:
            self._metrics.observe_age(age)
        state = _InFlight(message, asyncio.get_running_loop().time())
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
            if state.outcome is None:
                state.outcome = "cancelled"
            group = state.message.attributes.get("MessageGroupId")
            if group is not None and self._group_tails.get(group) is state:
                del self._group_tails[group]
        self._slots.release()

    async def _handle(self, state: _InFlight) -> None:
        message = state.message
        _CURRENT.set(state)  # this task's own context: seen by on_heartbeat in the handler
        start = time.perf_counter()
        self._metrics.in_progress.inc()
        outcome = "retry"
        try:
            with event_context(
                None, None, sqs_message_id=message.message_id, queue=self.queue_name
            ):
                outcome = await self._outcome(state)
        finally:
            self._metrics.in_progress.dec()
            self._metrics.observe(outcome, time.perf_counter() - start)

    async def _outcome(self, state: _InFlight) -> str:
        outcome = await self._run_handler(state)
        state.outcome = outcome
        return outcome

    async def _wait_for_group(self, state: _InFlight) -> bool:
        """FIFO: wait for the group's previous message; False if it did not succeed."""
        before = state.after
        if before is None:
            return True
        if before.task is not None and not before.task.done():
            await asyncio.wait({before.task})
        return before.outcome in {"success", "dlq"}

    async def _run_handler(self, state: _InFlight) -> str:
        message = state.message
        if not await self._wait_for_group(state):
            # Hand it back: the group stays blocked behind the failed message.
            await asyncio.to_thread(_release_sync, self._sqs, self.queue_url, [message])
            RELEASED.labels(self.queue_name).inc()
            return "retry"
        try:
            await self._handler(message)
        except asyncio.CancelledError:
            if state.lost is None:
                raise
            # Stopped by the heartbeat: another consumer may own the message now, so leave
            # it alone (no delete, no visibility change).
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            log.warning("handler stopped: message no longer ours", reason=state.lost)
            return "retry"
        except PermanentError as exc:
            return await self._dead_letter(message, str(exc) or type(exc).__name__)
        except RetryableError as exc:
            log.warning("handler failed, will retry", error=str(exc), attempt=message.receive_count)
            await self._retry_later(message, exc.delay)
            return "retry"
        except Exception as exc:
            log.exception("handler crashed, will retry", attempt=message.receive_count)
            await self._retry_later(message, None, reason=type(exc).__name__)
            return "retry"
        self._deletes.add(message)
        return "success"

    async def _retry_later(
        self, message: SqsMessage, delay: float | None, *, reason: str | None = None
    ) -> None:
        if delay is None:
            delay = backoff_seconds(message.receive_count, maximum=self._max_backoff)
        seconds = max(0, min(math.ceil(delay), MAX_VISIBILITY_SECONDS))
        try:
            await asyncio.to_thread(
                self._sqs.change_message_visibility,
                QueueUrl=self.queue_url,
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=seconds,
            )
        except Exception as exc:  # it comes back when the current timeout ends
            log.warning("could not set retry delay", error=str(exc), reason=reason)

    async def dlq_url(self) -> str | None:
        """The dead-letter queue: as given, else the target of the queue's RedrivePolicy."""
        if self._dlq_url is None:
            response = await asyncio.to_thread(
                self._sqs.get_queue_attributes,
                QueueUrl=self.queue_url,
                AttributeNames=["RedrivePolicy"],
            )
            policy = (response.get("Attributes") or {}).get("RedrivePolicy")
            if not policy:
                return None
            arn = str(json.loads(policy)["deadLetterTargetArn"])
            parts = arn.split(":")
            found = await asyncio.to_thread(
                self._sqs.get_queue_url, QueueName=parts[5], QueueOwnerAWSAccountId=parts[4]
            )
            self._dlq_url = str(found["QueueUrl"])
        return self._dlq_url

    async def _require_dlq_url(self) -> str:
        dlq = await self.dlq_url()
        if dlq is None:
            raise PermanentError(f"queue {self.queue_name} has no dead-letter queue")
        return dlq

    def _dead_letter_attributes(self, message: SqsMessage, reason: str) -> dict[str, Any]:
        ours: dict[str, Any] = {
            "error": {"DataType": "String", "StringValue": reason[:_MAX_REASON_CHARS]},
            "source_queue": {"DataType": "String", "StringValue": self.queue_name},
            "receive_count": {"DataType": "Number", "StringValue": str(message.receive_count)},
        }
        kept = {
            name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
            for name, value in message.message_attributes.items()
            if name not in ours and isinstance(value, dict) and "StringValue" in value
        }
        room = _MAX_MESSAGE_ATTRIBUTES - len(ours)
        return {**dict(list(kept.items())[:room]), **ours}

    async def _dead_letter(self, message: SqsMessage, reason: str) -> str:
        """Send the message to the DLQ with its reason, then delete it; ``dlq`` or ``retry``."""
        try:
            dlq = await self._require_dlq_url()
            fifo: dict[str, str] = {}
            if dlq.endswith(".fifo"):
                group = message.attributes.get("MessageGroupId") or "dead-letter"
                fifo = {"MessageGroupId": group, "MessageDeduplicationId": message.message_id}
            await asyncio.to_thread(
                self._sqs.send_message,
                QueueUrl=dlq,
                MessageBody=message.body.decode(),
                MessageAttributes=self._dead_letter_attributes(message, reason),
                **fifo,
            )
        except Exception as exc:
            # Left for redelivery: the redrive policy dead-letters it in the end.
            log.error("could not dead-letter message", reason=reason, error=str(exc))  # noqa: TRY400
            await self._retry_later(message, None)
            return "retry"
        log.warning("message dead-lettered", reason=reason)
        self._deletes.add(message)
        return "dlq"

    # -- heartbeat and depth ----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            try:
                await self._beat()
            except Exception:  # never let one bad beat end the heartbeat
                log.exception("heartbeat failed", queue=self.queue_name)

    async def _beat(self) -> None:
        """Extend the visibility of messages held a beat or more; run the renewals."""
        now = asyncio.get_running_loop().time()
        live = [s for s in self._in_flight.values() if s.lost is None]
        due = [s for s in live if now - s.extended_at >= self._heartbeat * 0.9]
        renewing = [s for s in live if s.renewals]
        await asyncio.gather(
            *(self._extend(due[i : i + MAX_BATCH], now) for i in range(0, len(due), MAX_BATCH)),
            *(self._renew(s) for s in renewing),
        )

    async def _extend(self, batch: list[_InFlight], now: float) -> None:
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
                self._sqs.change_message_visibility_batch, QueueUrl=self.queue_url, Entries=entries
            )
        except Exception as exc:
            log.warning("visibility extension failed", count=len(batch), error=str(exc))
            for state in batch:  # stop only those that will be visible before the next beat
                if state.extended_at + self._visibility_timeout - now < self._heartbeat * 1.5:
                    self._stop_handler(state, f"visibility extension failed: {exc}")
            return
        failed = {str(f["Id"]): f for f in response.get("Failed") or []}
        for i, state in enumerate(batch):
            failure = failed.get(str(i))
            if failure is None:
                state.extended_at = now
                HEARTBEAT_EXTENSIONS.labels(self.queue_name).inc()
            else:
                self._stop_handler(state, f"visibility extension refused: {failure.get('Code')}")

    async def _renew(self, state: _InFlight) -> None:
        for renew in list(state.renewals):
            try:
                kept = await renew()
            except Exception as exc:
                log.warning("heartbeat renewal failed", error=str(exc))
                kept = False
            if not kept:
                self._stop_handler(state, "lease lost")
                return

    def _stop_handler(self, state: _InFlight, reason: str) -> None:
        if state.lost is not None or state.task is None or state.task.done():
            return
        state.lost = reason
        VISIBILITY_LOST.labels(self.queue_name).inc()
        with event_context(None, None, sqs_message_id=state.message.message_id):
            log.warning("stopping handler", queue=self.queue_name, reason=reason)
        state.task.cancel()

    async def _depth_loop(self) -> None:
        queue_depth = QUEUE_DEPTH.labels(self.queue_name)
        dlq_depth = DLQ_DEPTH.labels(self.queue_name)
        while True:
            try:
                queue_depth.set(await self._depth(self.queue_url))
                dlq = await self.dlq_url()
                if dlq is not None:
                    dlq_depth.set(await self._depth(dlq))
            except Exception as exc:
                log.warning("could not read queue depth", error=str(exc))
            await asyncio.sleep(self._depth_poll)

    async def _depth(self, url: str) -> int:
        response = await asyncio.to_thread(
            self._sqs.get_queue_attributes,
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response.get("Attributes") or {}
        return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
            attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
        )

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
        await asyncio.to_thread(_release_sync, self._sqs, self.queue_url, unfinished)
        RELEASED.labels(self.queue_name).inc(len(unfinished))


class _QueueRelease:
    """Callable that makes messages of one queue visible again (used from any thread)."""

    def __init__(self, sqs_client: Any, queue_url: str, queue_name: str) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self.queue_name = queue_name

    def __call__(self, messages: list[SqsMessage]) -> None:
        _release_sync(self._sqs, self._queue_url, messages)


class SqsConsumerSettings(PulseSettings):
    """Settings of a worker that consumes one SQS queue (``PULSE_SQS_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    # Messages handled at once by one process.
    sqs_max_in_flight: int = Field(default=10, ge=1, le=1000)
    # Long-poll length; 20 is SQS's maximum and the cheapest.
    sqs_wait_time_seconds: int = Field(default=20, ge=0, le=20)
    # How long a received message stays hidden from other consumers while handled.
    sqs_visibility_timeout: int = Field(default=30, ge=1, le=MAX_VISIBILITY_SECONDS)
    # Wait before the next receive when the last one returned less than a full batch.
    sqs_batch_window_seconds: float = Field(default=0.1, ge=0, le=300)
    # Longest retry delay of a failing message (the backoff doubles per receive up to this).
    sqs_max_backoff_seconds: float = Field(default=300.0, ge=0, le=MAX_VISIBILITY_SECONDS)
    # How often a running handler's message has its visibility extended (and its leases
    # renewed); unset: a third of the visibility timeout or of the idempotency lease.
    sqs_heartbeat_seconds: float | None = Field(default=None, gt=0, le=MAX_VISIBILITY_SECONDS)
    # How often the queue's and its DLQ's depths are read into gauges; 0 turns it off.
    sqs_depth_poll_seconds: float = Field(default=30.0, ge=0, le=3600)

    # Idempotency guard (pulse.idempotency): the lease a handler holds on its event id,
    # renewed on each heartbeat, and how long a completed event id is remembered.
    idempotency_lease_seconds: float = Field(default=60.0, gt=0, le=MAX_VISIBILITY_SECONDS)
    idempotency_ttl_seconds: float = Field(default=7 * 24 * 3600.0, gt=0, le=90 * 24 * 3600)

    @property
    def heartbeat_seconds(self) -> float:
        """The effective heartbeat: as set, else a third of the visibility timeout or of the
        idempotency lease, whichever is shorter."""
        if self.sqs_heartbeat_seconds is not None:
            return self.sqs_heartbeat_seconds
        return min(self.sqs_visibility_timeout, self.idempotency_lease_seconds) / 3

    @model_validator(mode="after")
    def _heartbeat_within_visibility(self) -> SqsConsumerSettings:
        beat = self.sqs_heartbeat_seconds
        if beat is not None and beat >= self.sqs_visibility_timeout:
            raise ValueError("sqs_heartbeat_seconds must be below sqs_visibility_timeout")
        if self.idempotency_lease_seconds <= self.heartbeat_seconds:
            raise ValueError("idempotency_lease_seconds must be above the heartbeat interval")
        return self


async def consume(
    lifecycle: Lifecycle,
    sqs_client: Any,
    queue_name: str,
    handler: MessageHandler,
    *,
    stage_metrics: StageMetrics,
    settings: SqsConsumerSettings,
    check_name: str = "sqs",
) -> None:
    """Run a :class:`SqsConsumer` on ``queue_name`` until ``lifecycle.stopping`` is set.

    Adds a readiness check named ``check_name`` (``GetQueueAttributes`` on the queue) and
    waits for the queue to exist before consuming, so a worker started before its topology
    waits for it.
    """
    found: list[str] = []

    async def check_queue() -> None:
        url = found[0] if found else None
        if url is None:
            url = str(
                (await asyncio.to_thread(sqs_client.get_queue_url, QueueName=queue_name))[
                    "QueueUrl"
                ]
            )
        await asyncio.to_thread(
            sqs_client.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"]
        )

    lifecycle.add_check(check_name, check_queue)
    url = await wait_for_queue_url(sqs_client, queue_name, lifecycle.stopping)
    if url is None:
        return
    found.append(url)
    consumer = SqsConsumer(
        sqs_client,
        url,
        handler,
        stage_metrics,
        max_in_flight=settings.sqs_max_in_flight,
        wait_time_seconds=settings.sqs_wait_time_seconds,
        visibility_timeout=settings.sqs_visibility_timeout,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        max_backoff_seconds=settings.sqs_max_backoff_seconds,
        batch_window_seconds=settings.sqs_batch_window_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        depth_poll_seconds=settings.sqs_depth_poll_seconds,
    )
    await consumer.run(lifecycle.stopping)

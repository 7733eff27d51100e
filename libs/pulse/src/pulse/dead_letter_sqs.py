"""The SQS side of ``pulse dlq``: measure, read, redrive and purge a dead-letter queue.

Thin boto3 edges around :mod:`pulse.dead_letters` (blocking calls: the commands run them
in order). A failed AWS call is raised as its Pulse error (:mod:`pulse.aws_errors`).

**Reading does not consume.** Messages are received with a visibility timeout of
``hold_seconds`` and made visible again (``ChangeMessageVisibility`` 0) before returning, so
they stay; a reader killed meanwhile leaves them hidden that long at most. Each read is a
receive: it counts towards a queue's ``maxReceiveCount`` — why ``stream-failures`` allows
1000 (:data:`pulse.topology.FAILURE_READS`); the other dead-letter queues have no redrive
policy. SQS returns at most 10 messages per receive, and of a FIFO queue at most the 10
next of each message group.

**The oldest message's age** has no SQS API (CloudWatch's ``ApproximateAgeOfOldestMessage``
is per minute, and absent from emulators): it is the age of the earliest ``SentTimestamp``
among up to 10 messages read as above — exact on a queue holding no more than that, a lower
bound otherwise (a standard queue returns a sample). A message the consumer dead-lettered
was sent when it was dead-lettered; one SQS's redrive policy moved from a standard queue
keeps the time it was first sent.

**Redrive** sends a dead-letter queue's messages back to its source queue
(:class:`~pulse.dead_letters.DeadLetterQueue`). Without a maximum it asks SQS to do it
(``StartMessageMoveTask``, standard and FIFO queues alike, the destination given
explicitly) and follows the task with ``ListMessageMoveTasks`` until it ends. Where the
endpoint lacks the action (:func:`~pulse.dead_letters.lacks_action`: the local emulator),
or with a maximum (a move task cannot stop at a count), it moves them itself in batches of
10: receive (hidden ``hold_seconds``), ``SendMessageBatch`` to the source, then
``DeleteMessageBatch`` of what was sent. Like a move task it moves only what the queue held
when it started: a message dead-lettered again meanwhile (one whose cause is not fixed comes
back at once) is left there, else the two would pass it back and forth for ever. Send
before delete, so a redrive killed at any
point loses nothing: a message sent but not deleted shows again in the dead-letter queue and
a second redrive sends it again, a duplicate its receiver's idempotency absorbs (a FIFO
source drops it outright within five minutes: its deduplication id is fixed).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from botocore.exceptions import ClientError

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.consumer.limits import MAX_BATCH
from pulse.consumer.message import SqsMessage
from pulse.consumer.visibility import Visibility
from pulse.dead_letters import QueueState, lacks_action, oldest_age_seconds, resend_entry
from pulse.errors import PermanentError, TopologyMissingError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pulse.dead_letters import DeadLetterQueue

__all__ = [
    "HOLD_SECONDS",
    "DeadLetterQueues",
    "RedriveProgress",
    "move_task_progress",
    "our_move_task",
]

HOLD_SECONDS: Final = 30  # how long a message read or being moved stays hidden
_MOVE_TASK_POLL_SECONDS: Final = 2.0
_MOVE_TASK_ENDED: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
_CLOCK_SKEW_MS: Final = 60_000

Method = Literal["move-task", "receive-send-delete"]


@dataclass(frozen=True)
class RedriveProgress:
    """How far a redrive is: ``moved`` messages so far, of about ``expected`` (None: not
    known), by ``method``; ``done`` once it ended."""

    moved: int
    expected: int | None
    method: Method
    done: bool = False


def move_task_progress(task: dict[str, Any]) -> RedriveProgress:
    """A ``ListMessageMoveTasks`` result as progress; :class:`PermanentError` if the task
    failed or was cancelled."""
    status = str(task.get("Status", ""))
    if status in {"FAILED", "CANCELLED"}:
        reason = task.get("FailureReason") or "no reason given"
        raise PermanentError(f"the message move task ended {status}: {reason}")
    to_move = task.get("ApproximateNumberOfMessagesToMove")
    return RedriveProgress(
        moved=int(task.get("ApproximateNumberOfMessagesMoved", 0)),
        expected=int(to_move) if to_move is not None else None,
        method="move-task",
        done=status in _MOVE_TASK_ENDED,
    )


def _sent_after(message: SqsMessage, moment: datetime) -> bool:
    return message.sent_at is not None and message.sent_at > moment


def our_move_task(
    results: list[dict[str, Any]], handle: str, asked_ms: int
) -> dict[str, Any] | None:
    """The task just started among ``ListMessageMoveTasks``' results (most recent first):
    the one with its handle (listed only while it runs), else the most recent one started
    since it was asked for (``asked_ms``, local clock, a minute's skew allowed: one task at
    a time runs per queue); None while it is not listed yet."""
    for task in results:
        if handle and task.get("TaskHandle") == handle:
            return task
    for task in results:
        if int(task.get("StartedTimestamp", 0)) >= asked_ms - _CLOCK_SKEW_MS:
            return task
    return None


@contextmanager
def _aws(what: str) -> Iterator[None]:
    """Raise a failed AWS call inside as its Pulse error, its message starting with ``what``."""
    try:
        yield
    except AWS_ERRORS as exc:
        raise as_pulse_error(exc, what) from exc


class DeadLetterQueues:
    """The SQS calls of ``pulse dlq`` on one stack (``sqs``: its boto3 client)."""

    def __init__(self, sqs: Any, *, hold_seconds: int = HOLD_SECONDS) -> None:
        self._sqs = sqs
        self._hold = hold_seconds
        self._urls: dict[str, str] = {}

    def url(self, name: str) -> str:
        """The queue's URL; :class:`TopologyMissingError` saying to apply the topology."""
        if name not in self._urls:
            try:
                self._urls[name] = str(self._sqs.get_queue_url(QueueName=name)["QueueUrl"])
            except AWS_ERRORS as exc:
                if classify_aws_error(exc) is AwsErrorKind.NOT_FOUND:
                    raise TopologyMissingError(
                        f"queue {name} does not exist: apply the topology "
                        "(make run does; on Kubernetes, the chart's topology job or the operator)"
                    ) from exc
                raise as_pulse_error(exc, f"GetQueueUrl {name}") from exc
        return self._urls[name]

    def _attributes(self, name: str, *names: str) -> dict[str, str]:
        with _aws(f"GetQueueAttributes {name}"):
            response = self._sqs.get_queue_attributes(
                QueueUrl=self.url(name), AttributeNames=list(names)
            )
        return dict(response.get("Attributes") or {})

    # -- reading ------------------------------------------------------------------------
    def counts(self, queue: DeadLetterQueue) -> tuple[int, int]:
        """Visible and in-flight messages (SQS's approximate counts; nothing is received)."""
        attributes = self._attributes(
            queue.name, "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"
        )
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    def state(self, queue: DeadLetterQueue, *, now: datetime | None = None) -> QueueState:
        """Depth, in-flight count and the oldest message's age (of a sample, see above)."""
        visible, in_flight = self.counts(queue)
        sample = self.peek(queue, MAX_BATCH) if visible else []
        return QueueState(
            queue, visible, in_flight, oldest_age_seconds(sample, now or datetime.now(UTC))
        )

    def peek(self, queue: DeadLetterQueue, limit: int) -> list[SqsMessage]:
        """Up to ``limit`` messages, left in the queue (made visible again before returning)."""
        url = self.url(queue.name)
        seen: dict[str, SqsMessage] = {}
        try:
            while len(seen) < limit:
                got = self._receive(queue.name, url, min(MAX_BATCH, limit - len(seen)))
                fresh = [m for m in got if m.message_id not in seen]
                seen.update((m.message_id, m) for m in fresh)
                if not fresh:
                    break
        finally:
            Visibility(self._sqs, url, queue.name).release(list(seen.values()))
        return list(seen.values())

    def _receive(self, name: str, url: str, count: int) -> list[SqsMessage]:
        with _aws(f"ReceiveMessage {name}"):
            response = self._sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=count,
                VisibilityTimeout=self._hold,
                WaitTimeSeconds=1,  # a short poll may miss messages of a standard queue
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        return [SqsMessage.from_sqs(raw) for raw in response.get("Messages") or []]

    # -- redrive ------------------------------------------------------------------------
    def redrive(
        self,
        queue: DeadLetterQueue,
        *,
        max_messages: int | None = None,
        on_progress: Callable[[RedriveProgress], None] = lambda _: None,
        poll_seconds: float = _MOVE_TASK_POLL_SECONDS,
    ) -> RedriveProgress:
        """Send ``queue``'s messages (at most ``max_messages``) back to its source; see the
        module's docstring. Returns the final progress."""
        if max_messages is None:
            done = self._move_task(queue, on_progress, poll_seconds)
            if done is not None:
                return done
        return self._move_by_hand(queue, max_messages, on_progress)

    def _arn(self, name: str) -> str:
        return self._attributes(name, "QueueArn")["QueueArn"]

    def _move_task(
        self,
        queue: DeadLetterQueue,
        on_progress: Callable[[RedriveProgress], None],
        poll_seconds: float,
    ) -> RedriveProgress | None:
        """Redrive by ``StartMessageMoveTask``; None if the endpoint lacks the action."""
        source_arn, destination_arn = self._arn(queue.name), self._arn(queue.source)
        asked_ms = int(time.time() * 1000)
        try:
            started = self._sqs.start_message_move_task(
                SourceArn=source_arn, DestinationArn=destination_arn
            )
        except ClientError as exc:
            if lacks_action(exc):
                return None
            raise as_pulse_error(exc, f"StartMessageMoveTask {queue.name}") from exc
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"StartMessageMoveTask {queue.name}") from exc
        handle = str(started.get("TaskHandle", ""))
        while True:
            with _aws(f"ListMessageMoveTasks {queue.name}"):
                tasks = self._sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=10)
            task = our_move_task(tasks.get("Results") or [], handle, asked_ms)
            progress = move_task_progress(task) if task else RedriveProgress(0, None, "move-task")
            on_progress(progress)
            if progress.done:
                return progress
            time.sleep(poll_seconds)

    def _move_by_hand(
        self,
        queue: DeadLetterQueue,
        max_messages: int | None,
        on_progress: Callable[[RedriveProgress], None],
    ) -> RedriveProgress:
        """Receive → send → delete, ten at a time (see the module's docstring)."""
        url, source = self.url(queue.name), self.url(queue.source)
        started = datetime.now(UTC)
        expected, _ = self.counts(queue)
        if max_messages is not None:
            expected = min(expected, max_messages)
        moved = 0
        later: list[SqsMessage] = []  # dead-lettered since it started: held, not moved
        try:
            while max_messages is None or moved < max_messages:
                room = MAX_BATCH if max_messages is None else min(MAX_BATCH, max_messages - moved)
                batch = self._receive(queue.name, url, room)
                earlier = [m for m in batch if not _sent_after(m, started)]
                later += [m for m in batch if _sent_after(m, started)]
                if not earlier:
                    break
                moved += self._send_then_delete(queue, url, source, earlier)
                on_progress(RedriveProgress(moved, max(expected, moved), "receive-send-delete"))
        finally:
            Visibility(self._sqs, url, queue.name).release(later)
        final = RedriveProgress(moved, max(expected, moved), "receive-send-delete", done=True)
        on_progress(final)
        return final

    def _send_then_delete(
        self, queue: DeadLetterQueue, url: str, source: str, batch: list[SqsMessage]
    ) -> int:
        """Send ``batch`` to the source, then delete from the DLQ what was sent; returns how
        many were sent. Those SQS refused stay (they show again): :class:`PermanentError`.
        A delete SQS refuses (the hold ran out first) leaves its message to show again, sent
        once more by the next redrive: a duplicate, as after a kill."""
        by_id = {f"m{i}": message for i, message in enumerate(batch)}
        entries = [resend_entry(m, entry_id, fifo=queue.fifo) for entry_id, m in by_id.items()]
        with _aws(f"SendMessageBatch {queue.source}"):
            sent = self._sqs.send_message_batch(QueueUrl=source, Entries=entries)
        done = [by_id[ok["Id"]] for ok in sent.get("Successful") or []]
        if done:
            with _aws(f"DeleteMessageBatch {queue.name}"):
                self._sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                        for i, m in enumerate(done)
                    ],
                )
        if failed := sent.get("Failed"):
            first = failed[0]
            raise PermanentError(
                f"{queue.source} refused {len(failed)} message(s) "
                f"({first.get('Code')}: {first.get('Message')}); they stay in {queue.name}"
            )
        return len(done)

    # -- purge --------------------------------------------------------------------------
    def purge(self, queue: DeadLetterQueue) -> None:
        """Delete every message of ``queue`` (SQS allows one purge a minute per queue)."""
        url = self.url(queue.name)
        with _aws(f"PurgeQueue {queue.name}"):
            self._sqs.purge_queue(QueueUrl=url)

"""Queues in the health report (:mod:`pulse.health`): depth, messages in flight, oldest age.

Each queue reads as ``{"name", "role", "depth", "in_flight", "oldest_age_s"}``: ``depth`` is
``ApproximateNumberOfMessages`` (visible, waiting), ``in_flight``
``ApproximateNumberOfMessagesNotVisible`` (received and not deleted yet, or hidden until a
retry). SQS has no call that says how old a queue's oldest message is (CloudWatch's
``ApproximateAgeOfOldestMessage`` is a metric, not an SQS call), so ``oldest_age_s`` is
measured by whoever can, and means:

- a queue this process consumes (role ``queue``, :class:`ConsumerHealth`): the largest age
  (now - ``SentTimestamp``) of the messages the consumer received since the previous report,
  taken as each was received, and of those it still holds; 0 when the queue holds nothing
  (depth and in flight 0); null when it holds messages but this process received none and
  holds none (another replica's report has them, or nobody takes them);
- a dead-letter queue (role ``dlq``): while its depth is above 0, one ``ReceiveMessage`` of
  up to 10 messages with ``VisibilityTimeout=0`` — a peek: they stay visible and only their
  ``ApproximateReceiveCount`` changes — and the largest age among them; SQS does not say
  which messages a receive returns, so the oldest message is *at least* that old. A message
  SQS moved there by a redrive policy keeps the ``SentTimestamp`` of its first send to the
  source queue (standard queues); one a consumer dead-lettered carries the time it was
  dead-lettered. The count a dead-lettered message records is its ``receive_count``
  message attribute, not its ``ApproximateReceiveCount``;
- a queue with a redrive policy that nobody here consumes (the stream processor's failure
  queue, role ``failures``, :class:`UnconsumedQueueHealth`): never peeked, since every
  receive counts towards moving its messages to its own DLQ: 0 when empty, else null.

One ``GetQueueAttributes`` per queue and report, and a peek only for a dead-letter queue
that holds messages; all in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

from pulse.consumer.dead_letter import DeadLetters

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pulse.consumer.heartbeat import InFlight
    from pulse.health import Reading

__all__ = [
    "ConsumerHealth",
    "UnconsumedQueueHealth",
    "consumed_oldest_age",
    "queue_name_of",
    "sampled_oldest_age",
]

_PEEK_WAIT_SECONDS: Final = 1  # a short long poll: a short poll may miss the few there are
_COUNTS: Final = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


def queue_name_of(url: str) -> str:
    """A queue's name from its URL."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def consumed_oldest_age(depth: int, in_flight: int, ages: Iterable[float]) -> float | None:
    """``oldest_age_s`` of a queue this process consumes: 0 when it holds nothing, else the
    largest of ``ages`` (seconds: messages received in the interval, as received, and those
    still held, now), None without any. Pure."""
    if depth == 0 and in_flight == 0:
        return 0.0
    return max(ages, default=None)


def sampled_oldest_age(
    depth: int, in_flight: int, sent_at: Iterable[float], now: float
) -> float | None:
    """``oldest_age_s`` from a sample of a queue's messages (``sent_at``: their
    ``SentTimestamp`` in epoch seconds): 0 when the queue holds nothing, else the age of
    the oldest one sampled (never below 0: clocks disagree), None for an empty sample. Pure."""
    if depth == 0 and in_flight == 0:
        return 0.0
    oldest = min(sent_at, default=None)
    return None if oldest is None else max(now - oldest, 0.0)


def _reading(
    name: str, role: str, depth: int, in_flight: int, oldest: float | None
) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "depth": depth,
        "in_flight": in_flight,
        "oldest_age_s": None if oldest is None else round(oldest, 3),
    }


def _counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=_COUNTS)["Attributes"]
    return int(attributes.get(_COUNTS[0], 0)), int(attributes.get(_COUNTS[1], 0))


def _peek_sent_at(sqs: Any, url: str) -> list[float]:
    """The ``SentTimestamp`` (epoch seconds) of up to 10 messages, left visible."""
    response = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        WaitTimeSeconds=_PEEK_WAIT_SECONDS,
        AttributeNames=["SentTimestamp"],
    )
    sent = (
        (m.get("Attributes") or {}).get("SentTimestamp", "") for m in response.get("Messages") or []
    )
    return [int(ms) / 1000 for ms in sent if ms.isdigit()]


async def _with_dead_letters(sqs: Any, queue: dict[str, Any], dead_letters: DeadLetters) -> Reading:
    """The reading of ``queue`` and of its dead-letter queue, if it has one: that one's
    counts, and a peek for its oldest age while it holds messages."""
    queues = [queue]
    url = await dead_letters.url()
    if url is not None:
        depth, in_flight = await asyncio.to_thread(_counts, sqs, url)
        sent_at = await asyncio.to_thread(_peek_sent_at, sqs, url) if depth else []
        oldest = sampled_oldest_age(depth, in_flight, sent_at, time.time())
        queues.append(_reading(queue_name_of(url), "dlq", depth, in_flight, oldest))
    return {"queues": queues}


class ConsumerHealth:
    """The health probe of one :class:`~pulse.consumer.SqsConsumer`: its queue and that
    queue's dead-letter queue (module doc). The consumer calls :meth:`received` for each
    message it takes; ``held`` is its messages in flight."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        dead_letters: DeadLetters,
        held: Mapping[Any, InFlight],
    ) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._name = queue_name_of(queue_url)
        self._dead_letters = dead_letters
        self._held = held
        self._oldest_received: float | None = None  # seconds, since the previous report

    def received(self, age: float | None) -> None:
        """A message ``age`` seconds old (None: unknown) was received."""
        if age is not None and (self._oldest_received is None or age > self._oldest_received):
            self._oldest_received = age

    async def read(self, elapsed: float) -> Reading:  # noqa: ARG002 - a probe's signature
        now = time.time()
        ages = [] if self._oldest_received is None else [self._oldest_received]
        self._oldest_received = None
        ages += [a for s in self._held.values() if (a := s.message.age_seconds(now)) is not None]
        depth, in_flight = await asyncio.to_thread(_counts, self._sqs, self._url)
        oldest = consumed_oldest_age(depth, in_flight, ages)
        queue = _reading(self._name, "queue", depth, in_flight, oldest)
        return await _with_dead_letters(self._sqs, queue, self._dead_letters)


class UnconsumedQueueHealth:
    """The health probe of a queue this process sends to but does not consume (its
    ``role``), and of its dead-letter queue (module doc)."""

    def __init__(self, sqs: Any, queue_url: str, role: str) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._name = queue_name_of(queue_url)
        self._role = role
        self._dead_letters = DeadLetters(sqs, queue_url, self._name)

    async def read(self, elapsed: float) -> Reading:  # noqa: ARG002 - a probe's signature
        depth, in_flight = await asyncio.to_thread(_counts, self._sqs, self._url)
        oldest = 0.0 if depth == 0 and in_flight == 0 else None
        queue = _reading(self._name, self._role, depth, in_flight, oldest)
        return await _with_dead_letters(self._sqs, queue, self._dead_letters)

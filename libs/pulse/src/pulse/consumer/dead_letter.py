"""Dead-lettering: a message its handler refused for good, or that failed on the last receive
the queue's redrive policy allows, goes to the dead-letter queue.

The body travels unchanged, with the message attributes ``error`` (the reason),
``source_queue`` and ``receive_count``, and as many of the original String and Number
attributes as SQS's limit of 10 leaves room for. A FIFO dead-letter queue gets the message's
group id (so the group's order holds there too) and its message id as deduplication id.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Final

from pulse.aws_errors import AWS_ERRORS, as_pulse_error
from pulse.consumer.limits import MAX_MESSAGE_ATTRIBUTES
from pulse.errors import PermanentError

if TYPE_CHECKING:
    from pulse.consumer.message import SqsMessage

__all__ = ["DeadLetters", "dead_letter_attributes"]

_MAX_REASON_CHARS: Final = 1_000


def dead_letter_attributes(message: SqsMessage, reason: str, source_queue: str) -> dict[str, Any]:
    """The message attributes of ``message`` dead-lettered from ``source_queue``."""
    ours: dict[str, Any] = {
        "error": {"DataType": "String", "StringValue": reason[:_MAX_REASON_CHARS]},
        "source_queue": {"DataType": "String", "StringValue": source_queue},
        "receive_count": {"DataType": "Number", "StringValue": str(message.receive_count)},
    }
    kept = {
        name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
        for name, value in message.message_attributes.items()
        if name not in ours and isinstance(value, dict) and "StringValue" in value
    }
    room = MAX_MESSAGE_ATTRIBUTES - len(ours)
    return {**dict(list(kept.items())[:room]), **ours}


class DeadLetters:
    """The dead-letter queue of one queue: as given, else the target of its RedrivePolicy,
    and the policy's ``maxReceiveCount``."""

    def __init__(
        self, sqs_client: Any, queue_url: str, queue_name: str, dlq_url: str | None = None
    ) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._queue_name = queue_name
        self._url = dlq_url
        self._policy: dict[str, Any] | None = None  # the RedrivePolicy, once read

    async def _redrive_policy(self) -> dict[str, Any]:
        """The queue's RedrivePolicy (``{}`` without one), read once."""
        if self._policy is None:
            response = await asyncio.to_thread(
                self._sqs.get_queue_attributes,
                QueueUrl=self._queue_url,
                AttributeNames=["RedrivePolicy"],
            )
            policy = (response.get("Attributes") or {}).get("RedrivePolicy")
            self._policy = dict(json.loads(policy)) if policy else {}
        return self._policy

    async def url(self) -> str | None:
        """The dead-letter queue's URL; None if the queue has no redrive policy."""
        if self._url is None:
            arn = (await self._redrive_policy()).get("deadLetterTargetArn")
            if not arn:
                return None
            parts = str(arn).split(":")
            found = await asyncio.to_thread(
                self._sqs.get_queue_url, QueueName=parts[5], QueueOwnerAWSAccountId=parts[4]
            )
            self._url = str(found["QueueUrl"])
        return self._url

    async def max_receives(self) -> int | None:
        """The redrive policy's ``maxReceiveCount``: a message failing on that receive is
        dead-lettered by the consumer, with its error. None without a policy, or while it
        cannot be read (the next failure asks again)."""
        try:
            count = (await self._redrive_policy()).get("maxReceiveCount")
        except AWS_ERRORS:
            return None
        return int(count) if count is not None else None

    async def _require_url(self) -> str:
        dlq = await self.url()
        if dlq is None:
            raise PermanentError(f"queue {self._queue_name} has no dead-letter queue")
        return dlq

    async def send(self, message: SqsMessage, reason: str) -> None:
        """Send ``message`` to the dead-letter queue with ``reason`` (it is not deleted here).

        Raises :class:`PermanentError` when the queue has no dead-letter queue, and the
        failure of an AWS call as the Pulse error of its kind (:mod:`pulse.aws_errors`).
        """
        try:
            dlq = await self._require_url()
            fifo: dict[str, str] = {}
            if dlq.endswith(".fifo"):
                group = message.attributes.get("MessageGroupId") or "dead-letter"
                fifo = {"MessageGroupId": group, "MessageDeduplicationId": message.message_id}
            await asyncio.to_thread(
                self._sqs.send_message,
                QueueUrl=dlq,
                MessageBody=message.body.decode(),
                MessageAttributes=dead_letter_attributes(message, reason, self._queue_name),
                **fifo,
            )
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, f"dead-letter from {self._queue_name}") from exc

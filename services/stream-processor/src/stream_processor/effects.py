"""The effects of one batch of events: Redis channels, SNS, the audit trail.

Each is safe to repeat: SNS subscribers deduplicate on the event id, the channel append
script applies an event id once, and an audit row is keyed by the record's sequence number.
That is what lets a failed batch be retried from its checkpoint as a whole.

SNS ``PublishBatch`` and audit ``BatchWriteItem`` calls may accept part of a request (SNS
``Failed`` entries, DynamoDB ``UnprocessedItems``, mostly throttling): only the part left
is sent again, by a tenacity loop waiting with Pulse's one backoff
(:class:`pulse.backoff.FullJitter`: a draw from ``[0, min(cap, base * 2**n))`` after the
``n + 1``-th try — for SNS from 0.1 s up to 2 s, ``PULSE_SNS_MAX_ATTEMPTS`` tries; for the
audit rows from 0.05 s up to 1 s, five tries), so that many batches throttled at once do not
retry in step. What is still left after the last try fails the batch with a
:class:`~pulse.errors.RetryableError` (the shard reader retries it from its checkpoint).
A failed SNS call that :mod:`pulse.aws_errors` deems retryable counts as a try with every
entry left; any other AWS error fails the batch at once as its Pulse error.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final, TypeVar

from tenacity import (
    AsyncRetrying,
    BaseRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from pulse.aws_errors import AWS_ERRORS, AwsErrorKind, as_pulse_error, classify_aws_error
from pulse.backoff import FullJitter
from pulse.channels import ChannelAppend
from pulse.errors import RetryableError
from pulse.logging import get_logger
from stream_processor.records import (
    account_channel_of,
    audit_item,
    channels_for,
    event_from_record,
    record_time,
    sns_attributes,
)
from stream_processor.stats import counter_increments

if TYPE_CHECKING:
    from collections.abc import Callable

    from pulse.channels import ChannelPosition, ChannelPublisher
    from pulse.events import CloudEvent
    from stream_processor.stats import StatsKeys

__all__ = ["AuditTrail", "BatchEffects", "ProcessedEvent", "TopicPublisher", "publish_entries"]

SNS_BATCH_LIMIT: Final = 10
DDB_BATCH_LIMIT: Final = 25
SNS_MAX_RETRY_DELAY: Final = 2.0
AUDIT_MAX_RETRY_DELAY: Final = 1.0


def _log() -> Any:
    return get_logger("stream_processor.effects")


class _PartLeftError(Exception):
    """Part of a request was not accepted (the message says why); it is sent again."""


_Retrying = TypeVar("_Retrying", bound=BaseRetrying)


def _retry_part_left(kind: type[_Retrying], max_attempts: int, wait: FullJitter) -> _Retrying:
    """A fresh tenacity loop (one per request: loops keep state) that retries
    :class:`_PartLeftError` for up to ``max_attempts`` tries, waiting ``wait``, then
    re-raises it."""
    return kind(
        stop=stop_after_attempt(max_attempts),
        wait=wait,
        retry=retry_if_exception_type(_PartLeftError),
        reraise=True,
    )


@dataclass(frozen=True)
class ProcessedEvent:
    """An event with the stream position of the record it came from; once published live,
    with where it is in its channels (:meth:`BatchEffects.publish_live` fills
    ``channel_positions``, its audit row records the account channel's)."""

    event: CloudEvent
    sequence_number: str
    event_name: str
    created_epoch: float | None = None  # the record's ApproximateCreationDateTime
    channel_positions: dict[str, ChannelPosition] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> ProcessedEvent:
        """The event of a stream record, with its position; raises what
        :func:`~stream_processor.records.event_from_record` raises."""
        created = record_time(record)
        return cls(
            event_from_record(record),
            str(record.get("dynamodb", {}).get("SequenceNumber", "")),
            str(record.get("eventName")),
            created.timestamp() if created else None,
        )

    @cached_property
    def json(self) -> bytes:
        """``event.to_json()``, made once: the channels, SNS and the audit row all send it."""
        return self.event.to_json()


def publish_entries(
    events: list[CloudEvent], bodies: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """PublishBatch entries for at most ten events; ``Id`` is the position in the chunk.

    ``bodies``, if given, are the events' ``to_json()``, made once by the caller.
    """
    if len(events) > SNS_BATCH_LIMIT:
        raise ValueError(f"PublishBatch takes at most {SNS_BATCH_LIMIT} entries")
    jsons = bodies if bodies is not None else [event.to_json() for event in events]
    return [
        {
            "Id": f"e{index}",
            "Message": body.decode(),
            "MessageAttributes": sns_attributes(event),
        }
        for index, (event, body) in enumerate(zip(events, jsons, strict=True))
    ]


class TopicPublisher:
    """Publishes events to the topic in order, ten per call, retrying failed entries."""

    def __init__(
        self, sns: Any, topic_arn: str, *, max_attempts: int = 5, base_delay: float = 0.1
    ) -> None:
        self._sns = sns
        self.topic_arn = topic_arn
        self._max_attempts = max_attempts
        self._wait = FullJitter(base_delay, SNS_MAX_RETRY_DELAY)

    async def publish(self, events: list[CloudEvent], bodies: list[bytes] | None = None) -> None:
        """Publish every event; raises :class:`RetryableError` if some never got through.

        Chunks of ten go out concurrently: subscribers are standard SQS queues, which keep
        no order, and every consumer orders by the payment's state, not by arrival.
        ``bodies``: the events' ``to_json()``, if the caller made them already.
        """
        jsons = bodies if bodies is not None else [event.to_json() for event in events]
        await asyncio.gather(
            *(
                self._publish_chunk(
                    events[start : start + SNS_BATCH_LIMIT], jsons[start : start + SNS_BATCH_LIMIT]
                )
                for start in range(0, len(events), SNS_BATCH_LIMIT)
            )
        )

    async def _publish_chunk(self, events: list[CloudEvent], bodies: list[bytes]) -> None:
        pending = {entry["Id"]: entry for entry in publish_entries(events, bodies)}
        try:
            async for attempt in _retry_part_left(AsyncRetrying, self._max_attempts, self._wait):
                with attempt:
                    await self._publish_pending(pending, attempt.retry_state.attempt_number)
        except _PartLeftError as exc:
            raise RetryableError(
                f"SNS PublishBatch: {len(pending)} entries failed ({exc})"
            ) from exc

    async def _publish_pending(self, pending: dict[str, dict[str, Any]], attempt: int) -> None:
        """One PublishBatch of the ``pending`` entries, taking out those SNS accepted."""
        try:
            response = await asyncio.to_thread(
                self._sns.publish_batch,
                TopicArn=self.topic_arn,
                PublishBatchRequestEntries=list(pending.values()),
            )
        except AWS_ERRORS as exc:
            if classify_aws_error(exc) is AwsErrorKind.RETRYABLE:
                raise _PartLeftError(str(exc)) from exc
            raise as_pulse_error(exc, "SNS PublishBatch") from exc
        for ok in response.get("Successful", []):
            pending.pop(ok["Id"], None)
        if pending:
            _log().warning("sns entries failed", count=len(pending), attempt=attempt)
            failed = response.get("Failed", [])
            raise _PartLeftError(
                "; ".join(f"{f.get('Code')}: {f.get('Message', '')}" for f in failed)
            )


def _account_position(processed: ProcessedEvent) -> ChannelPosition | None:
    channel = account_channel_of(processed.event)
    return None if channel is None else processed.channel_positions.get(channel)


class AuditTrail:
    """Writes one events-table row per event (replays overwrite the same row).

    Rows go out in ``BatchWriteItem`` calls of up to 25; unprocessed items (throttling) are
    retried with backoff, and a batch that still has some left raises :class:`RetryableError`.
    """

    def __init__(
        self,
        ddb: Any,
        table_name: str,
        *,
        ttl_days: int,
        max_attempts: int = 5,
        base_delay: float = 0.05,
    ) -> None:
        self._ddb = ddb
        self._table = table_name
        self._ttl_seconds = ttl_days * 24 * 3600
        self._max_attempts = max_attempts
        self._wait = FullJitter(base_delay, AUDIT_MAX_RETRY_DELAY)

    async def record(self, processed: list[ProcessedEvent], *, now: float | None = None) -> None:
        expires_at = int((time.time() if now is None else now) + self._ttl_seconds)
        # One row per key: a batch may hold the same record twice only if it was replayed.
        rows = {
            p.sequence_number: audit_item(
                p.event,
                p.sequence_number,
                expires_at=expires_at,
                event_json=p.json,
                position=_account_position(p),
            )
            for p in processed
        }
        items = list(rows.values())
        chunks = [items[i : i + DDB_BATCH_LIMIT] for i in range(0, len(items), DDB_BATCH_LIMIT)]
        await asyncio.gather(*(asyncio.to_thread(self._write, chunk) for chunk in chunks))

    def _write(self, items: list[dict[str, Any]]) -> None:
        pending = [{"PutRequest": {"Item": item}} for item in items]
        try:
            for attempt in _retry_part_left(Retrying, self._max_attempts, self._wait):
                with attempt:
                    self._write_pending(pending)
        except _PartLeftError:
            raise RetryableError(
                f"audit BatchWriteItem: {len(pending)} rows unprocessed", delay=1.0
            ) from None

    def _write_pending(self, pending: list[dict[str, Any]]) -> None:
        """One BatchWriteItem of the ``pending`` requests; ``pending`` keeps the unprocessed."""
        try:
            response = self._ddb.batch_write_item(RequestItems={self._table: pending})
        except AWS_ERRORS as exc:
            raise as_pulse_error(exc, "audit BatchWriteItem", delay=1.0) from exc
        pending[:] = response.get("UnprocessedItems", {}).get(self._table, [])
        if pending:
            raise _PartLeftError(f"{len(pending)} rows unprocessed")


class BatchEffects:
    """Applies the effects of a batch: Redis channels and counters, then SNS and audit rows.

    The two halves are separate so the shard reader can publish the next batch live while
    this one's SNS and audit writes are still running (see ``shard_reader``).

    With ``stats`` keys, each event's counter increments go with its channel append (under
    a guard of their own: applied exactly once); ``on_counted`` is called after a batch
    that changed them (the throttled stats publisher listens).
    """

    def __init__(
        self,
        topic: TopicPublisher,
        channels: ChannelPublisher,
        audit: AuditTrail,
        *,
        stats: StatsKeys | None = None,
        on_counted: Callable[[], None] | None = None,
    ) -> None:
        self._topic = topic
        self._channels = channels
        self._audit = audit
        self._stats = stats
        self._on_counted = on_counted

    async def apply(self, processed: list[ProcessedEvent]) -> None:
        """Apply all effects; any exception means the batch must be retried as a whole.

        The hot path goes first (:meth:`publish_live`), then the rest (:meth:`propagate`).
        The order between effects does not matter for correctness: each is idempotent, and
        the checkpoint moves only after all of them succeeded.
        """
        await self.publish_live(processed)
        await self.propagate(processed)

    async def publish_live(self, processed: list[ProcessedEvent]) -> None:
        """Redis channels and counters: what browsers see, so it never waits for SNS.

        One item's events stay in stream order: the batch's appends go out as one pipeline
        per Redis node, which runs them in order (each channel lives on one node), and the
        shard reader starts a batch's appends only after the previous batch's finished.
        """
        if not processed:
            return
        stats = self._stats
        appends = [
            ChannelAppend(
                p.event,
                channels_for(p.event),
                counters=counter_increments(p.event, stats) if stats else None,
                event_json=p.json,
            )
            for p in processed
        ]
        results = await self._channels.append_many(appends)
        for p, result in zip(processed, results, strict=True):
            p.channel_positions.update(result.positions)
        counted = any(result.counted for result in results)
        if counted and self._on_counted is not None:
            self._on_counted()

    async def propagate(self, processed: list[ProcessedEvent]) -> None:
        """SNS and the audit rows, concurrently (subscribers are standard queues: no order)."""
        if not processed:
            return
        await asyncio.gather(
            self._topic.publish([p.event for p in processed], [p.json for p in processed]),
            self._audit.record(processed),
        )

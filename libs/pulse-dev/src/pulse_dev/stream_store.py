"""A DynamoDB stream with several shards, as DynamoDB Streams keeps one. No I/O, no moto.

The emulator (:mod:`pulse_dev.stream_emulation`) feeds each table write into a
:class:`ShardedStream` and answers the Streams API from it. What it keeps, as DynamoDB does:

- **Shards by partition key.** Every shard owns a range of the 128-bit MD5 hash space of the
  table's partition key; a record goes to the open shard whose range holds its key's hash, so
  one item's records are in one shard at a time, in write order. A stream starts with
  ``StreamShape.shards`` open shards of equal ranges.
- **Splits.** :meth:`ShardedStream.split` closes an open shard (``EndingSequenceNumber`` set)
  and opens two children (``ParentShardId`` set), each owning half its range, or one child
  with the whole range (DynamoDB's periodic roll-over). :meth:`ShardedStream.split_if_due`
  splits the widest open shard every ``StreamShape.split_seconds``.
- **Sequence numbers** grow across the whole stream, so a child's records come after its
  parent's.
- **Iterators** are self-contained tokens (shard, position, time issued) that expire after
  ``StreamShape.iterator_seconds`` (``ExpiredIteratorException``). ``GetRecords`` on a closed
  shard read to its end answers without ``NextShardIterator``.
- **Retention.** Records older than ``StreamShape.retention_seconds`` are trimmed; reading
  before the oldest kept record is ``TrimmedDataAccessException``. A shard closed for longer
  than the retention is no longer listed.

Errors are :class:`StreamError`, each with its AWS error code. Thread-safe: every method
runs under the stream's lock.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "HASH_SPACE",
    "ITERATOR_TYPES",
    "ExpiredIteratorError",
    "ResourceNotFoundError",
    "ShardedStream",
    "StreamError",
    "StreamShape",
    "StreamShard",
    "TrimmedDataAccessError",
    "ValidationError",
    "partition_hash",
]

HASH_SPACE: Final = 1 << 128
ITERATOR_TYPES: Final = frozenset(
    {"TRIM_HORIZON", "LATEST", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"}
)
# moto's first sequence number, so a one-shard stream numbers its records as moto did.
FIRST_SEQUENCE_NUMBER: Final = 1100000000017454423009
DESCRIBE_LIMIT: Final = 100  # DescribeStream's default and largest page
RECORDS_LIMIT: Final = 1000  # GetRecords' largest batch


class StreamError(Exception):
    """A Streams API error; ``code`` is the AWS error code the client sees."""

    code = "InternalServerError"


class ValidationError(StreamError):
    code = "ValidationException"


class ResourceNotFoundError(StreamError):
    code = "ResourceNotFoundException"


class ExpiredIteratorError(StreamError):
    code = "ExpiredIteratorException"


class TrimmedDataAccessError(StreamError):
    code = "TrimmedDataAccessException"


@dataclass(frozen=True)
class StreamShape:
    """How the emulator's streams behave; the defaults are one shard that never splits and
    DynamoDB's own lifetimes (15-minute iterators, 24-hour retention)."""

    shards: int = 1
    split_seconds: float = 0.0  # 0: shards split only when asked
    iterator_seconds: float = 900.0
    retention_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("a stream has at least one shard")
        if self.split_seconds < 0:
            raise ValueError("the split interval is 0 (never) or positive")
        if self.iterator_seconds <= 0 or self.retention_seconds <= 0:
            raise ValueError("iterator lifetime and retention are positive")


def partition_hash(key: Mapping[str, Any]) -> int:
    """Where a partition key value (attribute-value form, ``{"S": "p-1"}``) falls in the
    128-bit hash space."""
    encoded = json.dumps(key, sort_keys=True, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.md5(encoded, usedforsecurity=False).digest(), "big")


@dataclass(eq=False)
class StreamShard:
    """One shard: its hash range ``[low, high)``, its records and their write times."""

    shard_id: str
    low: int
    high: int
    starting: int
    parent_id: str | None = None
    ending: int | None = None
    closed_at: float | None = None
    trimmed_below: int = 0  # records below this sequence number are gone
    sequence_numbers: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    written_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.trimmed_below = max(self.trimmed_below, self.starting)

    @property
    def closed(self) -> bool:
        return self.ending is not None

    def describe(self) -> dict[str, Any]:
        numbers = {"StartingSequenceNumber": str(self.starting)}
        if self.ending is not None:
            numbers["EndingSequenceNumber"] = str(self.ending)
        described: dict[str, Any] = {"ShardId": self.shard_id, "SequenceNumberRange": numbers}
        if self.parent_id is not None:
            described["ParentShardId"] = self.parent_id
        return described

    def trim(self, cutoff: float) -> None:
        """Drop the records written before ``cutoff``."""
        count = bisect.bisect_left(self.written_at, cutoff)
        if count:
            self.trimmed_below = self.sequence_numbers[count - 1] + 1
            del self.sequence_numbers[:count], self.records[:count], self.written_at[:count]


@dataclass(frozen=True)
class _Position:
    """What an iterator token says: read ``shard_id`` from ``sequence_number`` on."""

    shard_id: str
    sequence_number: int
    issued_at: float


class ShardedStream:
    """The shards of one table's stream (see the module docstring)."""

    def __init__(
        self,
        arn: str,
        shape: StreamShape,
        *,
        clock: Callable[[], float] = time.time,
        first_sequence_number: int = FIRST_SEQUENCE_NUMBER,
    ) -> None:
        self.arn = arn
        self.shape = shape
        self._clock = clock
        self._lock = threading.Lock()
        self._next_sequence_number = first_sequence_number
        self._last_id_ms = 0
        self._shards: list[StreamShard] = []  # in creation order, which is shard id order
        self._by_id: dict[str, StreamShard] = {}
        self._open: list[StreamShard] = []  # sorted by hash range
        self.created_at = clock()
        self._last_split = self.created_at
        width = HASH_SPACE // shape.shards
        for index in range(shape.shards):
            high = HASH_SPACE if index == shape.shards - 1 else (index + 1) * width
            self._open_shard(index * width, high, None)

    # -- writes -------------------------------------------------------------------------
    def append(self, key_hash: int, make_record: Callable[[int], dict[str, Any]]) -> int:
        """Add the record ``make_record(sequence_number)`` to the open shard that owns
        ``key_hash``; its sequence number."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            at = bisect.bisect_right([s.low for s in self._open], key_hash) - 1
            shard = self._open[at]
            number = self._take_sequence_number()
            shard.records.append(make_record(number))
            shard.sequence_numbers.append(number)
            shard.written_at.append(max(now, shard.written_at[-1]) if shard.written_at else now)
            return number

    def split(self, shard_id: str | None = None, *, children: int = 2) -> list[StreamShard]:
        """Close ``shard_id`` (the widest open shard when None) and open its ``children``
        (1 or 2); the children. :class:`ResourceNotFoundError` for a shard not open."""
        if children not in {1, 2}:
            raise ValidationError("a shard splits into one or two children")
        with self._lock:
            self._trim(self._clock())
            parent = self._pick(shard_id)
            return self._split(parent, children)

    def split_if_due(self) -> list[StreamShard]:
        """Split the widest open shard if ``split_seconds`` passed since the last split (or
        the stream's creation); the new shards, if any."""
        if not self.shape.split_seconds:
            return []
        with self._lock:
            now = self._clock()
            if now - self._last_split < self.shape.split_seconds:
                return []
            self._trim(now)
            return self._split(self._pick(None), 2)

    # -- reads --------------------------------------------------------------------------
    def describe(
        self, limit: int | None = None, exclusive_start_shard_id: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One DescribeStream page of shards, and the ``LastEvaluatedShardId`` if more
        follow."""
        limit = DESCRIBE_LIMIT if limit is None else limit
        if not 1 <= limit <= DESCRIBE_LIMIT:
            raise ValidationError(f"Limit must be between 1 and {DESCRIBE_LIMIT}")
        with self._lock:
            self._trim(self._clock())
            ids = [s.shard_id for s in self._shards]
            start = 0
            if exclusive_start_shard_id is not None:
                start = bisect.bisect_right(ids, exclusive_start_shard_id)
            page = self._shards[start : start + limit]
            more = start + limit < len(self._shards)
            return [s.describe() for s in page], (page[-1].shard_id if more else None)

    def shards(self) -> list[StreamShard]:
        """Every listed shard, in creation order."""
        with self._lock:
            self._trim(self._clock())
            return list(self._shards)

    def iterator(
        self, shard_id: str, iterator_type: str, sequence_number: str | None = None
    ) -> str:
        """A GetShardIterator answer: a token for reading ``shard_id`` from the position the
        type and ``sequence_number`` say."""
        if iterator_type not in ITERATOR_TYPES:
            raise ValidationError(f"ShardIteratorType must be one of {sorted(ITERATOR_TYPES)}")
        with self._lock:
            now = self._clock()
            self._trim(now)
            shard = self._shard(shard_id)
            if iterator_type == "TRIM_HORIZON":
                position = shard.trimmed_below
            elif iterator_type == "LATEST":
                position = self._end_of(shard)
            else:
                number = self._sequence_number_in(shard, sequence_number)
                position = number + (iterator_type == "AFTER_SEQUENCE_NUMBER")
                if position < shard.trimmed_below:
                    raise TrimmedDataAccessError(
                        f"SequenceNumber {sequence_number} is beyond the trim horizon"
                    )
            return self._token(_Position(shard.shard_id, position, now))

    def records(self, token: str, limit: int | None = None) -> dict[str, Any]:
        """A GetRecords answer: up to ``limit`` records at the iterator ``token``, and the
        ``NextShardIterator`` unless the shard is closed and read to its end."""
        limit = RECORDS_LIMIT if limit is None else limit
        if not 1 <= limit <= RECORDS_LIMIT:
            raise ValidationError(f"Limit must be between 1 and {RECORDS_LIMIT}")
        position = self._position(token)
        with self._lock:
            now = self._clock()
            if now - position.issued_at > self.shape.iterator_seconds:
                raise ExpiredIteratorError(
                    f"Iterator expired: issued more than {self.shape.iterator_seconds:g} s ago"
                )
            self._trim(now)
            shard = self._shard(position.shard_id)
            if position.sequence_number < shard.trimmed_below:
                raise TrimmedDataAccessError(
                    "Attempted to access data older than the trim horizon of the shard"
                )
            start = bisect.bisect_left(shard.sequence_numbers, position.sequence_number)
            batch = shard.records[start : start + limit]
            answer: dict[str, Any] = {"Records": batch}
            end = start + len(batch)
            if shard.closed and end >= len(shard.records):
                return answer  # closed and read to its end
            following = shard.sequence_numbers[end - 1] + 1 if batch else position.sequence_number
            answer["NextShardIterator"] = self._token(_Position(shard.shard_id, following, now))
            return answer

    # -- under the lock -----------------------------------------------------------------
    def _take_sequence_number(self) -> int:
        number = self._next_sequence_number
        self._next_sequence_number += 1
        return number

    def _open_shard(self, low: int, high: int, parent_id: str | None) -> StreamShard:
        # DynamoDB's form: creation time in ms (kept strictly increasing, so ids sort in
        # creation order), then eight hex digits.
        ms = max(int(self._clock() * 1000), self._last_id_ms + 1)
        self._last_id_ms = ms
        shard_id = f"shardId-{ms:020d}-{secrets.token_hex(4)}"
        shard = StreamShard(shard_id, low, high, self._next_sequence_number, parent_id)
        self._shards.append(shard)
        self._by_id[shard_id] = shard
        bisect.insort(self._open, shard, key=lambda s: s.low)
        return shard

    def _pick(self, shard_id: str | None) -> StreamShard:
        if shard_id is None:
            # The widest open shard; of equal ones the oldest.
            return max(self._open, key=lambda s: (s.high - s.low, -s.starting))
        shard = self._by_id.get(shard_id)
        if shard is None or shard.closed:
            raise ResourceNotFoundError(f"no open shard {shard_id}")
        return shard

    def _split(self, parent: StreamShard, children: int) -> list[StreamShard]:
        now = self._clock()
        parent.ending = self._take_sequence_number()
        parent.closed_at = now
        self._open.remove(parent)
        self._last_split = now
        if children == 1:
            return [self._open_shard(parent.low, parent.high, parent.shard_id)]
        middle = parent.low + (parent.high - parent.low) // 2
        return [
            self._open_shard(parent.low, middle, parent.shard_id),
            self._open_shard(middle, parent.high, parent.shard_id),
        ]

    def _trim(self, now: float) -> None:
        cutoff = now - self.shape.retention_seconds
        kept = []
        for shard in self._shards:
            if shard.closed_at is not None and shard.closed_at < cutoff:
                del self._by_id[shard.shard_id]
                continue
            shard.trim(cutoff)
            kept.append(shard)
        if len(kept) != len(self._shards):
            self._shards = kept

    def _shard(self, shard_id: str) -> StreamShard:
        shard = self._by_id.get(shard_id)
        if shard is None:
            raise ResourceNotFoundError(
                f"Requested resource not found: Shard does not exist ({shard_id})"
            )
        return shard

    def _end_of(self, shard: StreamShard) -> int:
        """The position after every record the shard holds or will hold so far."""
        if shard.ending is not None:
            return shard.ending + 1
        return self._next_sequence_number

    def _sequence_number_in(self, shard: StreamShard, raw: str | None) -> int:
        if raw is None or not raw.isdigit():
            raise ValidationError("SequenceNumber is required for this ShardIteratorType")
        number = int(raw)
        if number < shard.starting or number >= self._end_of(shard):
            raise ValidationError(f"Invalid SequenceNumber {raw} for shard {shard.shard_id}")
        return number

    # -- tokens -------------------------------------------------------------------------
    def _token(self, position: _Position) -> str:
        payload = f"{position.shard_id}|{position.sequence_number}|{position.issued_at!r}"
        encoded = base64.urlsafe_b64encode(payload.encode()).decode()
        return f"{self.arn}|1|{encoded}"

    def _position(self, token: str) -> _Position:
        arn, _, encoded = token.rpartition("|1|")
        if arn != self.arn:
            raise ResourceNotFoundError("the iterator is of another stream")
        try:
            shard_id, number, issued = base64.urlsafe_b64decode(encoded).decode().split("|")
            return _Position(shard_id, int(number), float(issued))
        except ValueError as exc:
            raise ValidationError("Invalid ShardIterator") from exc

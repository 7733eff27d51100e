"""Recovery from the durable record: an account channel's events that Redis no longer holds
(trimmed, expired, or lost with Redis), read from the audit table and replayed in channel
order before the rest comes from Redis.

Each audit row of a payment event (and the notify worker's row of each notification it
appends) carries where the event is in its account channel
(:mod:`pulse.audit_positions`): its offset, its epoch and its number in that epoch's stream
(1 for an epoch's first entry). Offsets grow across epochs (a new stream's entry ids are
newer than any of an earlier one), so one query of the index
:data:`~pulse.topology.AUDIT_OFFSET_INDEX` reads an account's events after a client's offset
in the order the client would have had them live. :func:`plan_replay` then decides whether
those rows, joined to the Redis history, are *every* event after the offset:

- in the current epoch — the one Redis holds — every entry Redis no longer holds must have
  its row, numbered one after another up to the oldest entry Redis holds (from the
  client's own last event, whose row says where it was, or from 1 when the client's offset
  is of an earlier epoch); a hole is an event with no row (still being written, or
  appended by an older release) and recovery is refused (``recovered:false``) rather than
  skip it;
- an earlier epoch has ended: Redis lost what said where it ended, and an event of it
  without a row is one whose writer failed before writing it — the stream processor's
  batch or the notify worker's message is then done again, and with the guards gone (they
  go with the epoch) appended again to a later epoch, which the client is sent whole. So
  its rows after the client's offset are sent as they are, once the current epoch is
  ``settle`` old (a row is written right after its append; ``ended_by`` can say that
  earlier epochs ended sooner).

More rows than the per-request limit (``PULSE_DURABLE_RECOVERY_LIMIT``) are not read:
``recovered:false``. Only ``account:`` channels: the ``payments`` feed would need an index
keyed by one value for every payment, a single hot partition.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from pulse.audit_positions import ACCOUNT_EPOCH, ACCOUNT_NUMBER, ACCOUNT_OFFSET, sortable_offset
from pulse.channels import epoch_started_ms
from pulse.topology import AUDIT_OFFSET_INDEX
from ws_gateway.metrics import DURABLE_READ_DURATION
from ws_gateway.offsets import ZERO, StreamId
from ws_gateway.protocol import event_frame

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ws_gateway.history import HistorySnapshot

__all__ = ["DurableRecord", "DurableReplay", "DurableRow", "Unsettled", "plan_replay"]

ACCOUNT_PREFIX: Final = "account:"
_AFTER_EVERY_OFFSET: Final = "9" * 41


class DurableRow(NamedTuple):
    """One audit row: where its event is in the account channel, and the event's JSON."""

    offset: StreamId
    epoch: str
    number: int
    event: str


@dataclass(frozen=True)
class DurableReplay:
    """What recovery sends: these rows' events, then Redis's entries after ``resume``."""

    rows: list[DurableRow]
    resume: StreamId

    def frames(self, channel: str) -> list[str]:
        return [event_frame(channel, str(row.offset), row.event) for row in self.rows]


@dataclass(frozen=True)
class Unsettled:
    """The rows would do, but an earlier epoch's end is too recent to count on: ask again
    after ``wait_seconds``."""

    wait_seconds: float


def plan_replay(
    rows: Sequence[DurableRow],
    since: StreamId,
    snapshot: HistorySnapshot,
    *,
    since_epoch: str | None,
    now: float,
    settle_seconds: float,
    ended_by: float | None = None,
) -> DurableReplay | Unsettled | None:
    """The replay that recovers every event after ``since`` (of ``since_epoch``, if the
    client said) from ``rows`` (an account's rows from ``since`` on, in offset order) and
    the channel's Redis history as ``snapshot`` saw it; None when they cannot (module doc).
    ``ended_by``: a time by which the epochs before the current one are known to have ended
    (the gateway's gap fill: when Redis came back), if earlier than the current epoch's
    start. Pure."""
    own = rows[0] if rows and rows[0].offset == since else None
    epoch = own.epoch if own is not None else since_epoch
    if epoch is None:
        return None
    if epoch == snapshot.epoch:
        # Within the live epoch every row must be there: a hole is an event lost for good.
        if own is None:
            return None
        run = _numbered_run(rows[1:], snapshot, after=own.number)
        return None if run is None else DurableReplay(run, run[-1].offset if run else since)
    # ``since`` is of an ended epoch: whatever it appended after ``since`` either has its row
    # or, its row never written, was appended again to a later epoch (module doc).
    ended = [row for row in rows if row.offset > since and row.epoch != snapshot.epoch]
    current = [row for row in rows if row.epoch == snapshot.epoch]
    run = _numbered_run(current, snapshot, after=0)
    start = _started(snapshot.epoch)
    if ended_by is not None:
        start = ended_by if start is None else min(start, ended_by)
    if run is None or start is None:
        return None  # or the current epoch is of an older release: its age is unknown
    if now < start + settle_seconds:
        return Unsettled(start + settle_seconds - now)
    return DurableReplay(ended + run, run[-1].offset if run else ZERO)


def _numbered_run(
    rows: Sequence[DurableRow], snapshot: HistorySnapshot, *, after: int
) -> list[DurableRow] | None:
    """The current epoch's rows numbered ``after`` + 1 up to the oldest entry Redis holds,
    every one of them; None if one is missing."""
    run = [r for r in rows if r.epoch == snapshot.epoch and r.number < snapshot.first_number]
    if [r.number for r in run] != list(range(after + 1, snapshot.first_number)):
        return None
    return run


def _started(epoch: str) -> float | None:
    ms = epoch_started_ms(epoch)
    return None if ms is None else ms / 1000


def _row(item: dict[str, Any]) -> DurableRow | None:
    try:
        ms, _, seq = item[ACCOUNT_OFFSET]["S"].partition("-")
        return DurableRow(
            StreamId(int(ms), int(seq)),
            item[ACCOUNT_EPOCH]["S"],
            int(item[ACCOUNT_NUMBER]["N"]),
            item["event"]["S"],
        )
    except (KeyError, ValueError):
        return None


class DurableRecord:
    """Reads an account's audit rows in channel order and plans their replay.

    ``ddb`` is a boto3 DynamoDB client (its calls run in a thread); ``limit`` bounds the
    rows one request reads; ``settle_seconds`` is how old the epoch after an earlier one
    must be before that one's rows are counted on (module doc).
    """

    def __init__(self, ddb: Any, table: str, *, limit: int, settle_seconds: float) -> None:
        self._ddb = ddb
        self._table = table
        self._limit = limit
        self._settle = settle_seconds

    @staticmethod
    def covers(channel: str) -> bool:
        return channel.startswith(ACCOUNT_PREFIX)

    async def replay(
        self,
        channel: str,
        since: StreamId,
        snapshot: HistorySnapshot,
        *,
        since_epoch: str | None = None,
        ended_by: float | None = None,
    ) -> DurableReplay | None:
        """The replay recovering every event of ``channel`` after ``since`` that ``snapshot``
        no longer holds, or None (too many, or not every one is in the durable record).
        Waits, at most once, for an earlier epoch's rows to settle (``ended_by``: as
        :func:`plan_replay` takes it)."""
        if not self.covers(channel) or since == ZERO or self._limit <= 0:
            return None
        for attempt in range(2):
            with DURABLE_READ_DURATION.time():
                rows = await asyncio.to_thread(
                    self._rows, channel[len(ACCOUNT_PREFIX) :], since, snapshot
                )
            if rows is None:
                return None
            plan = plan_replay(
                rows,
                since,
                snapshot,
                since_epoch=since_epoch,
                now=time.time(),
                settle_seconds=self._settle,
                ended_by=ended_by,
            )
            if not isinstance(plan, Unsettled):
                return plan
            if attempt == 0:
                await asyncio.sleep(plan.wait_seconds)
        return None

    def _rows(
        self, account: str, since: StreamId, snapshot: HistorySnapshot
    ) -> list[DurableRow] | None:
        """The account's rows from ``since`` up to the first entry Redis holds; None if
        there are more than the limit (plus the row of ``since`` and that entry's)."""
        upto = (
            _AFTER_EVERY_OFFSET if snapshot.first is None else sortable_offset(str(snapshot.first))
        )
        most = self._limit + 2
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": AUDIT_OFFSET_INDEX,
            "KeyConditionExpression": "account_id = :a AND #o BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#o": ACCOUNT_OFFSET},
            "ExpressionAttributeValues": {
                ":a": {"S": account},
                ":lo": {"S": sortable_offset(str(since))},
                ":hi": {"S": upto},
            },
            "Limit": most + 1,
        }
        rows: list[DurableRow] = []
        while True:
            page = self._ddb.query(**kwargs)
            rows += [row for item in page.get("Items", []) if (row := _row(item)) is not None]
            if len(rows) > most:
                return None
            start = page.get("LastEvaluatedKey")
            if not start:
                return rows
            kwargs["ExclusiveStartKey"] = start

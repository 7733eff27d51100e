"""Recovery from the durable record: an account channel's events that Redis no longer holds
(trimmed, expired, or lost with Redis), read from the audit table and replayed in channel
order before the rest comes from Redis.

Each audit row of a payment event carries where the event is in its account channel
(:mod:`pulse.audit_positions`): its offset, its epoch and its number in that epoch's stream
(1 for an epoch's first entry). Offsets grow across epochs (a new stream's entry ids are
newer than any of an earlier one), so one query of the index
:data:`~pulse.topology.AUDIT_OFFSET_INDEX` reads an account's events after a client's offset
in the order the client would have had them live. :func:`plan_replay` then decides whether
those rows, joined to the Redis history, are *every* event after the offset:

- the client's own last event must be among the rows (its number says where it was);
- within an epoch, numbers follow one another: a hole is an event with no audit row — a
  ``pulse.notification`` or another kind only Redis held — and recovery is refused
  (``recovered:false``) rather than skip it;
- a new epoch's rows start at number 1; the end of an earlier epoch cannot be counted
  (Redis lost what would say where it ended), so its rows are trusted only once the next
  epoch is ``settle`` old: an audit row is written right after its append, and a batch
  whose rows fail is appended again (to the new epoch) before its rows are written;
- the rows must reach the entry Redis still holds next (by number, in the current epoch),
  or the end of an earlier epoch when the current one is still whole in Redis.

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
    now: float,
    settle_seconds: float,
    ended_by: float | None = None,
) -> DurableReplay | Unsettled | None:
    """The replay that recovers every event after ``since`` from ``rows`` (an account's rows
    from ``since`` on, in offset order) and the channel's Redis history as ``snapshot``
    saw it; None when they cannot (module doc). ``ended_by``: a time by which the epochs
    before the current one are known to have ended (the gateway's gap fill: when Redis came
    back), if earlier than the next epoch's start. Pure."""
    if not rows or rows[0].offset != since:
        return None
    run = _unbroken_run(rows, snapshot)
    if run is None:
        return None
    replay, began = run
    resume = _resume(replay[-1] if replay else rows[0], snapshot, began)
    starts = [_started(epoch) for epoch in began]
    if ended_by is not None:
        starts = [ended_by if start is None else min(start, ended_by) for start in starts]
    if resume is None or None in starts:
        return None  # or an epoch of an older release: when it began is unknown
    settled_at = max((start + settle_seconds for start in starts if start is not None), default=0)
    if now < settled_at:
        return Unsettled(settled_at - now)
    return DurableReplay(replay, resume)


def _resume(previous: DurableRow, snapshot: HistorySnapshot, began: list[str]) -> StreamId | None:
    """Where Redis takes over after the last row ``previous``, or None if Redis no longer
    holds what comes next. Adds the current epoch to ``began`` if it follows the rows'."""
    if previous.epoch == snapshot.epoch:
        # Redis must still hold the entry after the last row.
        return previous.offset if snapshot.first_number <= previous.number + 1 else None
    if snapshot.first_number != 1:
        return None
    # The current epoch is read from Redis from its start, which Redis still holds.
    began.append(snapshot.epoch)
    return ZERO


def _unbroken_run(
    rows: Sequence[DurableRow], snapshot: HistorySnapshot
) -> tuple[list[DurableRow], list[str]] | None:
    """The rows after ``rows[0]`` that Redis no longer holds, if they follow one another
    (numbers in sequence within an epoch, a new epoch from 1), and the epochs that began
    after an earlier one among them; None at a hole."""
    previous = rows[0]
    replay: list[DurableRow] = []
    began: list[str] = []
    for row in rows[1:]:
        if row.epoch == snapshot.epoch and row.number >= snapshot.first_number:
            break  # Redis holds it
        if row.epoch != previous.epoch:
            if row.number != 1:
                return None
            began.append(row.epoch)
        elif row.number != previous.number + 1:
            return None
        replay.append(row)
        previous = row
    return replay, began


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

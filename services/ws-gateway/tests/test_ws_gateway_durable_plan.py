"""The durable replay's rules (:func:`ws_gateway.durable.plan_replay`): pure, no I/O."""

from __future__ import annotations

from pulse.channels import new_epoch
from ws_gateway.durable import DurableReplay, DurableRow, Unsettled, plan_replay
from ws_gateway.history import HistorySnapshot
from ws_gateway.offsets import ZERO, StreamId

T0 = 1_733_000_000.0
OLD = new_epoch(now=T0)
NEW = new_epoch(now=T0 + 60)
SETTLE = 5.0


def rows(epoch: str, numbers: range, ms: int = 1000) -> list[DurableRow]:
    return [DurableRow(StreamId(ms + n, 0), epoch, n, f'{{"n":{n}}}') for n in numbers]


def held(epoch: str, first_number: int, first: StreamId | None) -> HistorySnapshot:
    """Redis's stream of ``epoch``, its oldest entry ``first`` numbered ``first_number``."""
    return HistorySnapshot(
        first=first,
        last=first,
        last_generated=first,
        trimmed=True,
        epoch=epoch,
        first_number=first_number,
    )


def plan(
    found: list[DurableRow],
    since: StreamId,
    snapshot: HistorySnapshot,
    *,
    since_epoch: str | None = None,
    now: float = T0 + 120,
    ended_by: float | None = None,
) -> DurableReplay | Unsettled | None:
    return plan_replay(
        found,
        since,
        snapshot,
        since_epoch=since_epoch,
        now=now,
        settle_seconds=SETTLE,
        ended_by=ended_by,
    )


def numbers(replay: DurableReplay | Unsettled | None) -> list[tuple[str, int]]:
    assert isinstance(replay, DurableReplay)
    return [(row.epoch, row.number) for row in replay.rows]


def test_a_trimmed_history_is_replayed_up_to_what_redis_holds() -> None:
    found = rows(OLD, range(3, 11))  # the client saw 3; Redis holds 9 on
    replay = plan(found, StreamId(1003, 0), held(OLD, 9, StreamId(1009, 0)))
    assert numbers(replay) == [(OLD, n) for n in range(4, 9)]
    assert isinstance(replay, DurableReplay)
    assert replay.resume == StreamId(1008, 0)


def test_in_the_live_epoch_a_hole_or_an_unknown_offset_is_not_recovered() -> None:
    snapshot = held(OLD, 9, StreamId(1009, 0))
    with_hole = [r for r in rows(OLD, range(3, 11)) if r.number != 6]  # a row not written yet
    assert plan(with_hole, StreamId(1003, 0), snapshot) is None
    no_own_row = rows(OLD, range(4, 11))
    assert plan(no_own_row, StreamId(1003, 0), snapshot, since_epoch=OLD) is None
    short = rows(OLD, range(3, 7))  # rows 7 and 8 not written yet
    assert plan(short, StreamId(1003, 0), snapshot) is None
    assert plan(rows(OLD, range(4, 11)), StreamId(1003, 0), snapshot) is None  # epoch unknown


def test_an_ended_epoch_is_replayed_then_the_new_one_from_its_start_once_settled() -> None:
    found = rows(OLD, range(3, 6)) + rows(NEW, range(1, 3), ms=5000)
    new_whole = held(NEW, 1, StreamId(5001, 0))  # the new epoch is whole in Redis
    replay = plan(found, StreamId(1003, 0), new_whole)
    assert numbers(replay) == [(OLD, 4), (OLD, 5)]
    assert isinstance(replay, DurableReplay)
    assert replay.resume == ZERO
    assert plan(found, StreamId(1003, 0), new_whole, now=T0 + 62) == Unsettled(3.0)


def test_an_ended_epochs_rows_go_as_they_are_even_without_the_clients_own() -> None:
    # The batch holding 3 (the client's last) and 5 failed when Redis went: never written,
    # they were appended again to the new epoch, which the client gets whole.
    found = [r for r in rows(OLD, range(4, 8)) if r.number != 5]
    new_whole = held(NEW, 1, StreamId(5001, 0))
    replay = plan(found, StreamId(1003, 0), new_whole, since_epoch=OLD)
    assert numbers(replay) == [(OLD, 4), (OLD, 6), (OLD, 7)]


def test_epochs_known_to_have_ended_earlier_settle_from_then() -> None:
    found = rows(OLD, range(3, 6))
    new_whole = held(NEW, 1, None)  # made just now, when the gateway came to fill the gap
    just_made = T0 + 60
    assert plan(found, StreamId(1003, 0), new_whole, now=just_made) == Unsettled(SETTLE)
    # Redis was back (the old epoch had ended) ten seconds before the new epoch was made.
    replay = plan(found, StreamId(1003, 0), new_whole, now=just_made, ended_by=just_made - 10)
    assert numbers(replay) == [(OLD, 4), (OLD, 5)]


def test_a_new_epoch_trimmed_too_is_joined_by_number() -> None:
    found = rows(OLD, range(3, 5)) + rows(NEW, range(1, 8), ms=5000)
    replay = plan(found, StreamId(1003, 0), held(NEW, 4, StreamId(5004, 0)))
    assert numbers(replay) == [(OLD, 4), (NEW, 1), (NEW, 2), (NEW, 3)]
    assert isinstance(replay, DurableReplay)
    assert replay.resume == StreamId(5003, 0)
    # Of the epoch Redis holds, every row it no longer does must be there.
    missing_first = rows(OLD, range(3, 5)) + rows(NEW, range(2, 8), ms=5000)
    assert plan(missing_first, StreamId(1003, 0), held(NEW, 4, StreamId(5004, 0))) is None


def test_a_current_epoch_of_unknown_age_is_not_counted_on() -> None:
    found = rows(OLD, range(3, 5))
    legacy = held("0123456789ab", 1, None)  # an older release's random token
    assert plan(found, StreamId(1003, 0), legacy) is None
    assert numbers(plan(found, StreamId(1003, 0), legacy, ended_by=T0 + 60)) == [(OLD, 4)]

"""Session state: authorisation on subscribe, buffering during replay, no gap, no duplicate."""

from __future__ import annotations

import pytest

from pulse.auth import Claims
from ws_gateway.offsets import StreamId
from ws_gateway.protocol import ErrorCode, FrameError, Subscribe, event_frame, subscribed_frame
from ws_gateway.session import BufferOverflowError, Session

ALICE = Claims(sub="alice", roles=frozenset(), exp=0)


def ev(ms: int, seq: int = 0, channel: str = "account:alice") -> str:
    return event_frame(channel, f"{ms}-{seq}", '{"id":"x"}')


def session(*, max_subscriptions: int = 10, buffer_limit: int = 100) -> Session:
    return Session(ALICE, max_subscriptions=max_subscriptions, buffer_limit=buffer_limit)


def test_subscribe_refusals_carry_codes_and_leave_no_state() -> None:
    s = session(max_subscriptions=2)
    for channel, code in (
        ("payments", ErrorCode.FORBIDDEN),
        ("account:bob", ErrorCode.FORBIDDEN),
        ("nope", ErrorCode.UNKNOWN_CHANNEL),
    ):
        with pytest.raises(FrameError) as info:
            s.begin_subscribe(Subscribe(channel))
        assert info.value.code is code
        assert info.value.channel == channel
    assert s.channels == []
    s.begin_subscribe(Subscribe("stats"))
    with pytest.raises(FrameError) as info:
        s.begin_subscribe(Subscribe("stats"))
    assert info.value.code is ErrorCode.BAD_REQUEST
    s.begin_subscribe(Subscribe("account:alice"))
    s.unsubscribe("stats")
    s.begin_subscribe(Subscribe("stats"))
    assert sorted(s.channels) == ["account:alice", "stats"]


def test_subscription_limit() -> None:
    s = Session(Claims("o", frozenset({"ops"}), 0), max_subscriptions=1, buffer_limit=1)
    s.begin_subscribe(Subscribe("payments"))
    with pytest.raises(FrameError) as info:
        s.begin_subscribe(Subscribe("alerts"))
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED


def test_live_frames_of_unsubscribed_channels_are_dropped() -> None:
    s = session()
    assert s.on_live("account:alice", ev(1)) is None


def test_frames_during_replay_are_buffered_then_joined_without_duplicates() -> None:
    s = session()
    s.begin_subscribe(Subscribe("account:alice", StreamId(1, 0)))
    # published while history was being read: 5 was also in the history snapshot
    assert s.on_live("account:alice", ev(5)) is None
    assert s.on_live("account:alice", ev(6)) is None
    released = s.complete_subscribe("account:alice", StreamId(5, 0))
    assert released == [ev(6)]
    assert s.on_live("account:alice", ev(7)) == ev(7)


def test_late_live_frames_at_or_below_the_floor_are_dropped() -> None:
    s = session()
    s.begin_subscribe(Subscribe("account:alice"))
    assert s.complete_subscribe("account:alice", StreamId(10, 2)) == []
    assert s.on_live("account:alice", ev(10, 1)) is None
    assert s.on_live("account:alice", ev(10, 2)) is None
    assert s.on_live("account:alice", ev(10, 3)) == ev(10, 3)
    assert s.on_live("account:alice", ev(11)) == ev(11)


def test_a_channel_is_live_once_its_floor_is_passed_or_covered_by_what_was_delivered() -> None:
    s = session()
    s.begin_subscribe(Subscribe("account:alice"))
    assert not s.is_live("account:alice", StreamId(99, 0))  # the replay is still running
    s.complete_subscribe("account:alice", StreamId(10, 2))
    assert not s.is_live("account:alice")  # a live frame at or below 10-2 would be dropped
    # The fan-out hands over only frames newer than it last did: a floor at or below that
    # holds nothing back; one above it (history read ahead of pub/sub) still does.
    assert s.is_live("account:alice", StreamId(10, 2))
    assert s.is_live("account:alice", StreamId(11, 0))
    assert not s.is_live("account:alice", StreamId(10, 1))
    assert s.on_live("account:alice", ev(10, 2)) is None  # the floor itself is unchanged
    assert s.on_live("account:alice", ev(10, 3)) == ev(10, 3)
    assert s.is_live("account:alice")
    assert not s.is_live("account:bob", StreamId(99, 0))


def test_frames_without_offsets_pass_and_keep_the_floor() -> None:
    s = session()
    s.begin_subscribe(Subscribe("account:alice", presence=True))
    assert s.complete_subscribe("account:alice", StreamId(10, 2)) == []
    joined = '{"op":"presence","channel":"account:alice","joined":{"user":"alice"}}'
    assert s.on_live("account:alice", joined) == joined
    assert s.on_live("account:alice", ev(10, 1)) is None  # still a duplicate of the replay
    assert s.on_live("account:alice", ev(10, 3)) == ev(10, 3)


def test_a_new_epoch_notice_passes_the_floor_and_lifts_it() -> None:
    s = session()
    s.begin_subscribe(Subscribe("account:alice"))
    s.complete_subscribe("account:alice", StreamId(10, 2))
    notice = subscribed_frame("account:alice", StreamId(0, 0), recovered=False, epoch="e2")
    assert s.on_live("account:alice", notice) == notice
    assert s.on_live("account:alice", ev(3)) == ev(3)  # the new history's first event
    assert s.is_live("account:alice")


def test_presence_frames_are_opt_in() -> None:
    s = session()
    s.begin_subscribe(Subscribe("account:alice"))
    s.complete_subscribe("account:alice", StreamId(0, 0))
    joined = '{"op":"presence","channel":"account:alice","joined":{"user":"alice"}}'
    assert s.on_live("account:alice", joined) is None


def test_replay_buffer_is_bounded() -> None:
    s = session(buffer_limit=2)
    s.begin_subscribe(Subscribe("account:alice"))
    s.on_live("account:alice", ev(1))
    s.on_live("account:alice", ev(2))
    with pytest.raises(BufferOverflowError):
        s.on_live("account:alice", ev(3))

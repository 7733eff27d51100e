"""Pure pieces: the SSE cursor, framing and message ids, the per-connection token bucket."""

from __future__ import annotations

import pytest

from ws_gateway.offsets import ZERO, StreamId
from ws_gateway.protocol import (
    ErrorCode,
    error_frame,
    event_frame,
    message_frame,
    pong_frame,
    subscribed_frame,
)
from ws_gateway.ratelimit import TokenBucket
from ws_gateway.sse import Cursor, EventStream, Position, comment, message, message_text


def test_a_cursor_round_trips_through_its_text() -> None:
    cursor = Cursor()
    cursor.advance("payments", "e1", StreamId(1700000000000, 2))
    cursor.advance("account:a@b.c", "e2", StreamId(5, 0))
    text = str(cursor)
    assert Cursor.parse(text).positions == {
        "payments": Position("e1", StreamId(1700000000000, 2)),
        "account:a@b.c": Position("e2", StreamId(5, 0)),
    }


def test_malformed_cursor_parts_are_ignored() -> None:
    parsed = Cursor.parse("payments~e1~1-0,junk,stats~e~not-an-offset,~~")
    assert list(parsed.positions) == ["payments"]
    assert Cursor.parse(None).positions == {}
    assert Cursor.parse("x" * 20_000).positions == {}


def test_sse_messages_and_comments() -> None:
    assert message('{"op":"pong"}') == b'data: {"op":"pong"}\n\n'
    assert message("{}", event_id="c") == b"id: c\ndata: {}\n\n"
    assert comment("keepalive") == b": keepalive\n\n"


def _subscribed(channel: str, offset: StreamId, epoch: str) -> str:
    return subscribed_frame(channel, offset, recovered=False, epoch=epoch)


def test_sse_messages_of_a_channels_sequence_carry_the_cursor_after_them() -> None:
    stream = EventStream()
    sent = [
        (_subscribed("payments", StreamId(5, 0), "e1"), "payments", "payments~e1~5-0"),
        (_subscribed("stats", ZERO, "s1"), "stats", "payments~e1~5-0,stats~s1~0-0"),
        (event_frame("payments", "6-1", "{}"), "payments", "payments~e1~6-1,stats~s1~0-0"),
        # the hub's notice that the channel's history was lost: a new epoch from 0-0
        (_subscribed("payments", ZERO, "e2"), "payments", "payments~e2~0-0,stats~s1~0-0"),
        (event_frame("payments", "1-0", "{}"), "payments", "payments~e2~1-0,stats~s1~0-0"),
    ]
    for frame, channel, cursor in sent:
        assert stream.message(frame, channel) == message_text(frame, event_id=cursor)
    assert str(Cursor.parse(str(stream.cursor))) == "payments~e2~1-0,stats~s1~0-0"


@pytest.mark.parametrize(
    ("frame", "channel"),
    [
        (pong_frame(), None),
        (error_frame(ErrorCode.UNAVAILABLE, "retry", "payments"), None),
        (message_frame("payments", "u", '{"offset":"9-9","epoch":"x"}'), "payments"),
        ('{"op":"presence","channel":"payments","joined":{"user":"u"}}', "payments"),
    ],
)
def test_other_sse_messages_carry_no_id_and_leave_the_cursor(
    frame: str, channel: str | None
) -> None:
    stream = EventStream(Cursor.parse("payments~e1~5-0"))
    assert stream.message(frame, channel) == message_text(frame)
    assert str(stream.cursor) == "payments~e1~5-0"


def test_an_event_before_any_epoch_still_carries_the_cursor() -> None:
    stream = EventStream()
    frame = event_frame("payments", "6-0", "{}")
    assert stream.message(frame, "payments") == message_text(frame, event_id="")


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.refused_in_a_row == 1
    assert not bucket.allow(0.05)  # half a token
    assert bucket.refused_in_a_row == 2
    assert bucket.allow(0.1)
    assert bucket.refused_in_a_row == 0
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]  # capped

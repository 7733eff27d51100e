"""Pure pieces: the SSE cursor and framing, the per-connection token bucket."""

from __future__ import annotations

from ws_gateway.offsets import StreamId
from ws_gateway.ratelimit import TokenBucket
from ws_gateway.sse import Cursor, Position, comment, message


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


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.refused_in_a_row == 1
    assert not bucket.allow(0.05)  # half a token
    assert bucket.refused_in_a_row == 2
    assert bucket.allow(0.1)
    assert bucket.refused_in_a_row == 0
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]  # capped

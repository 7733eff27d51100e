"""Client frame parsing, server frames, offsets and the recovery rule."""

from __future__ import annotations

import orjson
import pytest

from ws_gateway.http_auth import token_from_request
from ws_gateway.offsets import ZERO, StreamId, frame_offset, is_recovered
from ws_gateway.protocol import (
    ErrorCode,
    FrameError,
    Ping,
    Subscribe,
    Unsubscribe,
    error_frame,
    event_frame,
    message_frame,
    parse_client_frame,
    resume_subscribe,
    subscribed_epoch,
    subscribed_frame,
)


@pytest.mark.parametrize(
    ("text", "frame"),
    [
        ('{"op":"ping"}', Ping()),
        ('{"op":"subscribe","channel":"payments"}', Subscribe("payments")),
        ('{"op":"subscribe","channel":"stats","since":null}', Subscribe("stats")),
        (
            '{"op":"subscribe","channel":"account:A","since":"1700000000000-3"}',
            Subscribe("account:A", StreamId(1700000000000, 3)),
        ),
        ('{"op":"unsubscribe","channel":"alerts"}', Unsubscribe("alerts")),
        ('{"op":"ping","extra":1}', Ping()),
    ],
)
def test_good_frames(text: str, frame: object) -> None:
    assert parse_client_frame(text) == frame


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", ErrorCode.BAD_REQUEST),
        ("", ErrorCode.BAD_REQUEST),
        ("[1,2]", ErrorCode.BAD_REQUEST),
        ('"ping"', ErrorCode.BAD_REQUEST),
        ("{}", ErrorCode.BAD_REQUEST),
        ('{"op":1}', ErrorCode.BAD_REQUEST),
        ('{"op":"publish","channel":"payments"}', ErrorCode.BAD_REQUEST),
        ('{"op":"publish","channel":"account:a","data":[1]}', ErrorCode.BAD_REQUEST),
        (
            '{"op":"publish","channel":"account:a","data":{"x":"' + "y" * 5000 + '"}}',
            ErrorCode.TOO_LARGE,
        ),
        ('{"op":"shout","channel":"payments"}', ErrorCode.UNKNOWN_OP),
        ('{"op":"PING"}', ErrorCode.UNKNOWN_OP),
        ('{"op":"subscribe"}', ErrorCode.BAD_REQUEST),
        ('{"op":"subscribe","channel":""}', ErrorCode.BAD_REQUEST),
        ('{"op":"subscribe","channel":["payments"]}', ErrorCode.BAD_REQUEST),
        ('{"op":"subscribe","channel":"payments","since":12}', ErrorCode.BAD_REQUEST),
        ('{"op":"subscribe","channel":"payments","since":"yesterday"}', ErrorCode.BAD_REQUEST),
        ('{"op":"subscribe","channel":"payments","since":"1-2-3"}', ErrorCode.BAD_REQUEST),
        ('{"op":"unsubscribe","channel":null}', ErrorCode.BAD_REQUEST),
    ],
)
def test_bad_frames_raise_frame_errors(text: str, code: ErrorCode) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(text)
    assert info.value.code is code


def test_binary_frames_are_refused() -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(b'{"op":"ping"}')
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_server_frames_are_the_documented_json() -> None:
    assert orjson.loads(subscribed_frame("stats", StreamId(5, 1), recovered=True)) == {
        "op": "subscribed",
        "channel": "stats",
        "offset": "5-1",
        "recovered": True,
    }
    assert orjson.loads(error_frame(ErrorCode.FORBIDDEN, "no", "payments")) == {
        "op": "error",
        "code": "forbidden",
        "message": "no",
        "channel": "payments",
    }


def test_the_epoch_of_a_subscribed_frame_is_read_without_parsing_it() -> None:
    frame = subscribed_frame("account:a", StreamId(7, 1), recovered=True, epoch="3f9c-e")
    assert subscribed_epoch(frame) == "3f9c-e"
    assert subscribed_epoch(subscribed_frame("stats", ZERO, recovered=False)) is None
    assert subscribed_epoch('{"op":"subscribed","epoch":"') is None


@pytest.mark.parametrize(
    ("channel", "since", "epoch", "subscribe"),
    [
        ("payments", None, None, Subscribe("payments")),
        ("stats", StreamId(5, 0), "e1", Subscribe("stats", StreamId(5, 0), "e1")),
    ],
)
def test_a_resume_subscribe_is_the_frame_a_client_would_send(
    channel: str, since: StreamId | None, epoch: str | None, subscribe: Subscribe
) -> None:
    assert resume_subscribe(channel, since, epoch) == subscribe


@pytest.mark.parametrize(("channel", "epoch"), [("stats", "e" * 65), ("x" * 257, None)])
def test_a_resume_subscribe_is_checked_as_a_clients_frame_is(
    channel: str, epoch: str | None
) -> None:
    with pytest.raises(FrameError) as info:
        resume_subscribe(channel, StreamId(1, 0), epoch)
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_history_frames_match_the_published_frame_layout() -> None:
    # The integration test checks replayed and live frames of one event are the same bytes.
    frame = event_frame("account:A", "12-3", '{"id":"e1"}')
    assert frame == '{"op":"event","channel":"account:A","offset":"12-3","event":{"id":"e1"}}'
    assert frame_offset(frame) == StreamId(12, 3)


@pytest.mark.parametrize(
    ("left", "right"),
    [("1-0", "2-0"), ("9-0", "10-0"), ("10-9", "10-10"), ("99-99", "100-0"), ("0-0", "0-1")],
)
def test_offsets_compare_numerically_not_as_strings(left: str, right: str) -> None:
    assert StreamId.parse(left) < StreamId.parse(right)
    assert str(StreamId.parse(left)) == left


@pytest.mark.parametrize("text", ["", "1", "-1-0", "1-", "a-b", "1-2-3", " 1-2", "1-2 "])
def test_malformed_offsets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="offset"):
        StreamId.parse(text)


def test_frame_offset_of_odd_frames() -> None:
    assert frame_offset('{"op":"pong"}') is None
    assert frame_offset('{"op":"event","offset":"x-y"}') is None
    assert frame_offset('{"op":"event","offset":"12-') is None


def test_only_event_frames_have_an_offset() -> None:
    # A client's ephemeral message carries its own JSON: an "offset" in it is not the
    # channel's, and must never move the position a gateway has delivered.
    published = message_frame("account:a", "a", '{"offset":"99999999999999-0"}')
    assert frame_offset(published) is None
    presence = '{"op":"presence","channel":"account:a","offset":"5-0"}'
    assert frame_offset(presence) is None


S = StreamId


@pytest.mark.parametrize(
    ("since", "first", "last_generated", "trimmed", "recovered"),
    [
        (ZERO, None, None, False, True),  # no stream yet, client starts from the beginning
        (S(5, 0), None, None, False, False),  # an offset of a stream that is gone
        (S(5, 0), S(1, 0), S(9, 0), False, True),  # nothing ever trimmed
        (ZERO, S(1, 0), S(9, 0), False, True),
        (S(1, 0), S(5, 0), S(9, 0), False, False),  # of an earlier, expired stream
        (S(5, 0), S(3, 0), S(9, 0), True, True),  # trimmed, but not past since
        (S(5, 0), S(5, 0), S(9, 0), True, True),
        (S(5, 0), S(5, 1), S(9, 0), True, False),  # trimmed past since
        (ZERO, S(2, 0), S(9, 0), True, False),
        (S(9, 0), S(8, 0), S(9, 0), True, True),  # up to date
        (S(9, 1), S(8, 0), S(9, 0), True, False),  # from the future: Redis was flushed
        (S(9, 0), None, S(9, 0), True, True),  # everything deleted, but nothing after since
        (S(8, 0), None, S(9, 0), True, False),
    ],
)
def test_recovery_rule(
    since: StreamId,
    first: StreamId | None,
    last_generated: StreamId | None,
    trimmed: bool,
    recovered: bool,
) -> None:
    assert (
        is_recovered(since, first=first, last_generated=last_generated, trimmed=trimmed)
        is recovered
    )


@pytest.mark.parametrize(
    ("query", "headers", "token"),
    [
        ("token=abc", {}, "abc"),
        ("a=1&token=abc", {"Authorization": "Bearer other"}, "abc"),
        ("", {"Authorization": "Bearer xyz"}, "xyz"),
        ("", {"Authorization": "bearer  xyz "}, "xyz"),
        ("token=", {}, None),
        ("", {"Authorization": "Basic dXNlcjpw"}, None),
        ("", {"Authorization": "Bearer "}, None),
        ("", {}, None),
    ],
)
def test_token_from_request(query: str, headers: dict[str, str], token: str | None) -> None:
    assert token_from_request(query, headers) == token

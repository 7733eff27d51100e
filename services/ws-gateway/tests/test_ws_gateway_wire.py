"""Pure pieces of the write path: frame bytes built once per message, the heartbeat wheel."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from ws_gateway.heartbeat import HeartbeatWheel
from ws_gateway.wire import FrameBytes, text_frame


def _parse(data: bytes) -> Frame:
    """Parse one server frame with the websockets library (an independent implementation)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        assert reader.at_eof()  # nothing left over: the frame is exactly these bytes
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_a_text_frame_parses_back_to_its_payload_at_every_length_boundary(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    frame = _parse(text_frame(payload))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert (frame.rsv1, frame.rsv2, frame.rsv3) == (False, False, False)
    assert frame.data == payload


def test_frame_bytes_are_built_once_per_message_and_never_reused_for_another() -> None:
    frames = FrameBytes()
    first = orjson.dumps({"op": "event", "n": 1}).decode()
    second = orjson.dumps({"op": "event", "n": 2}).decode()
    built = frames.of(first)
    assert frames.of(first) is built  # the other subscribers of the same message
    assert _parse(frames.of(second)).data == second.encode()
    # an equal text in another object is framed again, to the same bytes
    again = orjson.dumps({"op": "event", "n": 1}).decode()
    assert again is not first
    assert frames.of(again) == built


@dataclass(eq=False)
class _Conn:
    heard: float
    pinged: float = 0.0
    pings: list[float] = field(default_factory=list)
    aborted: bool = False

    def ping(self) -> None:
        self.pings.append(self.pinged)

    def abort(self) -> None:
        self.aborted = True


def _wheel(conn: _Conn) -> HeartbeatWheel:
    wheel = HeartbeatWheel(10.0, slots=1)  # one slot: every turn visits every connection
    wheel.add(conn)
    return wheel


def test_a_connection_heard_from_recently_is_left_alone() -> None:
    conn = _Conn(heard=100.0)
    _wheel(conn).turn(105.0)
    assert conn.pings == []
    assert not conn.aborted


def test_a_quiet_connection_is_pinged_and_kept_when_it_answers() -> None:
    conn = _Conn(heard=100.0)
    wheel = _wheel(conn)
    wheel.turn(110.0)
    assert conn.pings == [110.0]
    conn.heard = 110.2  # the pong
    wheel.turn(120.5)  # quiet again: pinged again (a late turn does not count against it)
    conn.heard = 120.6
    wheel.turn(125.0)
    assert not conn.aborted
    assert conn.pings == [110.0, 120.5]


def test_a_connection_silent_after_a_ping_is_aborted_and_leaves_the_wheel() -> None:
    conn = _Conn(heard=100.0)
    wheel = _wheel(conn)
    wheel.turn(110.0)
    wheel.turn(120.0)
    assert conn.aborted
    assert len(wheel) == 0


def test_connections_are_spread_over_the_slots_and_each_is_visited_once_per_turn_round() -> None:
    wheel = HeartbeatWheel(10.0, slots=4)
    conns = [_Conn(heard=0.0) for _ in range(8)]
    for conn in conns:
        wheel.add(conn)
    wheel.turn(50.0)  # one slot of four
    assert sum(bool(c.pings) for c in conns) == 2
    for _ in range(3):
        wheel.turn(50.0)
    assert all(len(c.pings) == 1 for c in conns)

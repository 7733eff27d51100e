"""The channel fan-out's two lanes, with recording subscribers and transports. Pure, no I/O."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pulse_dev.socket_pairs import read_available, socket_pairs
from ws_gateway.burst import SocketBurst
from ws_gateway.fanout import ChannelFanout, DirectWriter
from ws_gateway.offsets import StreamId
from ws_gateway.protocol import PRESENCE_FRAME_PREFIX
from ws_gateway.wire import text_frame

if TYPE_CHECKING:
    from collections.abc import Iterator

CHANNEL = "payments"


def event(n: int) -> str:
    return f'{{"op":"event","channel":"{CHANNEL}","offset":"{n}-0","event":{{"n":{n}}}}}'


PRESENCE = PRESENCE_FRAME_PREFIX + f',"channel":"{CHANNEL}","joined":{{"user":"u"}}}}'


@dataclass(eq=False)
class Transport:
    """Records what is written; ``backlog`` is what the kernel 'did not take'."""

    log: list[tuple[str, object]]
    backlog: int = 0
    closed: bool = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.log.append(("write", data))

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: ARG002
        return default  # no socket: the burst leaves it to write()


@dataclass(eq=False)
class Sub:
    """A subscriber that goes direct (offers its transport) once ``plain`` is set."""

    transport: Transport
    plain: bool = False
    delivered: list[str] = field(default_factory=list)
    asked: list[StreamId | None] = field(default_factory=list)  # direct_writer's `delivered`

    @property
    def log(self) -> list[tuple[str, object]]:
        return self.transport.log

    def deliver(self, channel: str, frame: str) -> None:
        assert channel == CHANNEL
        self.delivered.append(frame)
        self.log.append(("deliver", frame))

    def direct_writer(self, channel: str, delivered: StreamId | None = None) -> DirectWriter | None:
        assert channel == CHANNEL
        self.asked.append(delivered)
        return self.transport if self.plain else None


def new_sub(*, plain: bool = False) -> Sub:
    return Sub(Transport([]), plain=plain)


def received(sub: Sub) -> list[str]:
    """Every frame the subscriber got, by either lane, in order (writes decoded back)."""
    frames: list[str] = []
    for kind, what in sub.log:
        if kind == "deliver":
            assert isinstance(what, str)
            frames.append(what)
        else:
            assert isinstance(what, bytes)
            frames.extend(_split_frames(what))
    return frames


def _split_frames(data: bytes) -> list[str]:
    out = []
    while data:
        size, head = data[1] & 0x7F, 2
        if size == 126:  # a 16-bit length follows
            size, head = int.from_bytes(data[2:4], "big"), 4
        out.append(data[head : head + size].decode())
        data = data[head + size :]
    return out


def joined(*subs: Sub) -> ChannelFanout:
    """A fan-out holding ``subs``, after one frame (so the plain ones are in the direct lane)."""
    fanout = ChannelFanout()
    for sub in subs:
        fanout.add(sub)
    fanout.deliver(CHANNEL, [event(0)])
    return fanout


def test_a_new_subscriber_gets_frames_through_its_rules_until_it_is_plain() -> None:
    fanout = ChannelFanout()
    sub = new_sub()
    fanout.add(sub)
    fanout.deliver(CHANNEL, [event(1)])
    sub.plain = True
    fanout.deliver(CHANNEL, [event(2)])  # still through deliver; then it changes lanes
    assert fanout.direct_count == 1
    written = fanout.deliver(CHANNEL, [event(3)])
    assert written == 1
    assert sub.log == [
        ("deliver", event(1)),
        ("deliver", event(2)),
        ("write", text_frame(event(3).encode())),
    ]


def test_a_burst_is_one_write_per_direct_subscriber() -> None:
    subs = [new_sub(plain=True) for _ in range(3)]
    fanout = joined(*subs)
    written = fanout.deliver(CHANNEL, [event(1), event(2), event(3)])
    assert written == 9
    for sub in subs:
        writes = [what for kind, what in sub.log if kind == "write"]
        assert len(writes) == 1
        assert received(sub) == [event(n) for n in range(4)]


def test_a_subscriber_falling_behind_leaves_the_direct_lane_without_a_duplicate() -> None:
    behind, fine = new_sub(plain=True), new_sub(plain=True)
    fanout = joined(behind, fine)
    behind.transport.backlog = 100  # the next write stays in its buffer
    behind.plain = False  # and its own rules apply from now on
    fanout.deliver(CHANNEL, [event(1)])
    assert fanout.direct_count == 1
    fanout.deliver(CHANNEL, [event(2)])
    assert received(behind) == [event(0), event(1), event(2)]
    assert behind.log[-1] == ("deliver", event(2))
    assert received(fine) == [event(0), event(1), event(2)]


def test_a_transport_closed_under_the_fan_out_is_skipped_and_not_counted() -> None:
    gone, alive = new_sub(plain=True), new_sub(plain=True)
    fanout = joined(gone, alive)
    gone.transport.closed = True
    gone.plain = False
    assert fanout.deliver(CHANNEL, [event(1), event(2)]) == 2
    assert fanout.direct_count == 1
    assert received(alive) == [event(0), event(1), event(2)]


def test_presence_frames_go_through_each_subscribers_rules_in_order() -> None:
    sub = new_sub(plain=True)
    fanout = joined(sub)
    fanout.deliver(CHANNEL, [event(1), PRESENCE, event(2)])
    assert received(sub) == [event(0), event(1), PRESENCE, event(2)]
    assert ("deliver", PRESENCE) in sub.log  # the subscriber decides whether it wants it


def test_to_slow_and_discard() -> None:
    sub, other = new_sub(plain=True), new_sub()
    fanout = joined(sub, other)
    assert (len(fanout), fanout.direct_count) == (2, 1)
    fanout.to_slow(sub)
    sub.plain = False
    fanout.deliver(CHANNEL, [event(1)])
    assert sub.log[-1] == ("deliver", event(1))
    fanout.discard(sub)
    assert sub not in fanout
    assert other in fanout
    assert len(fanout) == 1
    fanout.deliver(CHANNEL, [event(2)])
    assert event(2) not in received(sub)


def test_promote_moves_a_plain_subscriber_before_any_delivery() -> None:
    fanout = ChannelFanout()
    plain, pending = new_sub(plain=True), new_sub()
    fanout.add(plain)
    fanout.add(pending)
    last = StreamId.parse("7-0")
    fanout.promote(CHANNEL, plain, last)
    fanout.promote(CHANNEL, pending, last)
    assert plain.asked == [last]  # the subscriber decides with the fan-out's newest offset
    assert fanout.direct_count == 1
    fanout.deliver(CHANNEL, [event(8)])
    assert plain.log == [("write", text_frame(event(8).encode()))]
    assert pending.log == [("deliver", event(8))]
    fanout.promote(CHANNEL, plain, last)  # already direct: nothing changes
    fanout.promote(CHANNEL, new_sub(plain=True), last)  # not a subscriber: not added
    assert (len(fanout), fanout.direct_count) == (2, 1)


# -- with a burst: the direct lane's writes go to the sockets themselves ------------------


@dataclass(eq=False)
class SocketTransport(Transport):
    """A transport over one end of a real socket pair: what ``write`` is given stays in its
    buffer (``log``); what the burst writes reaches the peer."""

    sock: socket.socket | None = None
    tls: bool = False

    def get_write_buffer_size(self) -> int:
        held = [what for kind, what in self.log if kind == "write"]
        return self.backlog + sum(len(what) for what in held if isinstance(what, bytes))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "sslcontext":
            return object() if self.tls else None
        return default


@pytest.fixture
def sockets() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    with socket_pairs(600) as made:  # enough for the burst to share the writes between threads
        yield made


def on_socket(ours: socket.socket, **kwargs: Any) -> Sub:
    return Sub(SocketTransport([], sock=ours, **kwargs), plain=True)


def peer_frames(peer: socket.socket) -> list[str]:
    return _split_frames(read_available(peer))


def test_with_a_burst_each_frame_reaches_every_socket_once_in_order(
    sockets: list[tuple[socket.socket, socket.socket]],
) -> None:
    burst = SocketBurst(3)
    subs = [on_socket(ours) for ours, _ in sockets]
    fanout = ChannelFanout(burst)
    for sub in subs:
        fanout.add(sub)
    try:
        assert fanout.deliver(CHANNEL, [event(0)]) == 0  # through their rules: then direct
        assert fanout.deliver(CHANNEL, [event(1), event(2)]) == 2 * len(subs)
        assert fanout.deliver(CHANNEL, [event(3)]) == len(subs)
    finally:
        burst.close()
    for sub, (_, peer) in zip(subs, sockets, strict=True):
        assert sub.log == [("deliver", event(0))]  # nothing went through write()
        assert peer_frames(peer) == [event(1), event(2), event(3)]
    assert fanout.direct_count == len(subs)


def test_with_a_burst_a_transport_holding_bytes_closing_or_tls_is_written_through(
    sockets: list[tuple[socket.socket, socket.socket]],
) -> None:
    burst = SocketBurst(2)
    holding = on_socket(sockets[0][0], backlog=10)
    closing = on_socket(sockets[1][0])
    tls = on_socket(sockets[2][0], tls=True)
    others = [on_socket(ours) for ours, _ in sockets[3:]]
    fanout = joined_with(burst, holding, closing, tls, *others)
    closing.transport.closed = True
    closing.plain = False
    try:
        written = fanout.deliver(CHANNEL, [event(1)])
    finally:
        burst.close()
    frame = ("write", text_frame(event(1).encode()))
    assert holding.log[-1] == frame  # behind what its transport holds
    assert tls.log[-1] == frame
    assert frame not in closing.log  # closed: nothing written, and it left the lane
    assert written == len(sockets) - 1
    for _, peer in sockets[:3]:
        assert peer_frames(peer) == []
    assert all(peer_frames(peer) == [event(1)] for _, peer in sockets[3:])
    assert closing not in fanout.everyone()[: fanout.direct_count]


def test_with_a_burst_a_full_socket_gets_the_rest_through_its_transport_and_leaves_the_lane(
    sockets: list[tuple[socket.socket, socket.socket]],
) -> None:
    burst = SocketBurst(2)
    subs = [on_socket(ours) for ours, _ in sockets]
    fanout = joined_with(burst, *subs)
    full_ours, full_peer = sockets[7]
    full_ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # less than the frame
    big = event(1) + " " * 50_000
    try:
        fanout.deliver(CHANNEL, [big])
    finally:
        burst.close()
    taken = full_peer.recv(1 << 20)
    assert 0 < len(taken) < len(big)
    rest = [what for kind, what in subs[7].log if kind == "write"]
    assert len(rest) == 1
    assert isinstance(rest[0], bytes)
    assert taken + rest[0] == text_frame(big.encode())  # nothing lost, nothing twice
    assert fanout.direct_count == len(subs) - 1  # its own rules apply from now on
    fanout.deliver(CHANNEL, [event(2)])
    assert subs[7].log[-1] == ("deliver", event(2))


def joined_with(burst: SocketBurst, *subs: Sub) -> ChannelFanout:
    """A fan-out with ``burst`` whose plain subscribers have joined the direct lane."""
    fanout = ChannelFanout(burst)
    for sub in subs:
        fanout.add(sub)
        fanout.promote(CHANNEL, sub, None)
    return fanout

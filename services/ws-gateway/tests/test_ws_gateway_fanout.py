"""The channel fan-out's two lanes, with recording subscribers and transports. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from ws_gateway.fanout import ChannelFanout, DirectWriter
from ws_gateway.offsets import StreamId
from ws_gateway.protocol import PRESENCE_FRAME_PREFIX
from ws_gateway.wire import text_frame

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

"""One channel's local subscribers, and the two ways a live frame reaches them.

A fan-out to thousands of connections is dominated by what it does per connection. Most
subscribers are in the plain state: a WebSocket without compression whose channel is live
(its history replay is joined), with nothing waiting to be written. For those the frame
bytes are the same on every connection (server frames are not masked), so the *direct
lane* keeps each one's transport and the fan-out is one ``transport.write`` per connection,
touching nothing else of it.

Every other subscriber is in the *slow lane* and gets each frame through
:meth:`Subscriber.deliver`, which applies the connection's rules (replay buffering, the
offset floor, presence opt-in, its backlog). When a subscription's replay is joined and
after each delivery, the fan-out asks the subscriber for its
:meth:`Subscriber.direct_writer` (:meth:`ChannelFanout.promote`); one that is plain moves
to the direct lane. A direct subscriber leaves it when a write leaves bytes in its transport's
buffer (the client is not keeping up: its own rules take over) or when it says so
(:meth:`ChannelFanout.to_slow`: closing, a backlog, unsubscribing).

Presence frames go to the subscribers that asked for them, so they always take the slow
lane, in order with the frames around them.

With a :class:`~ws_gateway.burst.SocketBurst`, the direct lane's writes to a big channel
are shared by several threads: the sockets whose transport holds nothing unsent (and is not
closing) are written by the burst, the others through their transport, behind what it holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ws_gateway.burst import FAILED
from ws_gateway.protocol import PRESENCE_FRAME_PREFIX
from ws_gateway.wire import text_frame

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ws_gateway.burst import SocketBurst
    from ws_gateway.offsets import StreamId

__all__ = ["ChannelFanout", "DirectWriter", "Subscriber"]


class DirectWriter(Protocol):
    """What the direct lane needs of a transport (asyncio's and uvloop's have all of it)."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class Subscriber(Protocol):
    def deliver(self, channel: str, frame: str) -> None:
        """Take one live frame; must not block or await."""

    def direct_writer(self, channel: str, delivered: StreamId | None = None) -> DirectWriter | None:
        """The transport to write ``channel``'s later live frames to, as text-frame bytes,
        if nothing of this subscriber's rules applies to them any more; else None.
        ``delivered``, when given, is the newest offset the fan-out has handed over: only
        newer ones follow."""


class ChannelFanout:
    """The local subscribers of one channel, each in the direct or the slow lane."""

    __slots__ = ("_burst", "_direct", "_slow")

    def __init__(self, burst: SocketBurst | None = None) -> None:
        # Per direct subscriber: its transport and the transport's socket, for the burst
        # (-1: none, or not one to write to directly).
        self._direct: dict[Subscriber, tuple[DirectWriter, int]] = {}
        self._slow: set[Subscriber] = set()
        self._burst = burst

    def __len__(self) -> int:
        return len(self._direct) + len(self._slow)

    def __contains__(self, subscriber: object) -> bool:
        return subscriber in self._slow or subscriber in self._direct

    @property
    def direct_count(self) -> int:
        return len(self._direct)

    def everyone(self) -> list[Subscriber]:
        return [*self._direct, *self._slow]

    def add(self, subscriber: Subscriber) -> None:
        """A new subscriber starts in the slow lane (its replay is not joined yet)."""
        if subscriber not in self._direct:
            self._slow.add(subscriber)

    def discard(self, subscriber: Subscriber) -> None:
        self._slow.discard(subscriber)
        self._direct.pop(subscriber, None)

    def to_slow(self, subscriber: Subscriber) -> None:
        """Frames for ``subscriber`` go through :meth:`Subscriber.deliver` from now on."""
        if self._direct.pop(subscriber, None) is not None:
            self._slow.add(subscriber)

    def promote(self, channel: str, subscriber: Subscriber, delivered: StreamId | None) -> None:
        """Move ``subscriber`` to the direct lane now if it is plain, without waiting for a
        delivery: a subscription whose replay has just joined gets its first live frame
        by the direct lane too. ``delivered``: the newest offset handed over on ``channel``."""
        if subscriber in self._slow:
            writer = subscriber.direct_writer(channel, delivered)
            if writer is not None:
                self._slow.discard(subscriber)
                fd = _socket_fd(writer) if self._burst is not None else -1
                self._direct[subscriber] = (writer, fd)

    def deliver(self, channel: str, frames: Iterable[str]) -> int:
        """Hand ``frames`` (in order) to every subscriber; the frames written directly."""
        written = 0
        run: list[str] = []
        for frame in frames:
            if frame.startswith(PRESENCE_FRAME_PREFIX):
                written += self._deliver_run(channel, run)
                run = []
                for subscriber in self.everyone():
                    subscriber.deliver(channel, frame)
            else:
                run.append(frame)
        return written + self._deliver_run(channel, run)

    def _deliver_run(self, channel: str, frames: list[str]) -> int:
        if not frames:
            return 0
        # Taken first: a subscriber that falls behind during the direct writes has these
        # frames already and joins the slow lane for the next ones.
        slow = list(self._slow)
        written = self._write_direct(frames) if self._direct else 0
        if slow:
            self._deliver_slow(channel, frames, slow)
        return written

    def _write_direct(self, frames: list[str]) -> int:
        """One write of every frame's bytes per direct subscriber; how many frames went out."""
        direct = self._direct
        data = (
            text_frame(frames[0].encode())
            if len(frames) == 1
            else b"".join([text_frame(f.encode()) for f in frames])
        )
        behind: list[Subscriber] = []
        lost = 0
        burst = self._burst
        to_burst: list[Subscriber] = []
        fds: list[int] = []
        for subscriber, (writer, fd) in direct.items():
            # Only a socket with nothing unsent before it, and still the transport's own
            # (a socket is known only with a burst: see promote).
            if fd >= 0 and not writer.is_closing() and not writer.get_write_buffer_size():
                to_burst.append(subscriber)
                fds.append(fd)
                continue
            lost += _write(writer, data, subscriber, behind)
        if fds and burst is not None:
            for i, sent in burst.write(data, fds):
                subscriber = to_burst[i]
                if sent == FAILED:  # reset or shut: the transport hears of it when it reads
                    behind.append(subscriber)
                    lost += 1
                else:  # the rest waits in the transport, which writes it when it can
                    lost += _write(direct[subscriber][0], data[sent:], subscriber, behind)
        written = (len(direct) - lost) * len(frames)
        for subscriber in behind:
            self.to_slow(subscriber)
        return written

    def _deliver_slow(self, channel: str, frames: list[str], slow: list[Subscriber]) -> None:
        """Each frame through each slow subscriber's rules; the plain ones change lanes."""
        for subscriber in slow:
            for frame in frames:
                subscriber.deliver(channel, frame)
            self.promote(channel, subscriber, None)


def _write(
    writer: DirectWriter, data: bytes, subscriber: Subscriber, behind: list[Subscriber]
) -> int:
    """``data`` through ``writer``; ``subscriber`` joins ``behind`` if the kernel did not take
    all of it or the transport is closed. Returns 1 if nothing was written (closed), else 0."""
    try:
        writer.write(data)
    except RuntimeError:  # the transport closed under us
        behind.append(subscriber)
        return 1
    if writer.get_write_buffer_size():
        behind.append(subscriber)  # the kernel did not take it all
    return 0


def _socket_fd(writer: DirectWriter) -> int:
    """The file descriptor of the plain TCP socket under ``writer``, or -1 (none, or TLS)."""
    if writer.get_extra_info("sslcontext") is not None:
        return -1
    sock = writer.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (OSError, ValueError):
        return -1

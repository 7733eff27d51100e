"""Server-Sent Events framing and the resume cursor. Pure, no I/O.

An SSE stream carries several channels, so its event id is a cursor over all of them:
``channel~epoch~offset`` per channel, comma-separated (channel names never hold ``~`` or
``,``). The browser sends the last one back as ``Last-Event-ID`` when it reconnects, and the
gateway resumes every channel from there, as a WebSocket ``subscribe`` with ``since`` would.

:class:`EventStream` turns a connection's frames into messages in the order they are queued,
so each message's id is the cursor just after it. The sender names the channel of a frame
that is part of a channel's sequence; the position is read from the gateway's own frame
layout (the offset as the fan-out reads it, :func:`~ws_gateway.offsets.frame_offset`), the
JSON is never parsed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ws_gateway.offsets import StreamId, frame_offset
from ws_gateway.protocol import EVENT_FRAME_PREFIX, SUBSCRIBED_FRAME_PREFIX, subscribed_epoch

__all__ = ["Cursor", "EventStream", "Position", "comment", "message", "message_text"]

_MAX_CURSOR_CHARS: Final = 16 * 1024


@dataclass(frozen=True)
class Position:
    epoch: str
    offset: StreamId


class Cursor:
    """Where a stream stands on each of its channels."""

    def __init__(self, positions: dict[str, Position] | None = None) -> None:
        self.positions: dict[str, Position] = dict(positions or {})

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        """Parse a ``Last-Event-ID``; anything malformed is ignored (no resume for it)."""
        positions: dict[str, Position] = {}
        if not text or len(text) > _MAX_CURSOR_CHARS:
            return cls()
        for part in text.split(","):
            channel, _, rest = part.partition("~")
            epoch, _, offset = rest.partition("~")
            if not channel or not epoch or not offset:
                continue
            try:
                positions[channel] = Position(epoch, StreamId.parse(offset))
            except ValueError:
                continue
        return cls(positions)

    def advance(self, channel: str, epoch: str, offset: StreamId) -> None:
        self.positions[channel] = Position(epoch, offset)

    def epoch(self, channel: str) -> str | None:
        position = self.positions.get(channel)
        return position.epoch if position else None

    def __str__(self) -> str:
        return ",".join(f"{c}~{p.epoch}~{p.offset}" for c, p in self.positions.items())


def message_text(data: str, *, event_id: str | None = None) -> str:
    """One SSE message; ``data`` is a single-line JSON frame."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {data}\n\n"


def message(data: str, *, event_id: str | None = None) -> bytes:
    """:func:`message_text`, encoded."""
    return message_text(data, event_id=event_id).encode()


def comment(text: str) -> bytes:
    """A comment line: keeps proxies from timing the stream out; ignored by EventSource."""
    return f": {text}\n\n".encode()


class EventStream:
    """The messages of one SSE stream, made in the order their frames are queued."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: Cursor | None = None) -> None:
        self.cursor = cursor if cursor is not None else Cursor()

    def message(self, frame: str, channel: str | None = None) -> str:
        """``frame`` as a message. A ``subscribed`` or ``event`` frame of ``channel`` moves
        the cursor to its position and carries the cursor as its id; other frames (answers,
        ephemeral messages, errors) carry none."""
        if channel is None:
            return message_text(frame)
        if frame.startswith(EVENT_FRAME_PREFIX):
            epoch = self.cursor.epoch(channel)
        elif frame.startswith(SUBSCRIBED_FRAME_PREFIX):
            epoch = subscribed_epoch(frame)
        else:
            return message_text(frame)
        offset = frame_offset(frame)
        if epoch is not None and offset is not None:
            self.cursor.advance(channel, epoch, offset)
        return message_text(frame, event_id=str(self.cursor))

"""Server-Sent Events framing and the resume cursor. Pure, no I/O.

An SSE stream carries several channels, so its event id is a cursor over all of them:
``channel~epoch~offset`` per channel, comma-separated (channel names never hold ``~`` or
``,``). The browser sends the last one back as ``Last-Event-ID`` when it reconnects, and the
gateway resumes every channel from there, as a WebSocket ``subscribe`` with ``since`` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ws_gateway.offsets import StreamId

__all__ = ["Cursor", "Position", "comment", "message"]

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


def message(data: str, *, event_id: str | None = None) -> bytes:
    """One SSE message; ``data`` is a single-line JSON frame."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {data}\n\n".encode()


def comment(text: str) -> bytes:
    """A comment line: keeps proxies from timing the stream out; ignored by EventSource."""
    return f": {text}\n\n".encode()

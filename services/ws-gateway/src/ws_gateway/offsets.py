"""Channel offsets: Redis stream entry ids ``"<ms>-<seq>"``, compared numerically.

Clients treat offsets as opaque strings; the gateway parses them to drop duplicates and to
tell whether a channel's bounded history still reaches back to a client's ``since``.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = [
    "EVENT_FRAME_PREFIX",
    "SUBSCRIBED_FRAME_PREFIX",
    "ZERO",
    "StreamId",
    "frame_offset",
    "is_recovered",
]

_ID_RE: Final = re.compile(r"^(\d{1,20})-(\d{1,20})$")
EVENT_FRAME_PREFIX: Final = '{"op":"event"'
SUBSCRIBED_FRAME_PREFIX: Final = '{"op":"subscribed"'
_FRAMES_WITH_OFFSETS: Final = (EVENT_FRAME_PREFIX, SUBSCRIBED_FRAME_PREFIX)
_OFFSET_KEY: Final = '"offset":"'


class StreamId(NamedTuple):
    """A stream entry id; tuple order is the stream's order."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> StreamId:
        """Parse ``"ms-seq"``; raises ValueError for anything else."""
        match = _ID_RE.match(text)
        if match is None:
            raise ValueError(f"not a channel offset: {text[:40]!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO: Final = StreamId(0, 0)


def frame_offset(frame: str) -> StreamId | None:
    """The offset of a published event frame without parsing its JSON, or None.

    Frames are built by pulse.channels as ``{"op":"event","channel":C,"offset":"O",...}``;
    channel names cannot contain quotes, so the first ``"offset":"`` is the frame's own.
    Only the frames the gateway and pulse.channels build, ``event`` and ``subscribed``, have
    one: an ephemeral message carries a client's own JSON, which may well hold an
    ``"offset"`` key, and it must never move a channel's position.
    """
    if not frame.startswith(_FRAMES_WITH_OFFSETS):
        return None
    start = frame.find(_OFFSET_KEY)
    if start < 0:
        return None
    start += len(_OFFSET_KEY)
    end = frame.find('"', start)
    if end < 0:
        return None
    try:
        return StreamId.parse(frame[start:end])
    except ValueError:
        return None


def is_recovered(
    since: StreamId,
    *,
    first: StreamId | None,
    last_generated: StreamId | None,
    trimmed: bool,
) -> bool:
    """Does the history still hold every entry after ``since``?

    ``first`` is the oldest retained entry, ``last_generated`` the newest id ever added
    (None for a stream that does not exist) and ``trimmed`` says whether any entry was
    ever removed. An offset from the future (a flushed Redis) is not recovered, and
    neither is one older than the first entry of a stream never trimmed: offsets are entry
    ids, so it is one of an earlier stream of the channel (expired after its lifetime, or
    lost), whose entries after it are gone. ``0-0`` (a client that has seen nothing) is
    recovered while nothing was trimmed.
    """
    if last_generated is None:
        return since == ZERO
    if since > last_generated:
        return False
    if since == last_generated or (since == ZERO and not trimmed):
        return True
    return first is not None and first <= since

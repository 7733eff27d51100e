"""WebSocket text frames as bytes on the wire, built once per message. Pure, no I/O.

A server's frames are not masked (RFC 6455 section 5.1), so an uncompressed text frame
carrying a given message is the same bytes on every connection. The live fan-out hands
the same ``str`` to every subscriber; :class:`FrameBytes` turns it into frame bytes once and
returns the same ``bytes`` for the other subscribers, which the gateway writes straight to
their transports instead of letting the WebSocket library frame the message again for each.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["FrameBytes", "text_frame"]

_FIN_TEXT: Final = 0x81  # FIN bit + opcode 1 (text); RSV bits clear: no compression
_LEN16: Final = struct.Struct("!BBH")
_LEN64: Final = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (UTF-8 text)."""
    size = len(payload)
    if size < 126:  # noqa: PLR2004 - the protocol's 7-bit length limit
        header = bytes((_FIN_TEXT, size))
    elif size < 1 << 16:
        header = _LEN16.pack(_FIN_TEXT, 126, size)
    else:
        header = _LEN64.pack(_FIN_TEXT, 127, size)
    return header + payload


class FrameBytes:
    """The frame bytes of the last message seen, recognised by identity.

    A fan-out writes one message to every subscriber before the next one, so one entry
    is enough: the first subscriber builds the frame and the others reuse it. The ``str``
    is kept (not its ``id``), so a new message can never be mistaken for the old one.
    """

    __slots__ = ("_frame", "_text")

    def __init__(self) -> None:
        self._text: str | None = None
        self._frame = b""

    def of(self, text: str) -> bytes:
        if text is not self._text:
            self._frame = text_frame(text.encode())
            self._text = text
        return self._frame

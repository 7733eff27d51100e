"""The gateway's one port: WebSocket upgrades to the gateway's own protocol, the rest to aiohttp.

Every accepted connection starts with a :class:`FrontDoor`, which reads up to the end of the
first request line. ``GET /ws`` goes to a :class:`~ws_gateway.websocket.WebSocketConnection`,
which does the handshake and then serves the connection for its whole life with nothing of
aiohttp's around it; anything else goes to aiohttp's protocol (the ``web.Server`` the runner
made: every other route, its middlewares, keep-alive). The door hands the transport over with
``set_protocol`` and replays the bytes it read, then drops out.

A WebSocket upgrade that arrives later on a kept-alive HTTP connection (an HTTP client reusing
a pooled connection) reaches aiohttp's ``/ws`` route instead, which hands the connection to
the same protocol (:class:`~ws_gateway.websocket.HandedOver`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FrontDoor", "front_door"]

_WEBSOCKET_LINE: Final = b"GET /ws"
# A request line longer than this is not a WebSocket upgrade of ours: aiohttp refuses it.
_MAX_SNIFF: Final = 8192


class FrontDoor(asyncio.Protocol):
    """The first protocol of every connection, until its first request line is read."""

    __slots__ = ("_head", "_http", "_transport", "_websocket")

    def __init__(
        self,
        http: Callable[[], asyncio.BaseProtocol],
        websocket: Callable[[], asyncio.BaseProtocol],
    ) -> None:
        self._http = http
        self._websocket = websocket
        self._head = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        head = self._head + data if self._head else data
        end = head.find(b"\r\n")
        if end < 0 and len(head) < _MAX_SNIFF:
            self._head = head
            return
        # A line with no end within the limit is nobody's upgrade: aiohttp refuses it.
        upgrade = end >= 0 and head.startswith(_WEBSOCKET_LINE) and head[7:8] in (b" ", b"?")
        self._hand_over(self._websocket if upgrade else self._http, head)

    def eof_received(self) -> bool:
        if self._head:  # an incomplete request line: aiohttp answers it as it would
            self._hand_over(self._http, self._head)
        return False

    def _hand_over(self, factory: Callable[[], asyncio.BaseProtocol], head: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        self._head = b""
        protocol = cast("asyncio.Protocol", factory())
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(head)


def front_door(
    websocket: Callable[[], asyncio.BaseProtocol],
) -> Callable[[Callable[[], asyncio.BaseProtocol]], Callable[[], asyncio.BaseProtocol]]:
    """For :func:`pulse.service.serving_api`: connections whose first request is ``GET /ws``
    get ``websocket()``, the others aiohttp's protocol."""

    def factory(http: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.BaseProtocol]:
        return lambda: FrontDoor(http, websocket)

    return factory

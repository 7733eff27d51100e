"""A WebSocket close that reaches the client even when the client is still sending.

When a client breaks the protocol (a frame over the size limit, bytes that are not UTF-8 in a
text frame), aiohttp writes the close frame (1009, 1007) and then closes the socket at once:
its frame reader is dead, so it cannot wait for the client's close frame. If the client sent
anything more, that data arrives at a closed socket, the kernel answers with a reset, and a
reset makes the client's kernel throw away what it had not read yet — the close frame with
it. The client sees an abnormal closure (1006) and cannot tell what it did wrong.

:class:`LingeringWebSocketResponse` closes those connections the way HTTP servers close a
connection they stopped reading ("lingering close"): after the close frame it sends FIN
(half-close), reads and drops whatever the client still sends until the client closes its
side, and gives up after ``linger`` seconds. Orderly closes (the client's close frame was
read) are left to aiohttp.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LingeringWebSocketResponse"]


class _Discard(asyncio.Protocol):
    """Takes over the socket from aiohttp's protocol after the close: drops what arrives."""

    def __init__(self, original: asyncio.BaseProtocol, done: asyncio.Future[None]) -> None:
        self._original = original
        self._done = done

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Dropped: the connection is closing and its reader is gone."""

    def eof_received(self) -> bool:
        self._finish()
        return False  # the transport closes itself: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self._original.connection_lost(exc)

    def pause_writing(self) -> None:
        self._original.pause_writing()

    def resume_writing(self) -> None:
        self._original.resume_writing()


class LingeringWebSocketResponse(web.WebSocketResponse):
    """A :class:`aiohttp.web.WebSocketResponse` whose failed closes linger (see above).

    After :meth:`close`, :attr:`lingering` is a future that completes when a lingering close
    is over (None if the close did not linger); the handler awaits it before returning, as
    aiohttp closes the socket once the handler returns.
    """

    def __init__(self, *, linger: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._linger = linger
        self.lingering: asyncio.Future[None] | None = None
        # Called once the response counts as closed, before its close frame is written
        # (every close path of aiohttp goes through ``_set_closed``), so whoever writes to
        # the transport directly can stop first.
        self.on_closed: Callable[[], None] | None = None

    def _set_closed(self) -> None:
        super()._set_closed()
        if self.on_closed is not None:
            self.on_closed()

    def _close_transport(self) -> None:
        request = self._req
        transport = request.transport if request is not None else None
        if (
            self._exception is None  # an orderly close: the client said it is done
            or transport is None
            or transport.is_closing()
            or not transport.can_write_eof()
        ):
            super()._close_transport()
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        transport.set_protocol(_Discard(transport.get_protocol(), done))
        try:
            transport.write_eof()
            transport.resume_reading()  # aiohttp may have paused it under a large frame
        except (OSError, RuntimeError):
            transport.close()
            return
        deadline = loop.call_later(self._linger, transport.close)
        done.add_done_callback(lambda _: deadline.cancel())
        self.lingering = done

    async def linger(self) -> None:
        """Wait until a lingering close is over (at most ``linger`` seconds, plus a little)."""
        if self.lingering is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.lingering), self._linger + 1.0)
            except TimeoutError:
                return

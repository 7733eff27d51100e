"""Connected, nonblocking socket pairs, for tests of code that writes to many sockets."""

from __future__ import annotations

import socket
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["read_available", "socket_pairs"]


@contextmanager
def socket_pairs(count: int) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """``count`` pairs (the side written to, its peer), both nonblocking; closed after."""
    with ExitStack() as stack:
        made = []
        for _ in range(count):
            ours, peer = socket.socketpair()
            for sock in (ours, peer):
                stack.enter_context(sock)
                sock.setblocking(False)  # noqa: FBT003 - the socket API
            made.append((ours, peer))
        yield made


def read_available(sock: socket.socket) -> bytes:
    """Everything ``sock`` holds now (until it would block, or its peer closed)."""
    got = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        got += chunk

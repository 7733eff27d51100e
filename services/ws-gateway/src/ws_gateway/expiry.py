"""When connections' tokens run out: one timer per distinct deadline, not one per connection.

A connection is closed with 4001 once its token's ``exp`` plus the grace period has passed.
A timer per connection (``loop.call_later``) costs about half a kilobyte each (the handle,
uvloop's timer and its libuv handle, the bound method and its arguments), for every idle
connection. Token ``exp`` is a whole second, and the grace is one setting, so connections
share deadlines: those whose tokens were issued in the same second share one timer here,
and a connection costs one entry in its deadline's set. Nothing is ever late or early
compared with a timer of its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Expiring", "ExpirySchedule"]


class Expiring(Protocol):
    def expire(self) -> None:
        """The deadline passed: close the connection."""


class ExpirySchedule:
    """Connections by deadline (``time.time()`` seconds), each deadline with one timer."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: dict[float, tuple[asyncio.TimerHandle, set[Expiring]]] = {}

    def __len__(self) -> int:
        return sum(len(members) for _, members in self._due.values())

    def add(self, conn: Expiring, deadline: float) -> None:
        """Call ``conn.expire()`` once ``deadline`` has passed (at once if it has already)."""
        entry = self._due.get(deadline)
        if entry is None:
            handle = asyncio.get_running_loop().call_later(
                max(deadline - time.time(), 0.0), self._expire, deadline
            )
            entry = self._due[deadline] = (handle, set())
        entry[1].add(conn)

    def discard(self, conn: Expiring, deadline: float) -> None:
        """Forget ``conn`` at ``deadline``; the last one of a deadline cancels its timer."""
        entry = self._due.get(deadline)
        if entry is None:
            return
        handle, members = entry
        members.discard(conn)
        if not members:
            handle.cancel()
            del self._due[deadline]

    def _expire(self, deadline: float) -> None:
        _, members = self._due.pop(deadline)
        for conn in members:
            conn.expire()

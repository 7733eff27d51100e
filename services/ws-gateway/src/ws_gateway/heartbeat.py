"""Protocol pings for every WebSocket connection from one timer, not timers per connection.

aiohttp's ``heartbeat`` arms timers per connection and makes a coroutine per ping. With
thousands of connections opened together their pings fall due together, and what they
allocate triggers full garbage collections of a heap that holds every connection: with
10,000 connections, a stall of half a second every interval, for everyone. Here the
connections are spread over the slots of one wheel, which visits one slot every
``interval / slots`` seconds, so each connection is visited once per interval:

- heard from since its last ping, and recently: nothing to do;
- quiet for an interval: it gets a ping (two constant bytes, written at once);
- pinged at a visit and still silent at the next (an interval later): it is dead; aborted.

Any frame from the client counts as a sign of life, a pong as well as a data frame.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Final, Protocol

__all__ = ["PING_FRAME", "Beating", "HeartbeatWheel"]

PING_FRAME: Final = b"\x89\x00"  # FIN + ping, no payload, unmasked (a server frame)


class Beating(Protocol):
    """A connection as the wheel sees it (times from ``time.monotonic``)."""

    heard: float  # when the last frame from the client arrived
    pinged: float  # when the last unanswered ping was sent; 0.0 if none

    def ping(self) -> None: ...

    def abort(self) -> None: ...


class HeartbeatWheel:
    def __init__(self, interval: float, *, slots: int = 20) -> None:
        self.interval = interval
        self._slots: list[set[Beating]] = [set() for _ in range(slots)]
        self._next_slot = itertools.cycle(range(slots))
        self._turn = 0

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots)

    def add(self, conn: Beating) -> int:
        """Put ``conn`` on the wheel; returns its slot, to pass to :meth:`discard`."""
        slot = next(self._next_slot)
        self._slots[slot].add(conn)
        return slot

    def discard(self, conn: Beating, slot: int) -> None:
        self._slots[slot].discard(conn)

    def turn(self, now: float) -> None:
        """Visit the next slot's connections."""
        slot = self._slots[self._turn]
        self._turn = (self._turn + 1) % len(self._slots)
        for conn in list(slot):
            if conn.heard >= conn.pinged:  # answered (or never pinged)
                if now - conn.heard < self.interval:
                    continue
                conn.pinged = now
                conn.ping()
            else:
                slot.discard(conn)
                conn.abort()

    async def run(self) -> None:
        """Turn the wheel until cancelled."""
        tick = self.interval / len(self._slots)
        while True:
            await asyncio.sleep(tick)
            self.turn(time.monotonic())

"""ws_gateway.expiry: connections closed when their token's deadline passes, one timer per
deadline."""

from __future__ import annotations

import asyncio
import time

from ws_gateway.expiry import ExpirySchedule


class Conn:
    def __init__(self) -> None:
        self.expired = 0

    def expire(self) -> None:
        self.expired += 1


async def test_connections_sharing_a_deadline_expire_together_once() -> None:
    schedule = ExpirySchedule()
    deadline = time.time() + 0.05
    first, second, later = Conn(), Conn(), Conn()
    schedule.add(first, deadline)
    schedule.add(second, deadline)
    schedule.add(later, deadline + 60)
    assert len(schedule) == 3
    await asyncio.sleep(0.2)
    assert (first.expired, second.expired, later.expired) == (1, 1, 0)
    assert len(schedule) == 1
    schedule.discard(later, deadline + 60)
    assert len(schedule) == 0


async def test_a_discarded_connection_does_not_expire_but_the_others_do() -> None:
    schedule = ExpirySchedule()
    deadline = time.time() + 0.05
    kept, gone = Conn(), Conn()
    schedule.add(kept, deadline)
    schedule.add(gone, deadline)
    schedule.discard(gone, deadline)
    schedule.discard(gone, deadline)  # twice, or never added: nothing happens
    await asyncio.sleep(0.2)
    assert (kept.expired, gone.expired) == (1, 0)


async def test_the_last_connection_of_a_deadline_cancels_its_timer() -> None:
    schedule = ExpirySchedule()
    deadline = time.time() + 0.05
    conn = Conn()
    schedule.add(conn, deadline)
    schedule.discard(conn, deadline)
    schedule.add(conn, deadline + 60)  # re-armed by a refresh
    await asyncio.sleep(0.2)
    assert conn.expired == 0
    assert len(schedule) == 1
    schedule.discard(conn, deadline + 60)


async def test_a_deadline_already_past_expires_at_once() -> None:
    schedule = ExpirySchedule()
    conn = Conn()
    schedule.add(conn, time.time() - 5)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert conn.expired == 1

"""The gateway's connections and the garbage collector, on a real gateway process.

A connection's objects live as long as it does, so the gateway freezes them out of full
collections (``PULSE_GC_FREEZE_INTERVAL_SECONDS``). That is only safe if a connection, once
closed, is freed by reference counting alone: garbage in a cycle among frozen objects stays
until the Python heap doubles. These tests open connections, let them be frozen, end them in
every way a connection ends (Server-Sent Events streams too), and read the gateway's own
metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pulse_dev.testing import GatewayFactory, RunningGateway, send_frame

FREEZE_INTERVAL = 0.2
PER_ENDING = 40  # connections ended each way
MAX_MESSAGE_BYTES = 256
USERS = 10
HEAP = "pulse_python_allocated_blocks"
pytestmark = pytest.mark.timeout(90)
T = TypeVar("T")


@pytest.fixture(scope="module")
def gateway(module_gateways: GatewayFactory) -> RunningGateway:
    return module_gateways.start(
        PULSE_GC_FREEZE_INTERVAL_SECONDS=str(FREEZE_INTERVAL),
        PULSE_MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
    )


async def _metrics(gateway: RunningGateway) -> dict[str, float]:
    """Every sample of the gateway's /metrics, each family's samples summed over labels."""
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.http}/metrics") as resp:
        text = await resp.text()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


async def _settled(gateway: RunningGateway, connections: int) -> dict[str, float]:
    """The metrics once ``connections`` are open and two freezer passes have run since."""
    async with asyncio.timeout(20):
        while (await _metrics(gateway))["pulse_ws_connections"] != connections:
            await asyncio.sleep(0.05)
    await asyncio.sleep(3 * FREEZE_INTERVAL)
    return await _metrics(gateway)


@pytest.fixture(scope="module")
def tokens(gateway: RunningGateway) -> list[str]:
    """The tokens of USERS users, each used by many connections (the gateway keeps a cache
    of the tokens it verified, warmed up before anything is counted)."""
    return [gateway.token(f"user-{i}", roles=["ops"]) for i in range(USERS)]


async def _subscribed(gateway: RunningGateway, tokens: list[str], n: int) -> list[ClientConnection]:
    clients = []
    for i in range(n):
        ws = await connect(f"{gateway.ws}?token={tokens[i % len(tokens)]}")
        assert (await send_frame(ws, op="subscribe", channel="stats"))["op"] == "subscribed"
        clients.append(ws)
    return clients


async def _end_every_way(gateway: RunningGateway, clients: list[ClientConnection]) -> None:
    """A third of ``clients`` close; a third have their TCP connection reset; the gateway
    closes the rest (a message over the size limit: 1009); and as many handshakes as a third
    are refused (a bad token)."""
    per = len(clients) // 3
    closing, resetting, oversized = clients[:per], clients[per : 2 * per], clients[2 * per :]
    await asyncio.gather(*(ws.close() for ws in closing))
    for ws in resetting:
        ws.transport.abort()
    for ws in oversized:
        await ws.send("x" * (MAX_MESSAGE_BYTES + 1))
    for ws in oversized:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
    for _ in range(per):
        with pytest.raises(InvalidStatus):
            await connect(f"{gateway.ws}?token=not-a-token")


async def _heap_back_to(gateway: RunningGateway, blocks: float) -> dict[str, float]:
    """The metrics once no connection is open and the Python heap is back to ``blocks`` (a
    connection's last objects go when its TCP connection is closed, after its close
    handshake); fails after 10 s, saying how many more blocks stayed."""
    now = await _settled(gateway, 0)
    deadline = asyncio.get_running_loop().time() + 10
    while now[HEAP] > blocks:
        assert asyncio.get_running_loop().time() < deadline, (
            f"{now[HEAP] - blocks:.0f} more allocated blocks than allowed stay after the "
            "connections ended"
        )
        now = await _settled(gateway, 0)
    return now


async def _freed_when_ended(
    gateway: RunningGateway,
    opened: Callable[[int], Awaitable[list[T]]],
    end: Callable[[list[T]], Awaitable[None]],
) -> None:
    """Open connections (``opened(n)``), let them be frozen, ``end`` them: the Python heap
    goes back to where it was and no collection finds any of them in a cycle."""
    # As many once first, so what the gateway makes once is made (caches, lazy imports,
    # tables grown to hold that many connections, which do not shrink).
    await end(await opened(3 * PER_ENDING))
    before = await _settled(gateway, 0)

    clients = await opened(3 * PER_ENDING)
    held = await _settled(gateway, len(clients))  # and frozen by the passes since
    heap = before[HEAP]
    assert held[HEAP] >= heap + 10 * len(clients)  # well over ten objects each

    await end(clients)
    # Freed by their reference counts though frozen: the heap goes back to where it was,
    # give or take a few blocks per connection (one left as garbage among frozen objects
    # keeps 20 or more, and no sweep comes before the heap doubles).
    after = await _heap_back_to(gateway, heap + 4 * len(clients))
    # And no collection found any of them in a cycle (one left so would be 10+ objects).
    collected = after["python_gc_objects_collected_total"]
    assert collected - held["python_gc_objects_collected_total"] < len(clients)
    assert after["pulse_gc_full_sweeps_total"] == before["pulse_gc_full_sweeps_total"]


async def test_closed_websockets_are_freed_though_frozen_and_leave_no_garbage_cycles(
    gateway: RunningGateway, tokens: list[str]
) -> None:
    await _freed_when_ended(
        gateway,
        lambda n: _subscribed(gateway, tokens, n),
        lambda clients: _end_every_way(gateway, clients),
    )


async def test_closed_event_streams_are_freed_though_frozen_and_leave_no_garbage_cycles(
    gateway: RunningGateway, tokens: list[str]
) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def streams(n: int) -> list[aiohttp.ClientResponse]:
            opened = []
            for i in range(n):
                resp = await http.get(
                    f"{gateway.http}/sse",
                    params={"channels": "stats", "token": tokens[i % len(tokens)]},
                )
                assert resp.status == 200
                while not (await resp.content.readline()).startswith(b"data: "):
                    pass  # up to the `subscribed` message
                opened.append(resp)
            return opened

        async def hang_up(opened: list[aiohttp.ClientResponse]) -> None:
            for resp in opened:
                resp.close()  # the browser tab goes away: the TCP connection is closed

        await _freed_when_ended(gateway, streams, hang_up)


async def test_every_collection_pause_is_timed(gateway: RunningGateway) -> None:
    before = await _metrics(gateway)
    await asyncio.sleep(3 * FREEZE_INTERVAL)  # each freezer pass is a full collection
    after = await _metrics(gateway)
    assert after["pulse_gc_pause_seconds_count"] >= before["pulse_gc_pause_seconds_count"] + 2
    assert after["pulse_gc_pause_seconds_sum"] > before["pulse_gc_pause_seconds_sum"]

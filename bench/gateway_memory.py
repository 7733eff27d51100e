"""Where a ws-gateway connection's memory goes: ``python bench/gateway_memory.py [N]``
(``--traced-only``: skip the plain run).

Two runs of one gateway process, each holding N (default 10,000) idle connections subscribed
to ``stats``, opened by load-client processes (``bench/gateway_client.py``: their memory is
not the gateway's):

1. plain, as ``make bench ONLY=gateway`` runs it: the gateway's RSS before and after, per
   connection (the ``gateway.rss_kb_per_conn`` figure);
2. traced: the gateway runs under :mod:`tracemalloc` (this file in ``--serve`` mode wraps
   ``python -m ws_gateway``) and writes a snapshot, and a count of the objects the garbage
   collector tracks by type, on SIGUSR1 — once idle, once with the connections. The
   difference, per connection, is printed by allocation site, grouped by component, and by
   object type.

RSS counts what tracemalloc cannot see (memory allocated outside Python's allocators, pool
and arena slack, the allocator's free lists); the traced bytes are what the Python objects
of a connection take.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench_gateway import CLIENT_PROCESSES, Client, _rss_kb, _split
from pulse.auth import issue_token
from pulse.channels import STATS
from pulse.settings import DEV_JWT_SECRET
from pulse_dev.emulators import free_port, wait_for_port

SNAPSHOT_ENV = "PULSE_BENCH_SNAPSHOT"  # where the traced gateway writes its snapshots
TRACE_FRAMES = 12
TOP_SITES = 60
# Allocation sites are put in a component by the first frame of the traceback (innermost
# first) whose file matches one of these, in order.
COMPONENTS = (
    ("ws_gateway/", "ws_gateway (WebSocket protocol, connection, session, wheel)"),
    ("websockets/", "websockets (sans-I/O protocol: handshake, frame parser)"),
    ("aiohttp/_websocket", "aiohttp WebSocket reader/writer"),
    ("aiohttp/web_ws", "aiohttp WebSocketResponse"),
    ("aiohttp/web_protocol", "aiohttp RequestHandler (the HTTP protocol)"),
    ("aiohttp/web_request", "aiohttp request"),
    ("aiohttp/web_response", "aiohttp response"),
    ("aiohttp/", "aiohttp, other"),
    ("multidict", "headers (multidict)"),
    ("yarl", "URL (yarl)"),
    ("uvloop", "uvloop transport and handles"),
    ("asyncio/", "asyncio (tasks, futures, streams)"),
    ("jwt/", "token verification (PyJWT)"),
    ("pulse/", "pulse library"),
)


@dataclass(frozen=True)
class Dump:
    snapshot: tracemalloc.Snapshot
    types: dict[str, tuple[int, int]]  # type name -> (objects, bytes by sys.getsizeof)


# -- inside the traced gateway ----------------------------------------------------------------


def _dump(path: Path) -> None:
    gc.collect()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    types = {name: (counts[name], sizes[name]) for name in counts}
    snapshot = tracemalloc.take_snapshot()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps((snapshot, types)))
    tmp.rename(path)


def serve() -> None:
    """``python -m ws_gateway`` under tracemalloc; SIGUSR1 writes snapshot 0, 1, … ."""
    tracemalloc.start(TRACE_FRAMES)
    base = Path(os.environ[SNAPSHOT_ENV])
    taken = [0]

    def on_signal(_signum: int, _frame: object) -> None:
        _dump(base.with_name(f"{base.name}.{taken[0]}"))
        taken[0] += 1

    signal.signal(signal.SIGUSR1, on_signal)
    from ws_gateway.__main__ import main  # noqa: PLC0415 - after tracing started

    main()


# -- the driver ---------------------------------------------------------------------------


async def _hold(pid: int, url: str, n: int, snap: Path | None) -> tuple[int, int, int, list[Dump]]:
    """Open ``n`` connections; RSS before and after, connections held, and the dumps."""
    dumps: list[Dump] = []

    async def dump() -> None:
        if snap is None:
            return
        target = snap.with_name(f"{snap.name}.{len(dumps)}")
        os.kill(pid, signal.SIGUSR1)
        while not target.exists():
            await asyncio.sleep(0.2)
        snapshot, types = pickle.loads(target.read_bytes())  # noqa: S301 - our own file
        dumps.append(Dump(snapshot, types))

    clients: list[Client] = []
    try:
        await asyncio.sleep(1.0)
        await dump()
        rss0 = _rss_kb(pid)
        clients = [await Client.start(url) for _ in range(CLIENT_PROCESSES)]
        opened = await asyncio.gather(
            *(
                c.call("open", n=k, channel=STATS)
                for c, k in zip(clients, _split(n, len(clients)), strict=True)
            )
        )
        held = sum(o["open"] for o in opened)
        await asyncio.sleep(2.0)
        rss_n = _rss_kb(pid)
        await dump()
        return rss0, rss_n, held, dumps
    finally:
        for c in clients:
            c.kill()
        for c in clients:
            await c.proc.wait()


def _run(n: int, *, traced: bool) -> tuple[int, int, int, list[Dump]]:
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-gwmem-"))
    port = free_port()
    snap = work / "snapshot" if traced else None
    env = {
        **os.environ,
        "PULSE_HTTP_PORT": str(port),
        "PULSE_HTTP_HOST": "127.0.0.1",
        "PULSE_REDIS_PREFIX": f"benchgwmem-{uuid.uuid4().hex[:8]}:",
        "PULSE_LOG_LEVEL": "warning",
        "PULSE_SEND_QUEUE_SIZE": "4096",  # as bench_gateway
        "PULSE_MAX_CONNECTIONS_PER_USER": str(n),
        "PYTHONUNBUFFERED": "1",
    }
    args = [sys.executable, "-m", "ws_gateway"]
    if snap is not None:
        env[SNAPSHOT_ENV] = str(snap)
        args = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    token = issue_token(DEV_JWT_SECRET, sub="bench", roles=["ops"], ttl_seconds=3600)
    with (work / "ws-gateway.log").open("ab") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60.0)
        return asyncio.run(_hold(proc.pid, f"ws://127.0.0.1:{port}/ws?token={token}", n, snap))
    finally:
        proc.kill()
        proc.wait()


def _component(trace: tracemalloc.StatisticDiff) -> str:
    for frame in reversed(trace.traceback):  # most recent call first
        for needle, name in COMPONENTS:
            if needle in frame.filename:
                return name
    return "other"


def _site(trace: tracemalloc.StatisticDiff) -> str:
    """The innermost frame, and the innermost gateway or library frame that led to it."""
    frames = list(reversed(trace.traceback))  # most recent call first
    first = f"{_short(frames[0].filename)}:{frames[0].lineno}"
    for frame in frames[1:]:
        if "site-packages" not in frame.filename and "/lib/python" not in frame.filename:
            return f"{first} <- {_short(frame.filename)}:{frame.lineno}"
    return first


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1].lstrip("0123456789./")
    return filename


def _report(held: int, before: Dump, after: Dump) -> None:
    diffs = after.snapshot.compare_to(before.snapshot, "traceback")
    traced = sum(d.size_diff for d in diffs)
    print(f"\ntraced by tracemalloc: {traced / held / 1024:.2f} KB per connection")
    by_component: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    for d in diffs:
        by_component[_component(d)] += d.size_diff
        blocks[_component(d)] += d.count_diff
    print("\nper connection, by component (bytes, allocations):")
    for name, size in by_component.most_common():
        print(f"  {size / held:8.0f} B {blocks[name] / held:6.1f}  {name}")
    print(f"\nper connection, top {TOP_SITES} allocation sites (bytes, allocations):")
    for d in sorted(diffs, key=lambda d: -d.size_diff)[:TOP_SITES]:
        print(f"  {d.size_diff / held:8.0f} B {d.count_diff / held:6.2f}  {_site(d)}")
    print("\nper connection, objects the collector tracks, by type (objects, getsizeof bytes):")
    rows = []
    for name, (count, size) in after.types.items():
        count0, size0 = before.types.get(name, (0, 0))
        if count - count0 >= held // 2:
            rows.append((size - size0, count - count0, name))
    for size, count, name in sorted(rows, reverse=True):
        print(f"  {size / held:8.0f} B {count / held:6.2f}  {name}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        serve()
        return 0
    plain = "--traced-only" not in argv
    numbers = [a for a in argv if a.isdigit()]
    n = int(numbers[0]) if numbers else 10_000
    if plain:
        rss0, rss_n, held, _ = _run(n, traced=False)
        print(
            f"plain gateway: RSS {rss0} kB idle, {rss_n} kB with {held} connections: "
            f"{(rss_n - rss0) / held:.2f} KB per connection",
            flush=True,
        )
    started = time.monotonic()
    _, _, held, dumps = _run(n, traced=True)
    print(f"traced gateway: {held} connections ({time.monotonic() - started:.0f} s)")
    _report(held, dumps[0], dumps[1])
    if plain:
        print(f"gateway.rss_kb_per_conn: {(rss_n - rss0) / held:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

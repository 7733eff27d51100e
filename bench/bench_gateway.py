"""ws-gateway: connections held, fan-out latency, deliveries/s (written by the gateway, and
read by the clients), memory per connection and a mass reconnect, against one real gateway
process driven by client processes."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pulse.auth import issue_token
from pulse.channels import ALERTS, PAYMENTS, STATS, ChannelPublisher
from pulse.clients import redis_client
from pulse.events import STATS as STATS_TYPE
from pulse.events import CloudEvent, new_event
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse_dev.emulators import free_port, local_redis, stop_process
from pulse_dev.load import percentile
from pulse_dev.testing import ServiceProcess
from service_metrics import MetricsReading, histogram_quantile, read_metrics, sample

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

CONNECTIONS = 10_000
CLIENT_PROCESSES = 3
FANOUT_EVENTS = 10
FANOUT_GAP = 0.2
FANOUT_WAIT = 15.0
FANOUT_FRAME_BYTES = 400  # about the size of a `stats` event frame
THROUGHPUT_SUBSCRIBERS = 2_000
THROUGHPUT_EVENTS = 200
RECONNECT_CLIENTS = 1_000
RECONNECT_BEFORE = 5
RECONNECT_DURING = 20
SENT_METRIC = "pulse_ws_messages_sent_total"
CLIENT_SCRIPT = Path(__file__).resolve().parent / "gateway_client.py"


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


GC_PAUSE = "pulse_gc_pause_seconds"
LONG_PAUSE_S = 0.025
GENERATIONS = ("0", "1", "2")


@dataclass
class GcPauses:
    """The gateway's garbage-collection pauses between two readings of its metrics."""

    counts: dict[str, float]  # by generation (2: full collections)
    ms: dict[str, float]  # time paused, by generation
    long: float  # pauses longer than LONG_PAUSE_S: each held up every client
    longest_ms: float  # the upper bound of the bucket of the longest pause

    @classmethod
    def between(cls, before: MetricsReading, after: MetricsReading) -> GcPauses:
        def delta(series: str, **labels: str) -> float:
            name = f"{GC_PAUSE}_{series}"
            return sample(after, name, **labels) - sample(before, name, **labels)

        counts = {g: delta("count", generation=g) for g in GENERATIONS}
        quick = sum(delta("bucket", generation=g, le=str(LONG_PAUSE_S)) for g in GENERATIONS)
        longest = [
            histogram_quantile(before, after, 1.0, GC_PAUSE, {"generation": g}) for g in GENERATIONS
        ]
        return cls(
            counts=counts,
            ms={g: delta("sum", generation=g) * 1000 for g in GENERATIONS},
            long=sum(counts.values()) - quick,
            longest_ms=max((q[0] * 1000 for q in longest if q is not None), default=0.0),
        )


def _gc_pauses(phase: str, before: MetricsReading, after: MetricsReading) -> tuple[float, float]:
    """Prints the gateway's garbage-collection pauses between two readings, by generation;
    returns their total in ms and how many lasted longer than LONG_PAUSE_S."""
    pauses = GcPauses.between(before, after)
    spent = "; ".join(
        f"{pauses.counts[g]:.0f} of generation {g} in {pauses.ms[g]:.0f} ms" for g in GENERATIONS
    )
    print(
        f"garbage collection, {phase}: {spent}; {pauses.long:.0f} pauses over "
        f"{LONG_PAUSE_S * 1000:.0f} ms, the longest at most {pauses.longest_ms:.0f} ms"
    )
    return sum(pauses.ms.values()), pauses.long


class Client:
    """One load-client process, driven by JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str) -> Client:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT_SCRIPT),
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**26,
        )
        return cls(proc)

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps({"cmd": cmd, **args}) + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process ended during {cmd}")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise RuntimeError(f"client {cmd}: {reply['error']}")
        return reply

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def _all(clients: list[Client], cmd: str, **args: Any) -> list[dict[str, Any]]:
    return await asyncio.gather(*(c.call(cmd, **args) for c in clients))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _send_floor_us(frame_bytes: int, pairs: int = 1000, rounds: int = 3) -> float:
    """What one small TCP send over loopback costs here, with no Python server around it:
    blocking ``socket.send`` of one frame to each of ``pairs`` connections (median of
    ``rounds``, microseconds per send). A fan-out to N connections needs N sends, so N times
    this is the floor of its time on this machine."""
    with socket.create_server(("127.0.0.1", 0), backlog=pairs) as server:
        port = server.getsockname()[1]
        readers, writers = [], []
        try:
            for _ in range(pairs):
                readers.append(socket.create_connection(("127.0.0.1", port)))
                conn, _ = server.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writers.append(conn)
            frame = b"x" * frame_bytes
            costs = []
            for _ in range(rounds):
                started = time.perf_counter()
                for conn in writers:
                    conn.send(frame)
                costs.append((time.perf_counter() - started) / pairs * 1e6)
                for reader in readers:
                    reader.recv(65536)
            return sorted(costs)[rounds // 2]
        finally:
            for sock in readers + writers:
                sock.close()


def _per_event(replies: list[dict[str, Any]], events: int = FANOUT_EVENTS) -> str:
    """Each event's arrival latencies, in the order they were appended: every client's list
    holds its connections' deliveries event after event (the next is appended only once every
    subscriber has the last)."""
    per: list[list[float]] = [[] for _ in range(events)]
    for reply in replies:
        got = reply["latencies"]
        each = len(got) // events
        for n in range(events):
            per[n].extend(got[n * each : (n + 1) * each])
    return ", ".join(
        f"{percentile(x, 50):.0f}/{percentile(x, 99):.0f}/{max(x):.0f}" for x in per if x
    )


async def fan_out(
    clients: list[Client],
    held: int,
    publish: Callable[[int], Awaitable[None]],
    events: int = FANOUT_EVENTS,
) -> tuple[list[float], list[float]]:
    """``events`` events published to `stats` (``publish(seq)``), each once the last reached
    all ``held`` subscribers; every delivery's ms to arrive and until read (each event's
    arrivals are printed)."""
    await _all(clients, "latency", channel=STATS)
    for seq in range(events):
        await publish(seq)
        await _wait_tally(clients, STATS, held * (seq + 1), FANOUT_WAIT)
        await asyncio.sleep(FANOUT_GAP)
    replies = await _all(clients, "latency", channel=STATS)
    print(f"fan-out, each event (p50/p99/max ms to arrive): {_per_event(replies, events)}")
    return (
        [x for r in replies for x in r["latencies"]],
        [x for r in replies for x in r["read_latencies"]],
    )


def _cpu_times(pid: int) -> tuple[float, float]:
    """A process's CPU seconds so far: in its own code, and in the kernel on its behalf."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _cpu_s(pid: int) -> float:
    return sum(_cpu_times(pid))


def _clients_cpu(clients: list[Client]) -> float:
    return sum(_cpu_s(c.proc.pid) for c in clients)


async def _wait_tally(
    clients: list[Client], channel: str, expected: int, wait_s: float
) -> tuple[int, list[dict[str, Any]]]:
    """Poll the clients until `expected` deliveries on `channel` (or `wait_s` passed)."""
    deadline = time.monotonic() + wait_s
    while True:
        tallies = await _all(clients, "tally", channel=channel)
        got = sum(t["count"] for t in tallies)
        if got >= expected or time.monotonic() > deadline:
            return got, tallies
        await asyncio.sleep(0.05)


def bench_event(seq: int) -> CloudEvent:
    """A `stats` event whose data carries ``seq`` and "t", the publisher's time now."""
    return new_event(
        type=STATS_TYPE, source="/pulse/bench", data={"t": time.time(), "seq": seq}, subject="bench"
    )


async def _append(publisher: ChannelPublisher, channel: str, seq: int) -> None:
    await publisher.append(bench_event(seq), [channel])


async def close_clients(clients: list[Client]) -> None:
    """End the load-client processes (the kernel closes their connections)."""
    for c in clients:
        c.kill()
    for c in clients:
        await c.proc.wait()


async def _measure(  # noqa: PLR0915
    gateway: ServiceProcess, url: str, metrics_url: str, redis_url: str, prefix: str
) -> dict[str, float]:
    assert gateway.proc is not None
    pid = gateway.proc.pid
    settings = PulseSettings(redis_url=redis_url)
    redis = redis_client(settings)
    publisher = ChannelPublisher(redis, prefix)
    clients: list[Client] = []
    figures: dict[str, float] = {}
    try:
        await asyncio.sleep(1.0)
        rss0 = _rss_kb(pid)
        gc_started = read_metrics(metrics_url)
        clients = [await Client.start(url) for _ in range(CLIENT_PROCESSES)]

        # Connections held (and subscribed to `stats`), and memory per connection.
        started = time.monotonic()
        opened = await asyncio.gather(
            *(
                c.call("open", n=n, channel=STATS)
                for c, n in zip(clients, _split(CONNECTIONS, len(clients)), strict=True)
            )
        )
        held = sum(o["open"] for o in opened)
        errors = sum(o["errors"] for o in opened)
        first = next((o["first_error"][0] for o in opened if o["first_error"]), "")
        print(
            f"opened {held} of {CONNECTIONS} connections in {time.monotonic() - started:.1f} s"
            f" ({errors} failed{': ' + first if first else ''}; "
            f"{sum(o['retries'] for o in opened)} subscribes retried after `unavailable`, "
            f"{sum(o['reconnects'] for o in opened)} connects retried after a reset)",
            flush=True,
        )
        await asyncio.sleep(2.0)
        rss_n = _rss_kb(pid)
        gc_opened = read_metrics(metrics_url)
        figures["gateway.connections"] = float(held)
        figures["gateway.rss_kb_per_conn"] = (rss_n - rss0) / held if held else 0.0
        print(f"gateway RSS {rss0} kB idle, {rss_n} kB with {held} subscribed connections")

        # Fan-out latency: one event to every subscriber, FANOUT_EVENTS times.
        floor = _send_floor_us(FANOUT_FRAME_BYTES)
        figures["gateway.send_floor_us"] = floor
        print(
            f"fan-out floor: a {FANOUT_FRAME_BYTES}-byte loopback send costs {floor:.1f} us here,"
            f" so {held} sends take at least {floor * held / 1000:.0f} ms of one core"
        )
        (user0, kernel0), ccpu0 = _cpu_times(pid), _clients_cpu(clients)
        gc_fanout = read_metrics(metrics_url)

        async def publish(seq: int) -> None:
            await _append(publisher, STATS, seq)

        lat, read = await fan_out(clients, held, publish)
        user, kernel = _cpu_times(pid)
        print(
            f"fan-out: CPU for {FANOUT_EVENTS * held} frames: gateway "
            f"{user - user0 + kernel - kernel0:.2f} s ({kernel - kernel0:.2f} s of it in the "
            f"kernel), client processes {_clients_cpu(clients) - ccpu0:.2f} s"
        )
        _gc_pauses("during the fan-out", gc_fanout, read_metrics(metrics_url))
        print(
            f"fan-out: {FANOUT_EVENTS} events to {held} subscribers, {len(lat)} of "
            f"{FANOUT_EVENTS * held} deliveries seen, max {max(lat, default=0):.0f} ms to arrive,"
            f" {max(read, default=0):.0f} ms until read"
        )
        figures["gateway.fanout_p50_ms"] = percentile(lat, 50)
        figures["gateway.fanout_p99_ms"] = percentile(lat, 99)
        # Against this run's baseline: one core sending to every subscriber, nothing else.
        # Below 1 the fan-out beat one core's floor (its writes are shared between threads).
        figures["gateway.fanout_p99_floor_ratio"] = (
            figures["gateway.fanout_p99_ms"] / (floor * held / 1000) if held else 0.0
        )
        figures["gateway.fanout_read_p50_ms"] = percentile(read, 50)
        figures["gateway.fanout_read_p99_ms"] = percentile(read, 99)

        # Sustained deliveries: THROUGHPUT_EVENTS appended at once to a channel held by
        # THROUGHPUT_SUBSCRIBERS of the connections.
        subbed = await _all(
            clients, "sub", n=THROUGHPUT_SUBSCRIBERS // len(clients), channel=ALERTS
        )
        subs = sum(r["subscribed"] for r in subbed)
        await asyncio.sleep(1.0)
        expected = subs * THROUGHPUT_EVENTS
        sent0 = sample(read_metrics(metrics_url), SENT_METRIC)
        cpu0, ccpu0 = _cpu_s(pid), _clients_cpu(clients)
        first_t = time.time()
        sem = asyncio.Semaphore(32)

        async def append_one(seq: int) -> None:
            async with sem:
                await _append(publisher, ALERTS, seq)

        await asyncio.gather(*(append_one(seq) for seq in range(THROUGHPUT_EVENTS)))
        got, tallies = await _wait_tally(clients, ALERTS, expected, 30.0)
        written = sample(read_metrics(metrics_url), SENT_METRIC) - sent0
        print(
            f"throughput: CPU gateway {_cpu_s(pid) - cpu0:.2f} s, "
            f"client processes {_clients_cpu(clients) - ccpu0:.2f} s"
        )
        # One delivery = one event frame to one connection: the gateway writes the frames
        # of a loop pass to a connection with one send (coalesced) and counts each of them.
        to_arrive = max(max(t["last_arrived"] for t in tallies) - first_t, 1e-6)
        to_read = max(max(t["last_read"] for t in tallies) - first_t, 1e-6)
        figures["gateway.deliveries_per_s"] = got / to_arrive
        figures["gateway.deliveries_read_per_s"] = got / to_read
        print(
            f"throughput: {THROUGHPUT_EVENTS} events to {subs} subscribers: {got} of "
            f"{expected} deliveries at the clients' sockets in {to_arrive:.2f} s (written), "
            f"read by the client processes in {to_read:.2f} s; the gateway counted "
            f"{written:.0f} frames written ({SENT_METRIC})"
        )

        # The same fan-out to the smaller channel, for comparison.
        await _all(clients, "latency", channel=ALERTS)
        for seq in range(FANOUT_EVENTS):
            await _append(publisher, ALERTS, THROUGHPUT_EVENTS + seq)
            await _wait_tally(clients, ALERTS, expected + subs * (seq + 1), FANOUT_WAIT)
            await asyncio.sleep(FANOUT_GAP)
        small = [x for r in await _all(clients, "latency", channel=ALERTS) for x in r["latencies"]]
        print(f"fan-out: {FANOUT_EVENTS} events to {subs} subscribers, {len(small)} deliveries")
        figures["gateway.fanout_2k_p50_ms"] = percentile(small, 50)
        figures["gateway.fanout_2k_p99_ms"] = percentile(small, 99)

        # Mass reconnect with since + epoch.
        split = _split(RECONNECT_CLIENTS, len(clients))
        ready = await asyncio.gather(
            *(
                c.call("recon_open", n=n, channel=PAYMENTS)
                for c, n in zip(clients, split, strict=True)
            )
        )
        print(f"reconnect: {sum(r['ready'] for r in ready)} clients subscribed to payments")
        for seq in range(RECONNECT_BEFORE):
            await _append(publisher, PAYMENTS, seq)
        await asyncio.sleep(1.0)
        await _all(clients, "recon_drop")
        for seq in range(RECONNECT_BEFORE, RECONNECT_BEFORE + RECONNECT_DURING):
            await _append(publisher, PAYMENTS, seq)
        back = await _all(
            clients, "recon_back", expect=RECONNECT_BEFORE + RECONNECT_DURING, wait_s=30.0
        )
        missed = sum(b["missed"] for b in back)
        print(
            f"reconnect: {RECONNECT_CLIENTS} clients back at once after {RECONNECT_DURING} "
            f"events: done in {max(b['done_s'] for b in back):.2f} s, missed {missed}, "
            f"duplicates {sum(b['dupes'] for b in back)}, "
            f"not recovered {sum(b['not_recovered'] for b in back)}, "
            f"connect errors {sum(b['errors'] for b in back)}, "
            f"subscribes retried after `unavailable` {sum(b['retries'] for b in back)}"
        )
        figures["gateway.reconnect_missed"] = float(missed)
        figures["gateway.reconnect_s"] = max(b["done_s"] for b in back)
        gc_end = read_metrics(metrics_url)
        _gc_pauses(f"opening {held} connections", gc_started, gc_opened)
        serving_ms, serving_long = _gc_pauses("serving them (every phase since)", gc_opened, gc_end)
        figures["gateway.gc_pause_serving_ms"] = serving_ms
        figures["gateway.gc_pauses_over_25ms_serving"] = serving_long
    finally:
        await close_clients(clients)
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    return figures


def gateway_env(port: int, prefix: str, redis_url: str, connections: int) -> dict[str, str]:
    """The environment of a benchmarked gateway process on ``port``."""
    return {
        "PULSE_HTTP_PORT": str(port),
        "PULSE_HTTP_HOST": "127.0.0.1",
        "PULSE_REDIS_PREFIX": prefix,
        "REDIS_URL": redis_url,
        "PULSE_LOG_LEVEL": "warning",
        # Every load client holds the one bench token: lift the per-user limit (50) above
        # the connections opened. The process-wide limit keeps its default (20,000).
        "PULSE_MAX_CONNECTIONS_PER_USER": str(connections),
    }


def bench_gateway() -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-gw-"))
    redis_url, redis_proc = local_redis(work)
    prefix = f"benchgw-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = gateway_env(port, prefix, redis_url, CONNECTIONS + RECONNECT_CLIENTS)
    env["PULSE_SEND_QUEUE_SIZE"] = "4096"
    token = issue_token(DEV_JWT_SECRET, sub="bench", roles=["ops"], ttl_seconds=3600)
    url = f"ws://127.0.0.1:{port}/ws?token={token}"
    print(
        f"setup: one ws-gateway process, {CLIENT_PROCESSES} client processes (a minimal "
        "WebSocket protocol over sockets read in 2 ms batches; the websockets library for "
        f"the reconnecting clients); {CONNECTIONS} connections on `stats`; fan-out latency = "
        "the kernel's arrival stamp at the client socket (read latency: when the client read "
        "it) - the publisher's time just before the append, over "
        f"{FANOUT_EVENTS} events, each once the last reached every client; "
        f"{THROUGHPUT_EVENTS} events at once to "
        f"{THROUGHPUT_SUBSCRIBERS} subscribers, a delivery being one event frame to one "
        "connection (deliveries/s: until the last arrived at a client socket, which on "
        "loopback is when the gateway wrote it; deliveries_read/s: until the client "
        f"processes read the last); {RECONNECT_CLIENTS} clients reconnecting "
        f"after {RECONNECT_DURING} events",
        flush=True,
    )
    gateway = ServiceProcess("ws_gateway", env, work / "ws-gateway.log")
    try:
        gateway.start(wait_port=port)
        figures = asyncio.run(
            _measure(gateway, url, f"http://127.0.0.1:{port}/metrics", redis_url, prefix)
        )
    finally:
        gateway.kill()
        if redis_proc is not None:
            stop_process(redis_proc)
    if os.environ.get("PULSE_BENCH_LOGS"):
        print(gateway.logs()[-4000:])
    for name, value in figures.items():
        print(f"{name}: {value:.1f}")
    return figures

"""Fan-out to 10,000 WebSocket subscribers: Pulse's gateway against Nchan, on one harness.

A fan-out's time on a small machine is mostly the kernel's, one ``send`` per subscriber, so
its latency figure says as much about the host as about the server. This script measures it
for Pulse's ws-gateway and for Nchan (the nginx module, written in C) one after the other in
the same run, with the same load-client processes, connections, frame bytes and latency
stamps as ``make bench ONLY=gateway``, and prints each server's figures and their ratios.

Nchan runs once with one nginx worker and once with as many workers as there are usable
CPUs (``--nchan-workers``). Its subscribers connect to ``/sub/<channel>`` and every event is
POSTed to ``/pub/<channel>``; the body posted is the frame Pulse's gateway writes for the
same event (``{"op":"event",...}``), so both servers write frames of the same size and the
clients read them the same way.

Needs nginx with Nchan (Debian: ``apt-get install nginx libnginx-mod-nchan``; ``make bench``
installs them through ``make peer-tools``).

Usage: ``make bench ONLY=peer``, or ``python bench/bench_peer.py [--connections N]
[--events K] [--rounds R] [--nchan-workers W]``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import (
    CLIENT_PROCESSES,
    FANOUT_FRAME_BYTES,
    Client,
    _append,
    _cpu_s,
    _send_floor_us,
    _split,
    bench_event,
    close_clients,
    fan_out,
    gateway_env,
)
from pulse.auth import issue_token
from pulse.channels import STATS, ChannelPublisher
from pulse.clients import redis_client
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse_dev.emulators import free_port, local_redis, stop_process, wait_for_port
from pulse_dev.load import percentile
from pulse_dev.testing import ServiceProcess
from ws_gateway.burst import usable_cpus
from ws_gateway.protocol import event_frame

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_JSON = {"Content-Type": "application/json"}
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")

_NGINX_CONF = """\
load_module {module};
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
daemon off;
events {{ worker_connections {nofile}; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  nchan_shared_memory_size 64m;
  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    location ~ ^/sub/(\\w+)$ {{
      nchan_subscriber websocket;
      nchan_channel_id $1;
    }}
    location ~ ^/pub/(\\w+)$ {{
      nchan_publisher;
      nchan_channel_id $1;
    }}
  }}
}}
"""


def _event_body(seq: int) -> bytes:
    """The frame Pulse's gateway would write for a `stats` event appended now."""
    event = bench_event(seq)
    offset = f"{int(time.time() * 1000)}-{seq}"
    return event_frame(STATS, offset, event.to_json().decode()).encode()


class Nchan:
    """One nginx with the Nchan module, in the foreground, on a free port."""

    def __init__(self, work: Path, workers: int) -> None:
        self.port = free_port()
        conf = work / "nginx.conf"
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        conf.write_text(
            _NGINX_CONF.format(
                module=NCHAN_MODULE, workers=workers, nofile=hard, work=work, port=self.port
            )
        )
        self.proc = subprocess.Popen(
            [_nginx(), "-c", str(conf), "-e", str(work / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=(work / "stderr.log").open("wb"),
        )
        wait_for_port(self.port, timeout=10.0)
        self.pids = [self.proc.pid, *_children(self.proc.pid, workers)]

    def cpu_s(self) -> float:
        return sum(_cpu_s(pid) for pid in self.pids)

    def stop(self) -> None:
        stop_process(self.proc)


def _nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None or not NCHAN_MODULE.exists():
        raise SystemExit(
            "bench_peer: needs nginx with the Nchan module "
            "(apt-get install nginx libnginx-mod-nchan, or make peer-tools)"
        )
    return found


def _children(pid: int, count: int) -> list[int]:
    """The processes whose parent is ``pid``, once there are ``count`` (nginx's workers)."""
    deadline = time.monotonic() + 10
    while True:
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if ppid == pid:
                kids.append(int(stat.parent.name))
        if len(kids) >= count or time.monotonic() > deadline:
            return kids
        time.sleep(0.05)


async def _fanout(
    clients: list[Client],
    held: int,
    events: int,
    publish: Callable[[int], Awaitable[None]],
    cpu: Callable[[], float],
) -> dict[str, float]:
    """``events`` events, each once the last reached every subscriber; the figures."""
    cpu0 = cpu()
    lat, read = await fan_out(clients, held, publish, events)
    spent = cpu() - cpu0
    return {
        "seen": float(len(lat)),
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "read_p99_ms": percentile(read, 99),
        "cpu_us_per_delivery": spent / max(len(lat), 1) * 1e6,
    }


async def _open(url: str, n: int, *, by_url: bool) -> tuple[list[Client], int]:
    clients = [await Client.start(url) for _ in range(CLIENT_PROCESSES)]
    opened = await asyncio.gather(
        *(
            c.call("open", n=k, channel=STATS, by_url=by_url)
            for c, k in zip(clients, _split(n, len(clients)), strict=True)
        )
    )
    held = sum(o["open"] for o in opened)
    errors = next((o["first_error"][0] for o in opened if o["first_error"]), "")
    if held < n:
        raise RuntimeError(f"opened {held} of {n} connections: {errors}")
    await asyncio.sleep(2.0)
    return clients, held


async def _pulse_round(work: Path, n: int, events: int) -> dict[str, float]:
    redis_url, redis_proc = local_redis(work)
    prefix = f"benchpeer-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = gateway_env(port, prefix, redis_url, n)
    token = issue_token(DEV_JWT_SECRET, sub="bench", roles=["ops"], ttl_seconds=3600)
    gateway = ServiceProcess("ws_gateway", env, work / "ws-gateway.log")
    redis = redis_client(PulseSettings(redis_url=redis_url))
    publisher = ChannelPublisher(redis, prefix)
    clients: list[Client] = []
    try:
        gateway.start(wait_port=port)
        assert gateway.proc is not None
        pid = gateway.proc.pid
        clients, held = await _open(f"ws://127.0.0.1:{port}/ws?token={token}", n, by_url=False)

        async def publish(seq: int) -> None:
            await _append(publisher, STATS, seq)

        return await _fanout(clients, held, events, publish, lambda: _cpu_s(pid))
    finally:
        await close_clients(clients)
        await redis.aclose()
        gateway.kill()
        if redis_proc is not None:
            stop_process(redis_proc)


async def _nchan_round(work: Path, n: int, events: int, workers: int) -> dict[str, float]:
    nchan = Nchan(work, workers)
    clients: list[Client] = []
    base = f"127.0.0.1:{nchan.port}"
    try:
        clients, held = await _open(f"ws://{base}/sub/{STATS}", n, by_url=True)
        async with aiohttp.ClientSession() as http:

            async def publish(seq: int) -> None:
                body = _event_body(seq)
                # With a text content type Nchan writes a text frame, as Pulse does.
                async with http.post(
                    f"http://{base}/pub/{STATS}", data=body, headers=_JSON
                ) as resp:
                    if resp.status not in (201, 202):
                        raise RuntimeError(f"nchan publish: HTTP {resp.status}")

            return await _fanout(clients, held, events, publish, nchan.cpu_s)
    finally:
        await close_clients(clients)
        nchan.stop()


def _line(name: str, f: dict[str, float]) -> str:
    return (
        f"{name}: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms to arrive, "
        f"p99 {f['read_p99_ms']:.1f} ms until read; {f['cpu_us_per_delivery']:.1f} us of the "
        f"server's CPU per delivery ({f['seen']:.0f} deliveries)"
    )


async def _rounds(
    connections: int, events: int, rounds: int, nchan_workers: int
) -> dict[str, float]:
    """Every server in turn, ``rounds`` times; the medians of the rounds and the ratios."""
    work = Path(tempfile.mkdtemp(prefix="pulse-bench-peer-"))
    workers = nchan_workers or usable_cpus()
    servers = ["pulse", "nchan-1"] + ([f"nchan-{workers}"] if workers > 1 else [])
    results: dict[str, list[dict[str, float]]] = {s: [] for s in servers}
    floors = []
    for r in range(rounds):
        floors.append(_send_floor_us(FANOUT_FRAME_BYTES))
        print(f"round {r + 1}: a {FANOUT_FRAME_BYTES}-byte loopback send costs {floors[-1]:.1f} us")
        for server in servers:
            place = work / f"{server}-{r}"
            place.mkdir()
            if server == "pulse":
                f = await _pulse_round(place, connections, events)
            else:
                f = await _nchan_round(place, connections, events, int(server.split("-")[1]))
            print(_line(f"  {server}", f), flush=True)
            results[server].append(f)
    figures: dict[str, float] = {"peer.send_floor_us": percentile(floors, 50)}
    for server, runs in results.items():
        key = server.replace("-", "_")
        for name in ("p50_ms", "p99_ms", "read_p99_ms", "cpu_us_per_delivery"):
            figures[f"peer.{key}_{name}"] = percentile([f[name] for f in runs], 50)
    for server in servers[1:]:
        key = server.replace("-", "_")
        figures[f"peer.pulse_vs_{key}_p99_ratio"] = (
            figures["peer.pulse_p99_ms"] / figures[f"peer.{key}_p99_ms"]
        )
    return figures


def _run(connections: int, events: int, rounds: int, nchan_workers: int) -> dict[str, float]:
    _nginx()
    print(
        f"setup: {connections} WebSocket subscribers of one channel in "
        f"{CLIENT_PROCESSES} client processes; {events} events per server and round, "
        "each once the last reached every subscriber; latency = the kernel's arrival stamp "
        "at the client socket (and when the client read it) - the publisher's time just "
        "before the append (Pulse: to Redis; Nchan: the HTTP POST); Pulse's gateway, Nchan "
        "with one nginx worker and Nchan with one per usable CPU, in turn, each round",
        flush=True,
    )
    figures = asyncio.run(_rounds(connections, events, rounds, nchan_workers))
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    return figures


def bench_peer() -> dict[str, float]:
    return _run(10_000, 10, 3, 0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_peer.py",
        description=(
            "Fan-out latency to N WebSocket subscribers: Pulse's ws-gateway against Nchan "
            "(nginx, C) with one worker and with one per CPU, on the same load clients, "
            "round after round; the medians of the rounds and Pulse's ratios to Nchan on "
            "the last lines."
        ),
    )
    parser.add_argument("--connections", type=int, default=10_000, help="subscribers (10000)")
    parser.add_argument("--events", type=int, default=10, help="events per server and round (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, servers in turn (3)")
    parser.add_argument(
        "--nchan-workers",
        type=int,
        default=0,
        help="nginx workers for the second Nchan run (default: the usable CPUs)",
    )
    args = parser.parse_args(argv)
    if args.connections < 1 or args.events < 1 or args.rounds < 1:
        parser.error("--connections, --events and --rounds must be at least 1")
    _run(args.connections, args.events, args.rounds, args.nchan_workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

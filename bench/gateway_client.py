"""Load-client process for bench_gateway: many WebSocket connections to one gateway.

Reads one JSON command per line on stdin, answers one JSON line on stdout:
  {"cmd":"open","n":N,"channel":C}        open N connections subscribed to C
  {"cmd":"latency","channel":C}            receive - append ms of each event on C since last call
  {"cmd":"sub","n":N,"channel":C}          subscribe the first N open connections to C too
  {"cmd":"tally","channel":C}              deliveries on C and the last receipt time
  {"cmd":"recon_open","n":N,"channel":C}   N more connections on C that track offset + epoch
  {"cmd":"recon_drop"}                     close them
  {"cmd":"recon_back","expect":K,"timeout":T}  reconnect all at once with since + epoch,
                                           wait until each holds K distinct offsets
  {"cmd":"quit"}
Every event's data carries "t", the publisher's time.time() just before the append.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import sys
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

OPEN_CONCURRENCY = 100
SUBSCRIBE_TRIES = 50


def _backoff(attempt: int) -> float:
    return random.uniform(0.05, min(2.0, 0.1 * 2**attempt))


async def _subscribe(ws: ClientConnection, request: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Subscribe, retrying `unavailable` (the protocol says: retry) with jittered backoff;
    the `subscribed` frame and the number of retries."""
    msg = orjson.dumps(request).decode()
    for attempt in range(SUBSCRIBE_TRIES):
        await ws.send(msg)
        reply = orjson.loads(await ws.recv())
        if reply.get("op") == "subscribed":
            return reply, attempt
        if reply.get("code") != "unavailable":
            break
        await asyncio.sleep(_backoff(attempt))
    raise RuntimeError(f"subscribe refused: {reply}")


class Pool:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.latencies: dict[str, list[float]] = {}
        self.tally: dict[str, int] = {}
        self.last_receipt: dict[str, float] = {}
        self.recon: list[Recon] = []
        self.retries = 0
        self.subscribed: dict[str, int] = {}
        self.sub_attempts: dict[int, int] = {}
        self.pending: set[asyncio.Task[None]] = set()

    async def _open_one(self, channel: str, sem: asyncio.Semaphore) -> None:
        async with sem:
            ws = await connect(self.url, compression=None, max_size=2**22, open_timeout=60)
            try:
                _, retries = await _subscribe(ws, {"op": "subscribe", "channel": channel})
            except BaseException:
                await ws.close()
                raise
        self.retries += retries
        self.conns.append(ws)
        self.readers.append(asyncio.create_task(self._read(ws)))

    async def open(self, n: int, channel: str) -> dict[str, Any]:
        sem = asyncio.Semaphore(OPEN_CONCURRENCY)
        results = await asyncio.gather(
            *(self._open_one(channel, sem) for _ in range(n)), return_exceptions=True
        )
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        return {
            "open": len(self.conns),
            "errors": len(errors),
            "first_error": errors[:1],
            "retries": self.retries,
        }

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                now = time.time()
                frame = orjson.loads(raw)
                op = frame.get("op")
                if op != "event":
                    self._control(ws, frame)
                    continue
                channel = frame["channel"]
                self.tally[channel] = self.tally.get(channel, 0) + 1
                self.last_receipt[channel] = now
                sent = frame["event"]["data"]["t"]
                self.latencies.setdefault(channel, []).append((now - sent) * 1000)

    def _control(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        """A `subscribed` or error frame for a `sub` command (the reader owns recv)."""
        channel = frame.get("channel", "")
        if frame.get("op") == "subscribed":
            self.subscribed[channel] = self.subscribed.get(channel, 0) + 1
        elif frame.get("code") == "unavailable":
            self.retries += 1
            attempt = self.sub_attempts.get(id(ws), 0)
            self.sub_attempts[id(ws)] = attempt + 1
            msg = orjson.dumps({"op": "subscribe", "channel": channel}).decode()
            task = asyncio.create_task(self._resend(ws, msg, _backoff(attempt)))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _resend(self, ws: ClientConnection, msg: str, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(Exception):
            await ws.send(msg)

    async def sub(self, n: int, channel: str) -> dict[str, Any]:
        """Subscribe the first n connections to channel too; wait for every `subscribed`."""
        msg = orjson.dumps({"op": "subscribe", "channel": channel}).decode()
        targets = self.conns[:n]
        self.sub_attempts = {}
        before = self.retries
        for i in range(0, len(targets), OPEN_CONCURRENCY):
            await asyncio.gather(*(ws.send(msg) for ws in targets[i : i + OPEN_CONCURRENCY]))
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + 30
        while self.subscribed.get(channel, 0) < len(targets) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"subscribed": self.subscribed.get(channel, 0), "retries": self.retries - before}


class Recon:
    """One connection that keeps its channel's offset + epoch, as a real client does."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self.offset: str | None = None
        self.epoch: str | None = None
        self.seen: set[str] = set()
        self.dupes = 0
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.recovered: bool | None = None
        self.retries = 0

    async def start(self, sem: asyncio.Semaphore) -> None:
        async with sem:
            ws = await connect(self.url, compression=None, max_size=2**22, open_timeout=60)
            req: dict[str, Any] = {"op": "subscribe", "channel": self.channel}
            if self.offset is not None:
                req["since"] = self.offset
                if self.epoch is not None:
                    req["epoch"] = self.epoch
            self.ws = ws
            reply, self.retries = await _subscribe(ws, req)
        self._on_subscribed(reply)
        self.reader = asyncio.create_task(self._read(ws))

    def _on_subscribed(self, frame: dict[str, Any]) -> None:
        self.epoch = frame["epoch"]
        self.recovered = frame["recovered"]
        if self.offset is None:
            self.offset = frame["offset"]

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                frame = orjson.loads(raw)
                op = frame.get("op")
                if op == "subscribed":
                    self._on_subscribed(frame)
                elif op == "event":
                    offset = frame["offset"]
                    if offset in self.seen:
                        self.dupes += 1
                    self.seen.add(offset)
                    self.offset = offset

    async def stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


async def recon_open(pool: Pool, n: int, channel: str) -> dict[str, Any]:
    pool.recon = [Recon(pool.url, channel) for _ in range(n)]
    sem = asyncio.Semaphore(OPEN_CONCURRENCY)
    results = await asyncio.gather(*(r.start(sem) for r in pool.recon), return_exceptions=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(r.epoch is None for r in pool.recon):
        await asyncio.sleep(0.05)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    ready = sum(r.epoch is not None for r in pool.recon)
    return {"ready": ready, "errors": len(errors), "first_error": errors[:1]}


async def recon_back(pool: Pool, expect: int, wait_s: float) -> dict[str, Any]:
    started = time.monotonic()
    sem = asyncio.Semaphore(len(pool.recon) or 1)  # all at once
    results = await asyncio.gather(*(r.start(sem) for r in pool.recon), return_exceptions=True)
    deadline = started + wait_s
    while time.monotonic() < deadline and any(len(r.seen) < expect for r in pool.recon):
        await asyncio.sleep(0.01)
    done_s = time.monotonic() - started
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "missed": sum(max(0, expect - len(r.seen)) for r in pool.recon),
        "dupes": sum(r.dupes for r in pool.recon),
        "not_recovered": sum(r.recovered is not True for r in pool.recon),
        "errors": len(errors),
        "first_error": errors[:1],
        "done_s": done_s,
        "retries": sum(r.retries for r in pool.recon),
    }


async def handle(pool: Pool, cmd: dict[str, Any]) -> dict[str, Any]:  # noqa: PLR0911
    name = cmd["cmd"]
    if name == "open":
        return await pool.open(cmd["n"], cmd["channel"])
    if name == "latency":
        return {"latencies": pool.latencies.pop(cmd["channel"], [])}
    if name == "sub":
        return await pool.sub(cmd["n"], cmd["channel"])
    if name == "tally":
        ch = cmd["channel"]
        return {"count": pool.tally.get(ch, 0), "last": pool.last_receipt.get(ch, 0.0)}
    if name == "recon_open":
        return await recon_open(pool, cmd["n"], cmd["channel"])
    if name == "recon_drop":
        await asyncio.gather(*(r.stop() for r in pool.recon))
        return {"dropped": len(pool.recon)}
    if name == "recon_back":
        return await recon_back(pool, cmd["expect"], cmd["wait_s"])
    return {"error": f"unknown command {name}"}


async def main(url: str) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pool = Pool(url)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = orjson.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            reply = await handle(pool, cmd)
        except Exception as exc:
            reply = {"error": repr(exc)}
        sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
        sys.stdout.flush()
    # The parent ends this process; the kernel closes the sockets.


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

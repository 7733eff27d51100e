"""Load-client process for bench_gateway: many WebSocket connections to one gateway.

Reads one JSON command per line on stdin, answers one JSON line on stdout:
  {"cmd":"open","n":N,"channel":C}        open N connections subscribed to C
                                           (with "by_url":true: only connected, the URL
                                           names the channel, as Nchan's do)
  {"cmd":"latency","channel":C}            ms from the append to each event's arrival (kernel
                                           receive stamp) and to its read, on C since last call
  {"cmd":"sub","n":N,"channel":C}          subscribe the first N open connections to C too
  {"cmd":"tally","channel":C}              deliveries on C: event frames this process read
                                           (one per event per connection, however many
                                           the gateway wrote in one send), the kernel's
                                           arrival stamp of the newest and when it was read
  {"cmd":"recon_open","n":N,"channel":C}   N more connections on C that track offset + epoch
  {"cmd":"recon_drop"}                     close them
  {"cmd":"recon_back","expect":K,"timeout":T}  reconnect all at once with since + epoch,
                                           wait until each holds K distinct offsets
  {"cmd":"quit"}
Every event's data carries "t", the publisher's time.time() just before the append.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import resource
import select
import socket
import struct
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect

OPEN_CONCURRENCY = 100
SUBSCRIBE_TRIES = 50
CONNECT_TRIES = 5
_CRLF2 = b"\r\n\r\n"


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


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame; client frames must be masked (RFC 6455 5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return header + mask + masked


# Linux: SO_TIMESTAMPNS asks the kernel to stamp each received segment with the wall-clock
# time it arrived (the socket module has no name for it); recvmsg returns the stamp of the
# last segment read as SCM_TIMESTAMPNS (same number) ancillary data.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
# How every event frame starts (ws_gateway.protocol.event_frame); its channel follows.
_EVENT_HEAD = b'{"op":"event","channel":"'
# The load connections' sockets are read in batches this often (see Pool.poll_forever).
READ_INTERVAL_S = 0.002


class RawWs:
    """A minimal WebSocket client over a non-blocking socket, for holding many connections
    cheaply.

    The load clients must not be the bottleneck of what they measure: 10,000 connections
    in three processes on a small machine. The websockets library costs a task wake-up and
    a few layers per frame; this reads the socket itself when it is readable and parses
    server frames (never masked, never fragmented by the gateway) in place. Each read
    carries two times: when the kernel received the bytes (``SO_TIMESTAMPNS``: the moment
    the gateway's write reached this client, whatever this process was busy with) and when
    this process read them. It answers pings and close frames; it sends only small masked
    text frames. Its socket is read by the pool's poller, not the event loop."""

    def __init__(self, pool: Pool, sock: socket.socket) -> None:
        self.pool = pool
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = self.loop.create_future()
        self.buf = b""
        self.out = b""  # what the socket did not take yet (rare: client frames are small)
        self.handshake_done = False
        self.replies: asyncio.Queue[dict[str, Any]] | None = None
        self.closed = False

    @classmethod
    async def connect(cls, pool: Pool, host: str, port: int, request: bytes) -> RawWs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)  # noqa: FBT003 - the socket API
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, (host, port))
        except OSError:
            sock.close()
            raise
        conn = cls(pool, sock)
        pool.watch(conn)
        conn._send(request)
        await asyncio.wait_for(conn.upgraded, 60)
        return conn

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.unwatch(self)
            if self.out:
                self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during handshake"))

    def _send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.out = data[sent:]
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.loop.remove_writer(self.sock.fileno())

    def send_text(self, text: str) -> None:
        self._send(_client_frame(0x1, text.encode()))

    def readable(self) -> None:
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 16, _ANCILLARY)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        now = time.time()
        arrived = now
        for level, kind, stamp in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack(stamp)
                arrived = sec + nsec / 1e9
        buf = self.buf + data if self.buf else data
        if not self.handshake_done:
            buf = self._handshake(buf)
            if not self.handshake_done:
                return
        self.buf = self._frames(buf, arrived, now)

    def _handshake(self, buf: bytes) -> bytes:
        """The bytes after the 101 response, once it is whole."""
        end = buf.find(_CRLF2)
        if end < 0:
            self.buf = buf
            return b""
        status = buf[: buf.find(b"\r\n")]
        if b" 101 " not in status:
            self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
            self.close()
            return b""
        self.handshake_done = True
        self.upgraded.set_result(None)
        return buf[end + 4 :]

    def _frames(self, buf: bytes, arrived: float, now: float) -> bytes:
        """Handle every whole frame in ``buf``; the incomplete rest."""
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, length, head = buf[pos], buf[pos + 1] & 0x7F, 2
            if length >= 126:
                head = 4 if length == 126 else 10
                if size - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + head], "big")
            end = pos + head + length
            if end > size:
                break
            payload = buf[pos + head : end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self.pool.on_text(self, payload, arrived, now)
            elif opcode in (0x8, 0x9):
                # ping -> pong with its payload; close -> close echoing the code (the
                # server then closes the TCP connection)
                reply = (0xA, payload) if opcode == 0x9 else (0x8, payload[:2])
                self._send(_client_frame(*reply))
        return buf[pos:] if pos < size else b""

    async def request_reply(self, text: str) -> dict[str, Any]:
        """Send ``text`` and wait for the next non-event frame (while nothing else waits)."""
        self.replies = asyncio.Queue()
        try:
            self.send_text(text)
            return await asyncio.wait_for(self.replies.get(), 60)
        finally:
            self.replies = None


class Pool:
    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.request_head = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        )
        self.conns: list[RawWs] = []
        # Per channel, the event frames read: payload, the kernel's arrival stamp, and the
        # moment this process read it.
        self.events: dict[str, list[tuple[bytes, float, float]]] = {}
        # Per channel, event frames read, and the newest one's arrival stamp and read time.
        self.tally: dict[str, int] = {}
        self.last_arrived: dict[str, float] = {}
        self.last_read: dict[str, float] = {}
        self.recon: list[Recon] = []
        self.retries = 0
        self.reconnects = 0
        self.subscribed: dict[str, int] = {}
        self.sub_attempts: dict[int, int] = {}
        self.pending: set[asyncio.Task[None]] = set()
        self.epoll = select.epoll()
        self.watched: dict[int, RawWs] = {}

    def watch(self, conn: RawWs) -> None:
        fd = conn.sock.fileno()
        self.watched[fd] = conn
        self.epoll.register(fd, select.EPOLLIN)

    def unwatch(self, conn: RawWs) -> None:
        fd = conn.sock.fileno()
        if self.watched.pop(fd, None) is not None:
            self.epoll.unregister(fd)

    async def poll_forever(self) -> None:
        """Read every readable load connection, then sleep READ_INTERVAL_S, forever.

        The clients stand in for browsers on other machines, whose wake-ups cost the gateway
        nothing. Here they share its two cores: a process sleeping in the event loop's
        epoll on these sockets would be woken by the gateway's every write, charging the
        wake-up to the gateway's send and taking the CPU it fans out on. Reading in batches
        keeps the clients' share small; the kernel's arrival stamps keep the latencies exact.
        """
        while True:
            for fd, _events in self.epoll.poll(0):
                conn = self.watched.get(fd)
                if conn is not None:
                    conn.readable()
            await asyncio.sleep(READ_INTERVAL_S)

    async def _connect(self) -> RawWs:
        key = base64.b64encode(os.urandom(16)).decode()
        request = f"{self.request_head}Sec-WebSocket-Key: {key}\r\n\r\n".encode()
        return await RawWs.connect(self, self.host, self.port, request)

    async def _connect_retrying(self) -> RawWs:
        """Connect as a real client does: a connection reset (the listen queue overflowed
        while the server was busy) is retried with jittered backoff, and counted."""
        for attempt in range(CONNECT_TRIES - 1):
            try:
                return await self._connect()
            except ConnectionError:
                self.reconnects += 1
                await asyncio.sleep(_backoff(attempt))
        return await self._connect()

    async def _open_one(self, channel: str, sem: asyncio.Semaphore, *, by_url: bool) -> None:
        async with sem:
            conn = await self._connect_retrying()
            if by_url:  # the URL names the channel (a server other than Pulse's)
                self.conns.append(conn)
                return
            msg = orjson.dumps({"op": "subscribe", "channel": channel}).decode()
            for attempt in range(SUBSCRIBE_TRIES):
                reply = await conn.request_reply(msg)
                if reply.get("op") == "subscribed":
                    break
                if reply.get("code") != "unavailable":
                    conn.close()
                    raise RuntimeError(f"subscribe refused: {reply}")
                self.retries += 1
                await asyncio.sleep(_backoff(attempt))
        self.conns.append(conn)

    async def open(self, n: int, channel: str, *, by_url: bool = False) -> dict[str, Any]:
        sem = asyncio.Semaphore(OPEN_CONCURRENCY)
        results = await asyncio.gather(
            *(self._open_one(channel, sem, by_url=by_url) for _ in range(n)),
            return_exceptions=True,
        )
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        return {
            "open": len(self.conns),
            "errors": len(errors),
            "first_error": errors[:1],
            "retries": self.retries,
            "reconnects": self.reconnects,
        }

    def on_text(self, conn: RawWs, payload: bytes, arrived: float, now: float) -> None:
        if payload.startswith(_EVENT_HEAD):
            # Counted now, parsed when the latencies are asked for: this process shares the
            # server's cores, so it does as little as it can while a fan-out is under way.
            end = payload.find(b'"', len(_EVENT_HEAD))
            channel = payload[len(_EVENT_HEAD) : end].decode()
            self.tally[channel] = self.tally.get(channel, 0) + 1
            if arrived > self.last_arrived.get(channel, 0.0):
                self.last_arrived[channel] = arrived
            self.last_read[channel] = now
            self.events.setdefault(channel, []).append((payload, arrived, now))
            return
        frame = orjson.loads(payload)
        if conn.replies is not None:
            conn.replies.put_nowait(frame)
        else:
            self._control(conn, frame)

    def latencies(self, channel: str) -> tuple[list[float], list[float]]:
        """Per event frame read on ``channel`` since the last call, in the order read: ms
        from the publisher's time (the event's data "t") to its arrival, and to its read."""
        arrivals, reads = [], []
        for payload, arrived, now in self.events.pop(channel, []):
            sent = orjson.loads(payload)["event"]["data"]["t"]
            arrivals.append((arrived - sent) * 1000)
            reads.append((now - sent) * 1000)
        return arrivals, reads

    def _control(self, conn: RawWs, frame: dict[str, Any]) -> None:
        """A `subscribed` or error frame for a `sub` command."""
        channel = frame.get("channel", "")
        if frame.get("op") == "subscribed":
            self.subscribed[channel] = self.subscribed.get(channel, 0) + 1
        elif frame.get("code") == "unavailable":
            self.retries += 1
            attempt = self.sub_attempts.get(id(conn), 0)
            self.sub_attempts[id(conn)] = attempt + 1
            msg = orjson.dumps({"op": "subscribe", "channel": channel}).decode()
            task = asyncio.create_task(self._resend(conn, msg, _backoff(attempt)))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _resend(self, conn: RawWs, msg: str, delay: float) -> None:
        await asyncio.sleep(delay)
        conn.send_text(msg)

    async def sub(self, n: int, channel: str) -> dict[str, Any]:
        """Subscribe the first n connections to channel too; wait for every `subscribed`."""
        msg = orjson.dumps({"op": "subscribe", "channel": channel}).decode()
        targets = self.conns[:n]
        self.sub_attempts = {}
        before = self.retries
        for i in range(0, len(targets), OPEN_CONCURRENCY):
            for conn in targets[i : i + OPEN_CONCURRENCY]:
                conn.send_text(msg)
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
        return await pool.open(cmd["n"], cmd["channel"], by_url=cmd.get("by_url", False))
    if name == "latency":
        arrivals, reads = pool.latencies(cmd["channel"])
        return {"latencies": arrivals, "read_latencies": reads}
    if name == "sub":
        return await pool.sub(cmd["n"], cmd["channel"])
    if name == "tally":
        ch = cmd["channel"]
        return {
            "count": pool.tally.get(ch, 0),
            "last_arrived": pool.last_arrived.get(ch, 0.0),
            "last_read": pool.last_read.get(ch, 0.0),
        }
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
    poller = asyncio.create_task(pool.poll_forever())
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
    poller.cancel()
    # The parent ends this process; the kernel closes the sockets.


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))

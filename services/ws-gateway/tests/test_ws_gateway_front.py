"""The one port and the gateway's WebSocket protocol, frame by frame.

A connection's first request decides who reads it (the gateway's WebSocket protocol for
``GET /ws``, aiohttp for the rest); an HTTP client may also send its upgrade on a connection
kept alive after other requests. These tests speak HTTP/1.1 on one raw TCP connection and
the WebSocket protocol with websockets' sans-I/O client over it, so the connection is
certainly the same one, and the frames are exactly the ones sent: a fragmented message is
one message, checked as UTF-8 and against the size limit as a whole.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from pulse_dev.testing import GatewayFactory, RunningGateway
from ws_gateway.front import FrontDoor

SECRET = "ws-gateway-front-secret-0123456789abcdef"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def gateway(module_gateways: GatewayFactory) -> RunningGateway:
    return module_gateways.start(secret=SECRET)


class _Recorder(asyncio.Protocol):
    """A protocol the front door may hand a connection to: what it was given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.BaseTransport | None = None
        self.data = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol


def _door(chunks: list[bytes], *, eof: bool = False) -> tuple[_Transport, _Recorder | None]:
    """Feed ``chunks`` to a front door; the transport and the protocol it went to, if any."""
    transport = _Transport()
    door = FrontDoor(lambda: _Recorder("http"), lambda: _Recorder("websocket"))
    transport.set_protocol(door)
    door.connection_made(transport)
    for chunk in chunks:  # as a transport does: to its protocol of the moment
        protocol = transport.get_protocol()
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(chunk)
    if eof:
        door.eof_received()
    chosen = transport.protocol
    if chosen is door:
        return transport, None
    assert isinstance(chosen, _Recorder)
    assert chosen.transport is transport
    return transport, chosen


@pytest.mark.parametrize(
    ("request_line", "goes_to"),
    [
        (b"GET /ws?token=t HTTP/1.1", "websocket"),
        (b"GET /ws HTTP/1.1", "websocket"),
        (b"GET /wsx HTTP/1.1", "http"),
        (b"GET /sse?channels=stats HTTP/1.1", "http"),
        (b"POST /ws HTTP/1.1", "http"),
        (b"HEAD /ws HTTP/1.1", "http"),
        (b"GET / HTTP/1.1", "http"),
    ],
)
def test_the_first_request_line_decides_who_serves_the_connection(
    request_line: bytes, goes_to: str
) -> None:
    head = request_line + b"\r\nHost: gateway\r\n\r\n"
    # one byte at a time: nothing is decided before the line is whole, nothing is lost
    _, chosen = _door([head[i : i + 1] for i in range(len(head))])
    assert chosen is not None
    assert (chosen.name, chosen.data) == (goes_to, head)


def test_a_connection_without_a_request_line_goes_to_aiohttp_whole() -> None:
    _, waiting = _door([b"GET /ws?token=" + b"t" * 100])
    assert waiting is None  # still reading the line
    _, endless = _door([b"GET /ws?token=" + b"t" * 9000])
    assert endless is not None
    assert endless.name == "http"  # aiohttp refuses a line that long
    _, cut_short = _door([b"GET /w"], eof=True)
    assert cut_short is not None
    assert (cut_short.name, cut_short.data) == ("http", b"GET /w")


async def _http_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    """One GET on a kept-alive connection: its status and body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, await asyncio.wait_for(reader.readexactly(length), 10)


class _Client:
    """websockets' sans-I/O client over an asyncio stream."""

    def __init__(self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.protocol = ClientProtocol(parse_uri(url))
        self.reader = reader
        self.writer = writer
        self.pending: list[object] = []

    def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)

    async def event(self) -> Response | Frame:
        """The next handshake response or frame from the server."""
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.pending.extend(self.protocol.events_received())
            assert data or self.pending, "the server closed without a frame"
        event = self.pending.pop(0)
        assert isinstance(event, Response | Frame)
        return event

    async def handshake(self) -> Response:
        self.protocol.send_request(self.protocol.connect())
        self.flush()
        response = await self.event()
        assert isinstance(response, Response)
        return response

    async def ask(self, **frame: object) -> dict[str, object]:
        self.protocol.send_text(orjson.dumps(frame))
        self.flush()
        return await self.reply()

    async def reply(self) -> dict[str, object]:
        reply = await self.event()
        assert isinstance(reply, Frame)
        assert reply.opcode is Opcode.TEXT
        answer: dict[str, object] = orjson.loads(reply.data)
        return answer


async def _connections(gateway: RunningGateway) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.http}/metrics") as resp:
        text = await resp.text()
    line = next(x for x in text.splitlines() if x.startswith("pulse_ws_connections "))
    return float(line.rsplit(" ", 1)[1])


async def test_an_upgrade_after_http_requests_on_a_kept_alive_connection_is_served(
    gateway: RunningGateway,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        assert (await _http_get(reader, writer, "/healthz"))[0] == 200
        assert (await _http_get(reader, writer, "/console/config.json"))[0] == 200

        client = _Client(gateway.ws_url("kept-alive"), reader, writer)
        assert (await client.handshake()).status_code == 101
        assert await client.ask(op="ping") == {"op": "pong"}
        subscribed = await client.ask(op="subscribe", channel="account:kept-alive")
        assert subscribed["op"] == "subscribed"

        client.protocol.send_close(1000)
        client.flush()
        close = await client.event()
        assert isinstance(close, Frame)
        assert close.opcode is Opcode.CLOSE
    finally:
        writer.close()
    # the connection's place and subscription are given back
    async with asyncio.timeout(20):
        while await _connections(gateway) != 0:
            await asyncio.sleep(0.1)


async def test_a_refused_upgrade_after_an_http_request_is_the_same_problem_as_a_first_one(
    gateway: RunningGateway,
) -> None:
    bad = f"{gateway.ws}?token=not-a-jwt"
    for warm_up in (False, True):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            if warm_up:
                assert (await _http_get(reader, writer, "/healthz"))[0] == 200
            response = await _Client(bad, reader, writer).handshake()
        finally:
            writer.close()
        assert response.status_code == 401, warm_up
        assert response.headers["Content-Type"] == "application/problem+json"
        assert "invalid_token" in response.headers["WWW-Authenticate"]
        assert orjson.loads(response.body)["detail"] == "the token is not valid"


async def _opened(gateway: RunningGateway, sub: str) -> _Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    client = _Client(gateway.ws_url(sub), reader, writer)
    assert (await client.handshake()).status_code == 101
    return client


async def _close_code(client: _Client) -> int:
    """The code of the server's close frame (data frames before it are skipped)."""
    while True:
        frame = await client.event()
        assert isinstance(frame, Frame)
        if frame.opcode is Opcode.CLOSE:
            return Close.parse(frame.data).code


async def test_a_fragmented_message_is_one_message_checked_as_a_whole(
    gateway: RunningGateway,
) -> None:
    client = await _opened(gateway, "fragments")
    try:
        # a character split between two fragments: valid text once joined
        text = '{"op":"ping","note":"café"}'.encode()
        cut = text.index("é".encode()) + 1
        client.protocol.send_text(text[:cut], fin=False)
        client.protocol.send_continuation(text[cut:], fin=True)
        client.flush()
        assert await client.reply() == {"op": "pong"}
        # bytes that are not UTF-8, in the second fragment: 1007
        client.protocol.send_text(b'{"op":"ping","note":"', fin=False)
        client.protocol.send_continuation(b'\xff"}', fin=True)
        client.flush()
        assert await _close_code(client) == 1007
    finally:
        client.writer.close()

    client = await _opened(gateway, "fragments")
    try:
        # fragments each under the limit (64 KB), together over it: 1009
        client.protocol.send_text(b'{"op":"ping","pad":"' + b"x" * 30_000, fin=False)
        for fin in (False, True):
            client.protocol.send_continuation(b"x" * 30_000, fin=fin)
        client.flush()
        assert await _close_code(client) == 1009
    finally:
        client.writer.close()

"""Generated WebSocket frames against a real gateway process, while another client listens.

Hypothesis builds batches of frames: text that is not JSON, JSON of every shape, the real ops
with fields of the wrong types, unknown ops, binary frames, bytes that are not UTF-8 sent as
text, frames over the size limit, and floods of operations. Each batch goes over its own
connection, followed by a sentinel (an unsubscribe from a unique channel) whose reply marks
the end of the batch's answers. Every answer must be a documented server frame (an
``error`` with a known code and a message, or a normal reply) or a documented close code.
Meanwhile an observer, subscribed to its account channel, receives every event published
there, in order. After the run the process must still be up with no unhandled exception in
its log; ``fuzz.ws_crashes`` counts a dead process and every such exception.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pulse.channels import ChannelPublisher
from pulse.events import PAYMENT_CREATED, new_event
from pulse_dev.testing import GatewayFactory, RunningGateway
from ws_gateway.protocol import ErrorCode

pytestmark = pytest.mark.timeout(240)

SECRET = "fuzz-gateway-secret-0123456789abcdef"
MAX_FRAME = 4096  # the gateway's frame limit in this test: huge frames stay cheap to build
EXAMPLES = 400
OPS_BURST = 50  # the gateway's default client_ops_burst
SERVER_OPS = frozenset(
    {"subscribed", "unsubscribed", "event", "presence", "refreshed", "message", "error", "pong"}
    | {"published"}
)
ERROR_CODES = frozenset(code.value for code in ErrorCode)
# 1009 frame too large, 1007 a text frame that is not UTF-8, 4029 too many client ops.
CLOSE_CODES = frozenset({1007, 1009, 4029})
ABNORMAL_CLOSURE = 1006  # the connection ended without a close frame


@pytest.fixture
def gateway(gateways: GatewayFactory) -> RunningGateway:
    return gateways.start(
        secret=SECRET, PULSE_LOG_LEVEL="info", PULSE_MAX_MESSAGE_BYTES=str(MAX_FRAME)
    )


# -- the frames -------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    data: str | bytes
    text: bool = True  # bytes with text=True: a text frame that is not UTF-8

    def __repr__(self) -> str:
        kind = "text" if self.text else "binary"
        if len(self.data) <= 100:
            return f"Frame({self.data!r}, {kind})"
        return f"Frame({self.data[:40]!r}... {len(self.data)} long, {kind})"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        # Hypothesis prints dataclasses field by field: keep huge frames short in reports.
        printer.text(repr(self))


@dataclass(frozen=True)
class Flood:
    """``count`` pings sent without reading a reply."""

    count: int


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_channels = st.sampled_from(
    ["payments", "alerts", "stats", "account:fuzzer", "account:someone-else", "account:", ""]
) | st.text(max_size=40)
_ops = st.sampled_from(["subscribe", "unsubscribe", "ping", "refresh", "publish"]) | st.text(
    max_size=12
)
_structured = st.fixed_dictionaries(
    {"op": _ops | _json_values},
    optional={
        "channel": _channels | _json_values,
        "since": st.sampled_from(["0-0", "1-0", "99999999999999-1", "-1", "0-"])
        | st.text(max_size=30)
        | _json_values,
        "epoch": st.text(max_size=80) | _json_values,
        "presence": st.booleans() | _json_values,
        "token": st.text(max_size=60) | _json_values,
        "data": _json_values,
    },
).map(lambda frame: Frame(json.dumps(frame)))
_huge = st.integers(MAX_FRAME + 1, 25 * MAX_FRAME).map(
    lambda n: Frame('{"op":"ping","pad":"' + "x" * n + '"}')
)
_actions = st.one_of(
    _structured,
    _structured,
    _json_values.map(lambda value: Frame(json.dumps(value))),
    st.text(max_size=200).map(Frame),
    st.binary(max_size=200).map(Frame),
    st.binary(min_size=1, max_size=50).map(lambda raw: Frame(b"\xff" + raw, text=True)),
    _huge,
)
_frames = st.lists(_actions, min_size=1, max_size=8)
# One batch in five floods (each costs a second: see _exchange).
_batches = st.one_of(
    *[_frames] * 4,
    st.tuples(_frames, st.integers(20, 160).map(Flood), st.booleans()).map(
        lambda t: [t[1], *t[0]] if t[2] else [*t[0], t[1]]
    ),
)


# -- one batch over one connection ------------------------------------------------------


@dataclass
class Outcome:
    replies: list[Any] = field(default_factory=list)
    close_code: int | None = None
    sentinel_answered: bool = False


async def _send(ws: Any, action: Frame | Flood) -> None:
    if isinstance(action, Flood):
        for _ in range(action.count):
            await ws.send('{"op":"ping"}')
    elif isinstance(action.data, bytes) and action.text:
        await ws.send(action.data, text=True)
    else:
        await ws.send(action.data)


async def _exchange(url: str, batch: list[Frame | Flood]) -> Outcome:
    """Send the batch and a sentinel; collect the answers until the sentinel's or a close."""
    sentinel = f"account:sentinel-{uuid.uuid4().hex}"
    outcome = Outcome()
    async with connect(url, max_size=None, close_timeout=5) as ws:
        reader = asyncio.create_task(_read(ws, sentinel, outcome))
        try:
            for action in batch:
                await _send(ws, action)
            # A flood may have spent the ops budget (burst 50, 20/s): wait until the sentinel
            # has a token, so its answer is its own and not a rate_limited refusal (or until
            # the gateway closes the connection for flooding).
            ops = sum(a.count if isinstance(a, Flood) else 1 for a in batch)
            if ops >= OPS_BURST:
                await asyncio.wait({reader}, timeout=min(1.0, (ops + 1 - OPS_BURST) / 20 + 0.1))
            await ws.send(orjson.dumps({"op": "unsubscribe", "channel": sentinel}).decode())
        except ConnectionClosed:
            pass
        try:
            await asyncio.wait_for(reader, 8)
        except TimeoutError:
            raise AssertionError(f"no answer to {_describe(batch)}: {outcome}") from None
    return outcome


def _describe(batch: list[Frame | Flood]) -> str:
    return ", ".join(map(repr, batch))


async def _read(ws: Any, sentinel: str, outcome: Outcome) -> None:
    try:
        async for message in ws:
            reply = orjson.loads(message)
            outcome.replies.append(reply)
            if isinstance(reply, dict) and reply.get("channel") == sentinel:
                outcome.sentinel_answered = True
                return
    except ConnectionClosed:
        pass
    outcome.close_code = ws.close_code


def _violation(action: Frame | Flood) -> bool:
    """A frame the WebSocket layer itself refuses (1007, 1009), before the gateway parses it."""
    if isinstance(action, Flood):
        return False
    return (isinstance(action.data, bytes) and action.text) or len(action.data) > MAX_FRAME


def _check(batch: list[Frame | Flood], outcome: Outcome) -> bool:
    """Assert the answers are documented; True if the connection ended without a close code
    after a protocol violation (counted, and failed at the end of the run: see below)."""
    for reply in outcome.replies:
        assert isinstance(reply, dict), reply
        assert reply.get("op") in SERVER_OPS, reply
        if reply["op"] == "error":
            assert reply.get("code") in ERROR_CODES, reply
            assert isinstance(reply.get("message"), str), reply
            assert reply["message"], reply
    if outcome.sentinel_answered:
        return False
    if outcome.close_code == ABNORMAL_CLOSURE and any(_violation(a) for a in batch):
        # A frame over the size limit (or not UTF-8) is answered with a close frame; if the
        # socket were then closed with the client's later frames unread, the kernel's reset
        # would throw the close frame away (the gateway lingers instead: ws_gateway.linger).
        # Counted as fuzz.ws_abnormal_closes, which must end at 0.
        return True
    assert outcome.close_code in CLOSE_CODES, (outcome.close_code, outcome.replies[-3:])
    return False


# -- the observer -----------------------------------------------------------------------


class Observer(threading.Thread):
    """A client subscribed to its account channel, and a publisher appending events to it
    every 50 ms, in a thread of their own for the whole fuzz run."""

    def __init__(self, gateway: RunningGateway, redis_url: str) -> None:
        super().__init__(daemon=True)
        self.gateway = gateway
        self.redis_url = redis_url
        self.channel = f"account:observer-{uuid.uuid4().hex[:8]}"
        self.published: list[str] = []
        self.received: list[str] = []
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.subscribed.set()

    async def _main(self) -> None:
        redis = aioredis.Redis.from_url(self.redis_url)
        publisher = ChannelPublisher(redis, self.gateway.prefix)
        url = self.gateway.ws_url(self.channel.removeprefix("account:"), ttl=3600)
        try:
            async with connect(url) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": self.channel}).decode())
                assert orjson.loads(await ws.recv())["op"] == "subscribed"
                self.subscribed.set()
                reader = asyncio.create_task(self._read(ws))
                while not self.stopping.is_set():
                    event = new_event(type=PAYMENT_CREATED, source="/tests/fuzz", data={})
                    await publisher.append(event, [self.channel])
                    self.published.append(event.id)
                    await asyncio.sleep(0.05)
                async with asyncio.timeout(10):
                    while len(self.received) < len(self.published):
                        await asyncio.sleep(0.05)
                reader.cancel()
        finally:
            await redis.aclose()

    async def _read(self, ws: Any) -> None:
        async for message in ws:
            frame = orjson.loads(message)
            if frame.get("op") == "event":
                self.received.append(frame["event"]["id"])


# -- the test ---------------------------------------------------------------------------


def _unhandled(log: str) -> list[str]:
    """Log lines that report an exception nobody handled (or an error), JSON or not."""
    found = []
    for line in log.splitlines():
        if line[:1] != "{":
            if "Traceback" in line:
                found.append(line)
            continue
        record = orjson.loads(line)
        if record.get("level") in ("error", "critical") or "exception" in record:
            found.append(line)
    return found


def test_generated_frames_get_clear_answers_and_crash_nothing(
    gateway: RunningGateway, redis_url: str, fuzz_figures: dict[str, int]
) -> None:
    observer = Observer(gateway, redis_url)
    observer.start()
    assert observer.subscribed.wait(15)
    assert observer.error is None, observer.error
    url = gateway.ws_url("fuzzer", ["ops"], ttl=3600)
    abnormal = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=_batches)
    def a_batch_gets_clear_answers(batch: list[Frame | Flood]) -> None:
        nonlocal abnormal
        abnormal += _check(batch, asyncio.run(_exchange(url, batch)))

    try:
        a_batch_gets_clear_answers()
    finally:
        observer.stopping.set()
        observer.join(20)
        alive = gateway.process.proc is not None and gateway.process.proc.poll() is None
        unhandled = _unhandled(gateway.process.logs())
        fuzz_figures["fuzz.ws_crashes"] = (0 if alive else 1) + len(unhandled)
        fuzz_figures["fuzz.ws_abnormal_closes"] = abnormal
    assert alive, gateway.process.logs()[-3000:]
    assert unhandled == [], unhandled[:3]
    assert abnormal == 0, "connections reset after a protocol violation instead of closed"
    assert observer.error is None, observer.error
    assert observer.published
    assert observer.received == observer.published
    assert gateway.process.stop() == 0

"""Client commands over in-memory fakes of the hub, history, presence and token verifier.

A real :class:`ClientConnection` and :class:`Session` over a sink that records what is
written: subscribe with replay (and the live frames that arrive meanwhile), unsubscribe,
publish, refresh. No Redis, no sockets; the integration tests drive the same code through a
real gateway process.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from pulse.auth import Claims, InvalidTokenError, TokenExpiredError
from ws_gateway.commands import Commands
from ws_gateway.connection import CLOSE_FORBIDDEN, ClientConnection
from ws_gateway.fanout import Subscriber
from ws_gateway.history import HistorySnapshot
from ws_gateway.offsets import StreamId
from ws_gateway.protocol import Publish, Refresh, Subscribe, event_frame
from ws_gateway.session import Session
from ws_gateway.settings import GatewaySettings

ACCOUNT = "account:alice"
EPOCH = "e1"


def claims(sub: str = "alice", *roles: str) -> Claims:
    return Claims(sub=sub, roles=frozenset(roles), exp=int(time.time()) + 600)


def ev(ms: int, channel: str = ACCOUNT) -> str:
    return event_frame(channel, f"{ms}-0", f'{{"n":{ms}}}')


@dataclass
class Sink:
    """Takes every frame at once and keeps it."""

    frames: list[str] = field(default_factory=list)
    closed: tuple[int, str] | None = None

    def write_now(self, frame: str) -> bool:
        self.frames.append(frame)
        return True

    def direct_writer(self) -> None:
        return None

    async def send(self, frame: str) -> None:
        self.frames.append(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def ping(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def decoded(self) -> list[dict[str, Any]]:
        return [orjson.loads(f) for f in self.frames]


@dataclass
class Hub:
    subscribers: dict[str, list[Subscriber]] = field(default_factory=dict)
    promoted: list[str] = field(default_factory=list)
    published: list[tuple[str, str]] = field(default_factory=list)
    fail: bool = False

    async def add(self, channel: str, subscriber: Subscriber) -> None:
        if self.fail:
            raise ConnectionError("redis is down")
        self.subscribers.setdefault(channel, []).append(subscriber)

    async def remove(self, channel: str, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers.get(channel, []):
            self.subscribers[channel].remove(subscriber)

    def promote(self, channel: str, _subscriber: Subscriber) -> None:
        self.promoted.append(channel)

    def to_slow(self, subscriber: Subscriber, channels: list[str]) -> None:
        pass

    async def publish(self, channel: str, frame: str) -> None:
        if self.fail:
            raise ConnectionError("redis is down")
        self.published.append((channel, frame))

    def live(self, channel: str, *frames: str) -> None:
        """Frames published on ``channel`` reach its subscribers."""
        for frame in frames:
            for subscriber in self.subscribers.get(channel, []):
                subscriber.deliver(channel, frame)


@dataclass
class History:
    """A channel's stored events (never trimmed); ``during_read`` runs as the snapshot is
    taken, as a publish racing the subscribe would."""

    events: dict[str, list[int]] = field(default_factory=dict)
    during_read: Callable[[], object] = lambda: None

    async def snapshot(
        self, channel: str, since: StreamId | None = None, epoch: str | None = None
    ) -> HistorySnapshot:
        del since, epoch  # one epoch here, never carried over
        self.during_read()
        stored = self.events.get(channel, [])
        last = StreamId(stored[-1], 0) if stored else None
        return HistorySnapshot(
            first=StreamId(stored[0], 0) if stored else None,
            last=last,
            last_generated=last,
            trimmed=False,
            epoch=EPOCH,
        )

    async def frames_between(
        self, channel: str, after: StreamId, upto: StreamId
    ) -> AsyncIterator[list[str]]:
        yield [
            ev(n, channel) for n in self.events.get(channel, []) if after < StreamId(n, 0) <= upto
        ]

    async def durable_replay(
        self,
        channel: str,
        since: StreamId,
        snapshot: HistorySnapshot,
        *,
        since_epoch: str | None = None,
        ended_by: float | None = None,
    ) -> None:
        del channel, since, snapshot, since_epoch, ended_by  # no durable record here


@dataclass
class Board:
    joined: list[tuple[str, str, str]] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)

    async def join(self, channel: str, conn: str, user: str) -> None:
        self.joined.append((channel, conn, user))

    async def leave(self, channel: str, conn: str) -> None:
        self.left.append((channel, conn))


@dataclass
class Verifier:
    tokens: dict[str, Claims | Exception] = field(default_factory=dict)

    async def verify(self, token: str) -> Claims:
        found = self.tokens.get(token, InvalidTokenError("invalid token"))
        if isinstance(found, Exception):
            raise found
        return found


@dataclass
class World:
    hub: Hub
    history: History
    presence: Board
    verifier: Verifier
    commands: Commands

    def client(self, who: Claims | None = None) -> tuple[ClientConnection, Sink]:
        sink = Sink()
        session = Session(who or claims(), max_subscriptions=10, buffer_limit=100)
        client = ClientConnection(sink, session, hub=self.hub, queue_size=100, conn_id="c1")
        return client, sink


@pytest.fixture
def world() -> World:
    hub, history, presence, verifier = Hub(), History(), Board(), Verifier()
    settings = GatewaySettings(publish_per_second=0.001, publish_burst=2, token_grace_seconds=1)
    commands = Commands(settings, hub=hub, history=history, presence=presence, verifier=verifier)
    return World(hub, history, presence, verifier, commands)


def frame(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


async def test_subscribe_answers_subscribed_then_the_replay_then_what_came_meanwhile(
    world: World,
) -> None:
    world.history.events[ACCOUNT] = [1, 2, 3, 4]
    client, sink = world.client()
    # Published while the history is being read: 3 and 4 are in the history too, 5 is not.
    world.history.during_read = lambda: world.hub.live(ACCOUNT, ev(3), ev(4), ev(5))
    await world.commands.subscribe(client, Subscribe(ACCOUNT, StreamId(2, 0), EPOCH))

    assert sink.decoded()[0] == {
        "op": "subscribed",
        "channel": ACCOUNT,
        "offset": "4-0",
        "epoch": EPOCH,
        "recovered": True,
    }
    assert sink.frames[1:] == [ev(3), ev(4), ev(5)]
    assert world.hub.promoted == [ACCOUNT]
    assert world.presence.joined == [(ACCOUNT, "c1", "alice")]
    world.hub.live(ACCOUNT, ev(6))  # live from then on
    assert sink.frames[4:] == [ev(6)]


@pytest.mark.parametrize(
    ("since", "epoch", "recovered", "replayed"),
    [
        (None, None, False, []),  # no since: live from now on
        (StreamId(1, 0), None, True, [2, 3]),
        (StreamId(1, 0), EPOCH, True, [2, 3]),
        (StreamId(3, 0), EPOCH, True, []),
        (StreamId(1, 0), "another", False, [1, 2, 3]),  # void offset: the epoch from its start
    ],
)
async def test_subscribe_replays_after_since_within_the_epoch(
    world: World,
    since: StreamId | None,
    epoch: str | None,
    recovered: bool,
    replayed: list[int],
) -> None:
    world.history.events[ACCOUNT] = [1, 2, 3]
    client, sink = world.client()
    await world.commands.subscribe(client, Subscribe(ACCOUNT, since, epoch))
    assert sink.decoded()[0]["recovered"] is recovered
    assert sink.frames[1:] == [ev(n) for n in replayed]


async def test_stats_has_no_presence(world: World) -> None:
    client, _ = world.client()
    await world.commands.subscribe(client, Subscribe("stats"))
    assert world.presence.joined == []
    assert client.session.is_subscribed("stats")


@pytest.mark.parametrize(
    ("channel", "code"),
    [("payments", "forbidden"), ("account:bob", "forbidden"), ("nope", "unknown_channel")],
)
async def test_a_refused_subscribe_is_an_error_frame_and_touches_nothing(
    world: World, channel: str, code: str
) -> None:
    client, sink = world.client()
    await world.commands.handle(client, frame(op="subscribe", channel=channel))
    assert sink.decoded() == [
        {"op": "error", "code": code, "message": _refusal(code, "subscribe"), "channel": channel}
    ]
    assert world.hub.subscribers == {}
    assert not client.session.is_subscribed(channel)


def _refusal(code: str, verb: str) -> str:
    return "no such channel" if code == "unknown_channel" else f"not allowed to {verb}"


async def test_a_subscribe_redis_does_not_answer_is_unavailable_and_forgotten(
    world: World,
) -> None:
    world.hub.fail = True
    client, sink = world.client()
    await world.commands.handle(client, frame(op="subscribe", channel=ACCOUNT))
    assert [(f["code"], f["channel"]) for f in sink.decoded()] == [("unavailable", ACCOUNT)]
    assert not client.session.is_subscribed(ACCOUNT)
    world.hub.fail = False
    await world.commands.handle(client, frame(op="subscribe", channel=ACCOUNT))  # retry works
    assert sink.decoded()[-1]["op"] == "subscribed"


async def test_unsubscribe_forgets_the_channel_everywhere(world: World) -> None:
    client, sink = world.client()
    await world.commands.subscribe(client, Subscribe(ACCOUNT))
    await world.commands.handle(client, frame(op="unsubscribe", channel=ACCOUNT))
    assert sink.decoded()[-1] == {"op": "unsubscribed", "channel": ACCOUNT}
    assert world.hub.subscribers[ACCOUNT] == []
    assert world.presence.left == [(ACCOUNT, "c1")]
    await world.commands.handle(client, frame(op="unsubscribe", channel=ACCOUNT))
    assert sink.decoded()[-1]["code"] == "not_subscribed"


async def test_drop_all_leaves_every_channel(world: World) -> None:
    client, _ = world.client(claims("oscar", "ops"))
    for channel in ("payments", "stats", ACCOUNT):
        await world.commands.subscribe(client, Subscribe(channel))
    await world.commands.drop_all(client)
    assert client.session.channels == []
    assert all(not subscribers for subscribers in world.hub.subscribers.values())
    # asked for every channel; the board knows which ones had an entry (not stats)
    assert sorted(c for c, _ in world.presence.left) == [ACCOUNT, "payments", "stats"]


async def test_publish_goes_to_the_hub_as_a_message_and_is_answered(world: World) -> None:
    client, sink = world.client()
    await world.commands.publish(client, Publish(ACCOUNT, '{"typing":true}'))
    assert world.hub.published == [
        (
            ACCOUNT,
            '{"op":"message","channel":"account:alice","from":"alice","data":{"typing":true}}',
        )
    ]
    assert sink.decoded() == [{"op": "published", "channel": ACCOUNT}]


@pytest.mark.parametrize(
    ("who", "channel", "code"),
    [
        (claims(), "account:bob", "forbidden"),
        (claims(), "stats", "forbidden"),
        (claims("oscar", "ops"), "payments", "forbidden"),  # the system feeds are read-only
        (claims(), "nope", "unknown_channel"),
    ],
)
async def test_publish_only_to_account_channels_the_token_may_read(
    world: World, who: Claims, channel: str, code: str
) -> None:
    client, sink = world.client(who)
    await world.commands.handle(client, frame(op="publish", channel=channel, data={}))
    assert sink.decoded() == [
        {"op": "error", "code": code, "message": _refusal(code, "publish"), "channel": channel}
    ]
    assert world.hub.published == []


async def test_publishes_beyond_the_burst_are_rate_limited(world: World) -> None:
    client, sink = world.client()
    for _ in range(3):  # the burst is 2, and the bucket barely refills
        await world.commands.handle(client, frame(op="publish", channel=ACCOUNT, data={}))
    assert [f.get("code", f["op"]) for f in sink.decoded()] == [
        "published",
        "published",
        "rate_limited",
    ]
    assert len(world.hub.published) == 2


async def test_a_publish_redis_does_not_take_is_unavailable(world: World) -> None:
    world.hub.fail = True
    client, sink = world.client()
    await world.commands.handle(client, frame(op="publish", channel=ACCOUNT, data={}))
    assert sink.decoded()[0]["code"] == "unavailable"


@pytest.mark.parametrize(
    ("verdict", "message"),
    [
        (InvalidTokenError("bad signature"), "invalid token"),
        (TokenExpiredError("token expired"), "token expired"),
    ],
)
async def test_a_refresh_with_a_bad_token_is_unauthorized_and_keeps_the_old_one(
    world: World, verdict: Exception, message: str
) -> None:
    world.verifier.tokens["t"] = verdict
    client, sink = world.client()
    before = client.session.claims
    await world.commands.handle(client, frame(op="refresh", token="t"))
    assert sink.decoded() == [{"op": "error", "code": "unauthorized", "message": message}]
    assert client.session.claims is before
    assert not client.closing


async def test_a_refresh_keeps_what_the_new_token_may_read_and_drops_the_rest(
    world: World,
) -> None:
    client, sink = world.client(claims("carol", "ops"))
    for channel in ("payments", "account:carol"):
        await world.commands.subscribe(client, Subscribe(channel))
    fresh = claims("carol")
    world.verifier.tokens["t"] = fresh
    await world.commands.refresh(client, Refresh("t"))
    answers = sink.decoded()[2:]
    assert answers == [
        {
            "op": "error",
            "code": "forbidden",
            "message": "no longer allowed to subscribe",
            "channel": "payments",
        },
        {"op": "refreshed", "exp": fresh.exp},
    ]
    assert client.session.claims is fresh
    assert client.session.channels == ["account:carol"]
    assert client.expires_at == fresh.exp + 1  # token_grace_seconds=1
    client.disarm_expiry()


async def test_a_refresh_for_another_subject_closes_with_4003(world: World) -> None:
    world.verifier.tokens["t"] = claims("mallory")
    client, sink = world.client()
    await world.commands.refresh(client, Refresh("t"))
    await client.wait_closed()
    assert sink.closed == (CLOSE_FORBIDDEN, "token subject changed")
    assert client.session.claims.sub == "alice"


async def test_ping_and_bad_frames(world: World) -> None:
    client, sink = world.client()
    await world.commands.handle(client, frame(op="ping"))
    await world.commands.handle(client, "{not json")
    await world.commands.handle(client, frame(op="dance"))
    assert [f.get("code", f["op"]) for f in sink.decoded()] == ["pong", "bad_request", "unknown_op"]

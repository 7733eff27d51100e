"""Everything that uses the stack from outside, as Pulse's users do: the payment poster
(each payment with its own Idempotency-Key, retried until ingest accepts it), WebSocket
clients that reconnect with ``since``/``epoch`` and record every event they get, and a
webhook receiver that verifies signatures and keeps each delivery.

What they recorded is what the ledger (``chaos_ledger``) checks. Imported through
``harness``, which re-exports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
import orjson
from chaos_stack import Stack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from pulse.auth import issue_token
from pulse.settings import DEV_JWT_SECRET
from pulse_dev.load import random_payment
from pulse_dev.webhook_receiver import ScriptedReceiver


def ingest_client() -> aiohttp.ClientSession:
    """A client of ingest with an operator's bearer token (the development secret)."""
    token = issue_token(DEV_JWT_SECRET, sub="chaos-ops", roles=["ops"], ttl_seconds=24 * 3600)
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})


# -- payments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    payment_id: str
    account_id: str
    label: str  # the round (fault) it belongs to
    posted_at: float


@dataclass
class Poster:
    """Posts payments through ingest as a careful client does: each with its own
    Idempotency-Key, retried with the same key until ingest answers 201."""

    ingest_url: str
    accounts: list[str]
    rng: random.Random = field(default_factory=random.Random)
    refused: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def body(self) -> dict[str, Any]:
        body = random_payment(self.rng)
        body["account_id"] = self.rng.choice(self.accounts)
        return body

    async def post_one(self, http: aiohttp.ClientSession, label: str) -> Posted | None:
        body = self.body()
        key = str(uuid.uuid4())
        for attempt in range(60):
            if attempt:
                self.retries += 1
                await asyncio.sleep(min(0.2 * 2**attempt, 3.0))
            try:
                async with http.post(
                    f"{self.ingest_url}/v1/payments",
                    json=body,
                    headers={"Idempotency-Key": key},
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as resp:
                    payload = await resp.json(content_type=None)
                    if resp.status == 201:
                        return Posted(payload["payment_id"], body["account_id"], label, time.time())
                    if resp.status < 500 and resp.status != 429:
                        self.refused[str(resp.status)] += 1
                        return None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
        self.refused["gave-up"] += 1
        return None

    async def post(self, count: int, rate: float, label: str) -> list[Posted]:
        """``count`` payments at ``rate`` per second (open loop); those ingest accepted."""
        async with ingest_client() as http:
            start = time.monotonic()
            tasks = []
            for i in range(count):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self.post_one(http, label)))
            done = await asyncio.gather(*tasks)
        return [p for p in done if p is not None]


# -- WebSocket clients ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    channel: str
    event_id: str
    type: str
    payment_id: str | None
    status: str | None = None
    offset: str = ""  # where the frame put it in its channel


class WatchingClient:
    """A browser-like client: subscribes, and after any drop reconnects — to the next
    gateway in its list — resubscribing each channel with the ``since`` offset and
    ``epoch`` it last saw, as the protocol asks. It records every event frame it gets."""

    def __init__(
        self,
        name: str,
        *,
        sub: str,
        roles: list[str],
        channels: list[str],
        gateways: list[str],
        first_gateway: int = 0,
    ) -> None:
        self.name = name
        self.sub = sub
        self.token = issue_token(DEV_JWT_SECRET, sub=sub, roles=roles, ttl_seconds=24 * 3600)
        self.channels = channels
        self.gateways = gateways
        self._gateway = first_gateway
        self.offsets: dict[str, str] = {}
        self.epochs: dict[str, str] = {}
        self._since_sent: dict[str, str | None] = {}
        self._pending: set[str] = set()
        self.seen: list[Seen] = []
        self.not_recovered: list[tuple[str, float]] = []
        self.errors: list[dict[str, Any]] = []
        self.reconnects = 0
        self.subscribed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._leaving = False

    @classmethod
    def ops(cls, name: str, gateways: list[str], first_gateway: int = 0) -> Self:
        """An operator (``sub`` is ``name``) watching the payments and alerts channels."""
        return cls(
            name,
            sub=name,
            roles=["ops"],
            channels=["payments", "alerts"],
            gateways=gateways,
            first_gateway=first_gateway,
        )

    @classmethod
    def owner(cls, account: str, gateways: list[str], first_gateway: int = 0) -> Self:
        """The owner of ``account`` (``user-<account>``) watching its account channel."""
        return cls(
            f"user-{account}",
            sub=account,
            roles=[],
            channels=[f"account:{account}"],
            gateways=gateways,
            first_gateway=first_gateway,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            url = self.gateways[self._gateway % len(self.gateways)]
            try:
                async with connect(
                    f"{url}?token={self.token}", open_timeout=5, max_size=None
                ) as ws:
                    self._ws = ws
                    await self._subscribe_all(ws)
                    async for raw in ws:
                        self._on_frame(orjson.loads(raw))
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                pass
            finally:
                self._ws = None
                self.subscribed.clear()
            if stopping.is_set():
                return
            self.reconnects += 1
            if not self._leaving:
                self._gateway += 1  # the gateway went away: fail over to the next one
            self._leaving = False
            await asyncio.sleep(0.2)

    async def leave(self) -> None:
        """Disconnect on purpose (a closed laptop lid); the run loop comes back."""
        ws = self._ws
        if ws is not None:
            self._leaving = True
            await ws.close()

    async def stop(self) -> None:
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _subscribe_all(self, ws: ClientConnection) -> None:
        self._pending = set(self.channels)
        for channel in self.channels:
            op: dict[str, Any] = {"op": "subscribe", "channel": channel}
            since = self.offsets.get(channel)
            if since is not None:
                op["since"] = since
                op["epoch"] = self.epochs[channel]
            self._since_sent[channel] = since
            await ws.send(orjson.dumps(op).decode())

    def _on_frame(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        channel = frame.get("channel", "")
        if op == "event":
            self.offsets[channel] = frame["offset"]
            event = frame["event"]
            data = event.get("data") or {}
            self.seen.append(
                Seen(
                    channel,
                    event["id"],
                    event["type"],
                    data.get("payment_id"),
                    data.get("status"),
                    frame["offset"],
                )
            )
        elif op == "subscribed":
            answered = channel in self._pending  # else: the gateway's notice of a new epoch
            since = self._since_sent.get(channel) if answered else self.offsets.get(channel)
            if since is None or not frame.get("recovered"):
                if since is not None:
                    self.not_recovered.append((channel, time.time()))
                self.offsets[channel] = frame["offset"]
            self.epochs[channel] = frame["epoch"]
            self._pending.discard(channel)
            if not self._pending:
                self.subscribed.set()
        elif op == "error":
            self.errors.append(frame)


# -- the webhook receiver -------------------------------------------------------------------


class WebhookReceiver(ScriptedReceiver):
    """The suites' receiver (:class:`pulse_dev.webhook_receiver.ScriptedReceiver`), one URL
    per account: every signature checked, each delivery's ``webhook-id`` and payment kept;
    204 to a delivery, 503 while ``failing``."""

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.failing = False

    def _answer(self, _account: str, _webhook_id: str, _before: int) -> int:
        return 503 if self.failing else 204

    @property
    def deliveries(self) -> list[tuple[str, str, str | None]]:
        """(account, webhook id, payment) of each delivery answered 204."""
        return [(h.name, h.webhook_id, h.payment_id) for h in self.hits if h.status == 204]

    @property
    def bad_signatures(self) -> int:
        return sum(not h.verified for h in self.hits)

    @property
    def refused(self) -> int:
        """Deliveries answered 503 (while ``failing``)."""
        return sum(h.status == 503 for h in self.hits)

    async def register(self, stack: Stack, account: str) -> None:
        """``pulse webhooks add``, as an operator runs it; keeps the secret it prints."""
        env = {**os.environ, **stack.base_env()}
        out = await asyncio.to_thread(
            subprocess.run,
            [
                *(sys.executable, "-m", "pulse.cli", "webhooks", "add"),
                *("--account", account, "--url", self.url(account)),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        for line in out.stdout.splitlines():
            if line.startswith("secret: "):
                self.secrets[account] = line.removeprefix("secret: ").strip()
        if account not in self.secrets:
            raise RuntimeError(f"pulse webhooks add printed no secret: {out.stdout}")

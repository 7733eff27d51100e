"""Pulse as separate real processes the reliability suites can hurt, and everything that
watches it: the payment poster, WebSocket clients that reconnect with ``since``/``epoch``,
a webhook receiver that verifies signatures, and the ledger that says, per payment, where
each of its events arrived and how often.

Used by the chaos suite (``faults.py``) and the soak (``tests/soak/soak.py``). Nothing is
mocked: a moto server, a ``redis-server`` (with an append-only file, so a restart keeps its
data), and every service as its own ``python -m <package>`` process, several replicas of
those that scale out. The harness owns every process, so it can kill, pause and restart
any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

import aiohttp
import orjson
from redis_modes import RedisDeployment, RedisMode
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from pulse.auth import issue_token
from pulse.channels import ChannelKeys
from pulse.clients import RedisClient, aws_client
from pulse.settings import DEV_JWT_SECRET, PulseSettings
from pulse.topology_apply import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    LOCAL_WEBHOOK_RECEIVERS_ENV,
    WHOLE_RUN_HISTORY_ENV,
    free_port,
    stop_process,
    wait_for_port,
)
from pulse_dev.load import random_payment
from pulse_dev.testing import ServiceProcess, stream_entries
from pulse_dev.webhook_receiver import ScriptedReceiver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

CREATED: Final = "pulse.payment.created"
UPDATED: Final = "pulse.payment.updated"
NOTIFICATION: Final = "pulse.notification"
DECISION: Final = "pulse.fraud.decision"
APPROVED: Final = "APPROVED"

# Faster failure detection than the defaults, so a suite settles in seconds, not minutes;
# every one is a documented setting an operator may choose the same way.
WORKER_ENV: Final = {
    "PULSE_SQS_VISIBILITY_TIMEOUT": "10",
    "PULSE_IDEMPOTENCY_LEASE_SECONDS": "10",
    "PULSE_SQS_MAX_BACKOFF_SECONDS": "8",
    "PULSE_SQS_WAIT_TIME_SECONDS": "5",
    # Decisions come from the amount rules, not from the velocity of a handful of accounts.
    "PULSE_VELOCITY_REVIEW_COUNT": "1000000",
    "PULSE_VELOCITY_DECLINE_COUNT": "2000000",
    # Webhook retries within the settle timeout, chained through 5 s delayed messages.
    "PULSE_WEBHOOK_RETRY_SCHEDULE": "0,2s,4s,8s,15s,30s,60s",
    "PULSE_WEBHOOK_RETRY_HOP_SECONDS": "5",
}
STREAM_ENV: Final = {"PULSE_FAILOVER_SECONDS": "6", "PULSE_MAX_RETRY_DELAY_SECONDS": "4"}
# The suites are about faults, not throttling: ingest throttles, with budgets too large to
# bind the suite's one operator client (its audit reads come in bursts of hundreds).
INGEST_ENV: Final = {"PULSE_RATE_LIMIT_PER_SECOND": "100000", "PULSE_RATE_LIMIT_BURST": "100000"}


def ingest_client() -> aiohttp.ClientSession:
    """A client of ingest with an operator's bearer token (the development secret)."""
    token = issue_token(DEV_JWT_SECRET, sub="chaos-ops", roles=["ops"], ttl_seconds=24 * 3600)
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})


def say(text: str = "") -> None:
    """A line of the suite's report, on stdout (progress goes to stderr)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def log(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def parse_with_workdir(
    parser: argparse.ArgumentParser, name: str
) -> tuple[argparse.Namespace, Path]:
    """A suite's arguments, ``--workdir`` added: them, and the folder for the run's logs
    (``--workdir``, else a new temporary folder ``pulse-<name>-…``)."""
    parser.add_argument("--workdir", type=Path, default=None, help="logs (default: a temp dir)")
    args = parser.parse_args()
    return args, args.workdir or Path(tempfile.mkdtemp(prefix=f"pulse-{name}-"))


# -- dependencies ---------------------------------------------------------------------------


class AwsEmulator:
    """The moto server (``pulse_dev.aws_emulator``, which locks out moto's thread-safety races);
    it can be paused and resumed."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "aws-emulator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "pulse_dev.aws_emulator"]
        argv += ["-H", "127.0.0.1", "-p", str(self.port)]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            stop_process(self.proc)


# -- the services ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Replica:
    """One service process the stack runs: its name, package and HTTP port."""

    name: str
    package: str
    port: int


@dataclass
class Topology:
    """How many replicas of each service the stack runs."""

    stream_processors: int = 2
    fraud_workers: int = 2
    notify_workers: int = 2
    gateways: int = 2


class Stack:
    """Every Pulse process, started and restarted by name (``fraud-worker-1``, …)."""

    def __init__(
        self,
        workdir: Path,
        topology: Topology | None = None,
        *,
        redis_mode: RedisMode = "standalone",
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.topology = topology or Topology()
        self.prefix = f"chaos{uuid.uuid4().hex[:6]}-"
        self.redis = RedisDeployment(workdir, redis_mode, f"pulse:{self.prefix}")
        self.aws = AwsEmulator(workdir)
        self.replicas: dict[str, Replica] = {}
        self.processes: dict[str, ServiceProcess] = {}
        self.generation: Counter[str] = Counter()
        self.exit_codes: dict[str, int | None] = {}
        t = self.topology
        self._add("ingest", "ingest")
        for i in range(t.stream_processors):
            self._add(f"stream-processor-{chr(ord('a') + i)}", "stream_processor")
        for i in range(1, t.fraud_workers + 1):
            self._add(f"fraud-worker-{i}", "fraud_worker")
        for i in range(1, t.notify_workers + 1):
            self._add(f"notify-worker-{i}", "notify_worker")
        for i in range(1, t.gateways + 1):
            self._add(f"ws-gateway-{i}", "ws_gateway")

    def _add(self, name: str, package: str) -> None:
        self.replicas[name] = Replica(name, package, free_port())

    # -- addresses ----------------------------------------------------------------------
    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.replicas['ingest'].port}"

    @property
    def gateway_urls(self) -> list[str]:
        return [
            f"ws://127.0.0.1:{r.port}/ws"
            for r in self.replicas.values()
            if r.package == "ws_gateway"
        ]

    def base_env(self) -> dict[str, str]:
        return {
            **AWS_TEST_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.aws.url,
            **self.redis.env(),
            "PULSE_RESOURCE_PREFIX": self.prefix,
            "PULSE_REDIS_PREFIX": f"pulse:{self.prefix}",
            "PULSE_LOG_LEVEL": "info",
            "PULSE_LOG_FORMAT": "json",
            # the webhook receiver runs here, over http: registered and delivered to
            **LOCAL_WEBHOOK_RECEIVERS_ENV,
            # every event of the run is checked in its account channel's history
            **WHOLE_RUN_HISTORY_ENV,
        }

    def settings(self) -> PulseSettings:
        return self.redis.settings(self.base_env())

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        for key, value in AWS_TEST_CREDENTIALS.items():
            os.environ.setdefault(key, value)
        self.redis.start()
        self.aws.start()
        await asyncio.to_thread(apply_topology, self.settings())
        await asyncio.gather(*(self.start_replica(name) for name in self.replicas))

    def _env(self, replica: Replica) -> dict[str, str]:
        env = {
            **self.base_env(),
            "PULSE_HTTP_PORT": str(replica.port),
            "PULSE_SERVICE_NAME": replica.name,
        }
        if replica.package in ("fraud_worker", "notify_worker"):
            env.update(WORKER_ENV)
        if replica.package == "ingest":
            env.update(INGEST_ENV)
        if replica.package == "stream_processor":
            env.update(STREAM_ENV)
            # A replacement process is a new worker (a new pod name), as on Kubernetes.
            env["PULSE_WORKER_ID"] = f"{replica.name}-{self.generation[replica.name]}"
        return env

    async def start_replica(self, name: str) -> None:
        replica = self.replicas[name]
        self.generation[name] += 1
        proc = ServiceProcess(replica.package, self._env(replica), self.workdir / f"{name}.log")
        self.processes[name] = proc
        await asyncio.to_thread(proc.start, wait_port=replica.port, timeout=60)
        await self.wait_ready(name)

    async def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.replicas[name].port}/readyz"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout:.0f}s")

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        self.processes[name].kill()

    def pid(self, name: str) -> int | None:
        proc = self.processes.get(name)
        if proc is None or proc.proc is None or proc.proc.poll() is not None:
            return None
        return proc.proc.pid

    def dead(self) -> list[str]:
        """Replicas that exited without the harness killing them."""
        return [n for n, p in self.processes.items() if p.proc is not None and p.proc.poll()]

    async def stop(self) -> None:
        """SIGTERM to every service; ``exit_codes`` records how each one ended (a clean
        shutdown is 0; ``None``: still running after 25 s, killed)."""
        running = {n: p for n, p in self.processes.items() if p.proc and p.proc.poll() is None}
        for proc in running.values():
            assert proc.proc is not None
            with contextlib.suppress(ProcessLookupError):
                proc.proc.send_signal(signal.SIGTERM)
        for name, proc in running.items():
            assert proc.proc is not None
            try:
                self.exit_codes[name] = await asyncio.to_thread(proc.proc.wait, 25)
            except subprocess.TimeoutExpired:
                self.exit_codes[name] = None
                proc.kill()
        self.aws.stop()
        self.redis.stop()

    def shutdown_summary(self) -> str:
        """One line on how the services took SIGTERM at the end."""
        bad = {n: c for n, c in self.exit_codes.items() if c != 0}
        if not bad:
            return f"shutdown: all {len(self.exit_codes)} services exited 0 on SIGTERM"
        return "shutdown: " + ", ".join(
            f"{n} {'killed after 25 s' if c is None else f'exited {c}'}" for n, c in bad.items()
        )

    def dependency_pids(self) -> dict[str, int]:
        """The emulator's and Redis's processes (their memory is reported, not judged)."""
        aws = self.aws.proc
        pids = {"(aws-emulator)": aws.pid} if aws is not None and aws.poll() is None else {}
        return pids | self.redis.pids()

    def lease_owners(self) -> dict[str, str]:
        """Shard id → the worker id holding its lease (from the leases table)."""
        ddb = aws_client("dynamodb", self.settings())
        items = ddb.scan(TableName=self.settings().names.leases_table).get("Items", [])
        return {
            i["leaseKey"]["S"]: i["leaseOwner"]["S"]
            for i in items
            if "leaseOwner" in i and i.get("checkpoint", {}).get("S") != "SHARD_END"
        }

    def redis_client(self) -> RedisClient:
        """A client of this stack's Redis, in its mode (the caller closes it)."""
        return self.redis.client(self.settings())


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
                    channel, event["id"], event["type"], data.get("payment_id"), data.get("status")
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


# -- the ledger -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What a check of a set of payments found: deliveries missing and deliveries extra."""

    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0  # webhook retries with the same webhook-id (receivers drop them)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    lost_at: Counter[str] = field(default_factory=Counter)  # by sink: "ops-1 payments", …

    def expect(self, where: str, count: int) -> None:
        """One event expected once at ``where`` ("<sink> <payment> <type>"), seen ``count``."""
        if count == 0:
            self.lost += 1
            words = where.split()
            self.lost_at[
                " ".join(words[:1] if words[0] in ("audit", "webhook") else words[:2])
            ] += 1
            if len(self.missing) < 12:
                self.missing.append(where)
        elif count > 1:
            self.duplicated += count - 1
            if len(self.extra) < 12:
                self.extra.append(f"{where} x{count}")


@dataclass
class CounterReading:
    created: int
    updated: int
    pending: int

    def events_off(self, expected: int) -> dict[str, int]:
        """The event counters (``created``, ``updated``) that do not count ``expected``
        payments: name → their count."""
        counts = {"created": self.created, "updated": self.updated}
        return {name: count for name, count in counts.items() if count != expected}


class Ledger:
    """Reads every sink and checks each payment's events there: exactly once each."""

    def __init__(
        self,
        stack: Stack,
        clients: list[WatchingClient],
        receiver: WebhookReceiver | None,
        *,
        check_history: bool = True,
        audit_concurrency: int = 8,
    ) -> None:
        self.stack = stack
        self.audit_concurrency = audit_concurrency
        self.clients = clients
        self.receiver = receiver
        self.check_history = check_history
        self._audit_done: dict[str, Counter[str]] = {}
        self._status: dict[str, str] = {}
        self._seen_read: dict[str, int] = {}
        self.keys_prefix = f"pulse:{stack.prefix}"

    async def _history(self, redis: RedisClient, channel: str) -> dict[tuple[str, str], int]:
        """(payment id, event type) → entries in the channel's history stream."""
        counts: Counter[tuple[str, str]] = Counter()
        entries = stream_entries(await redis.xrange(ChannelKeys(self.keys_prefix).history(channel)))
        for _id, fields in entries:
            event = orjson.loads(fields[b"e"])
            payment = (event.get("data") or {}).get("payment_id")
            if payment:
                counts[payment, event["type"]] += 1
        return counts

    async def counters(self) -> CounterReading:
        redis = self.stack.redis_client()
        try:
            fields = await redis.hgetall(ChannelKeys(self.keys_prefix).counter("totals"))
            totals = {
                (k.decode() if isinstance(k, bytes) else k): int(v) for k, v in fields.items()
            }
        finally:
            await redis.aclose()
        return CounterReading(
            created=totals.get("events:created", 0),
            updated=totals.get("events:updated", 0),
            pending=sum(v for k, v in totals.items() if k.startswith("count:PENDING:")),
        )

    async def _audit(self, http: aiohttp.ClientSession, payment_id: str) -> Counter[str] | None:
        """The trail's event types, counted; None when ingest could not read it (moto's
        Query scans the whole table, so a long run's trails get slow to read)."""
        done = self._audit_done.get(payment_id)
        if done is not None:
            return done
        url = f"{self.stack.ingest_url}/v1/payments/{payment_id}/events"
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
                if resp.status != 200:
                    return None
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            return None
        counts = Counter(e["type"] for e in body["events"])
        if counts[CREATED] and counts[UPDATED]:
            self._audit_done[payment_id] = counts
        return counts

    async def _audits(
        self, http: aiohttp.ClientSession, payments: list[Posted]
    ) -> list[tuple[Posted, Counter[str] | None]]:
        """Every payment's trail, a few at a time; unreadable ones retried one by one."""
        limit = asyncio.Semaphore(self.audit_concurrency)

        async def one(p: Posted) -> tuple[Posted, Counter[str] | None]:
            async with limit:
                return p, await self._audit(http, p.payment_id)

        results = list(await asyncio.gather(*(one(p) for p in payments)))
        for i, (p, first) in enumerate(results):
            counts = first
            for _ in range(3):
                if counts is not None:
                    break
                await asyncio.sleep(1.0)
                counts = await self._audit(http, p.payment_id)
            results[i] = (p, counts)
        return results

    async def _statuses(self, http: aiohttp.ClientSession, payments: list[Posted]) -> None:
        """Each payment's decided status: from an updated event a client saw, else ingest."""
        for client in self.clients:
            for seen in client.seen[self._seen_read.get(client.name, 0) :]:
                if seen.type == UPDATED and seen.payment_id and seen.status:
                    self._status[seen.payment_id] = seen.status
            self._seen_read[client.name] = len(client.seen)
        limit = asyncio.Semaphore(16)

        async def one(payment_id: str) -> None:
            url = f"{self.stack.ingest_url}/v1/payments/{payment_id}"
            async with limit:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=20)) as resp:
                        status = (await resp.json())["status"] if resp.status == 200 else None
                        if status not in (None, "PENDING"):
                            self._status[payment_id] = status

        await asyncio.gather(
            *(one(p.payment_id) for p in payments if p.payment_id not in self._status)
        )

    def audit_rows(self, payment_id: str) -> list[str]:
        """The payment's audit rows read straight from the events table (diagnostics)."""
        ddb = aws_client("dynamodb", self.stack.settings())
        items = ddb.query(
            TableName=self.stack.settings().names.events_table,
            KeyConditionExpression="payment_id = :p",
            ExpressionAttributeValues={":p": {"S": payment_id}},
            ConsistentRead=True,
        )["Items"]
        return [f"{i['sk']['S']} {i['type']['S']}" for i in items]

    def forget_audit(self) -> None:
        """Read every audit trail afresh at the next check (the final one)."""
        self._audit_done.clear()

    async def check(self, payments: list[Posted], *, audit: bool = True) -> Tally:
        """Every sink's deliveries for ``payments``; cheap sinks first, so a poll that
        already misses something there does not read 200 audit trails."""
        tally = Tally()
        async with ingest_client() as http:
            await self._statuses(http, payments)
            self._check_clients(payments, tally)
            self._check_webhooks(payments, tally)
            if self.check_history:
                redis = self.stack.redis_client()
                try:
                    await self._check_history(redis, payments, tally)
                finally:
                    await redis.aclose()
            if audit and tally.lost == 0:
                for p, counts in await self._audits(http, payments):
                    if counts is None:
                        tally.expect(f"audit {p.payment_id} (unreadable: ingest answered 503)", 0)
                        continue
                    for kind in (CREATED, UPDATED):
                        tally.expect(f"audit {p.payment_id} {kind}", counts[kind])
            elif audit:
                tally.lost += 1  # not read yet: count it as missing until it is
                tally.missing.append("audit trails (not read: other sinks incomplete)")
        return tally

    def _status_of(self, p: Posted) -> str | None:
        return self._status.get(p.payment_id)

    def _check_clients(self, payments: list[Posted], tally: Tally) -> None:
        for client in self.clients:
            counts: Counter[tuple[str, str | None, str]] = Counter(
                (s.channel, s.payment_id, s.type) for s in client.seen
            )
            for p in payments:
                wanted: list[tuple[str, str]] = []
                if "payments" in client.channels:
                    wanted += [("payments", CREATED), ("payments", UPDATED)]
                if "alerts" in client.channels and self._status_of(p) not in (None, APPROVED):
                    wanted.append(("alerts", DECISION))
                account = f"account:{p.account_id}"
                if account in client.channels:
                    wanted += [(account, CREATED), (account, UPDATED), (account, NOTIFICATION)]
                for channel, kind in wanted:
                    tally.expect(
                        f"{client.name} {channel} {p.payment_id} {kind}",
                        counts[channel, p.payment_id, kind],
                    )

    def _check_webhooks(self, payments: list[Posted], tally: Tally) -> None:
        if self.receiver is None:
            return
        ids: dict[str | None, set[str]] = defaultdict(set)
        posts: Counter[str | None] = Counter()
        for _account, webhook_id, payment in self.receiver.deliveries:
            ids[payment].add(webhook_id)
            posts[payment] += 1
        for p in payments:
            if p.account_id not in self.receiver.secrets:
                continue
            distinct = len(ids.get(p.payment_id, ()))
            tally.expect(f"webhook {p.payment_id} notification", distinct)
            tally.redelivered += posts[p.payment_id] - distinct

    async def _check_history(
        self, redis: RedisClient, payments: list[Posted], tally: Tally
    ) -> None:
        feed = await self._history(redis, "payments")
        accounts: dict[str, dict[tuple[str, str], int]] = {}
        for p in payments:
            for kind in (CREATED, UPDATED):
                tally.expect(
                    f"history payments {p.payment_id} {kind}", feed.get((p.payment_id, kind), 0)
                )
            if p.account_id not in accounts:
                accounts[p.account_id] = await self._history(redis, f"account:{p.account_id}")
            mine = accounts[p.account_id]
            for kind in (CREATED, UPDATED, NOTIFICATION):
                tally.expect(
                    f"history account:{p.account_id} {p.payment_id} {kind}",
                    mine.get((p.payment_id, kind), 0),
                )


@dataclass
class Rig:
    """A started stack with its watchers: subscribed clients and the webhook receiver."""

    stack: Stack
    clients: list[WatchingClient]
    receiver: WebhookReceiver
    stopping: asyncio.Event


@contextlib.asynccontextmanager
async def running(
    stack: Stack, clients: list[WatchingClient], accounts: list[str]
) -> AsyncIterator[Rig]:
    """Start ``stack``, register a webhook endpoint per account (``pulse webhooks add``),
    connect ``clients`` and wait until each is subscribed; stop everything on exit."""
    receiver = WebhookReceiver()
    rig = Rig(stack, clients, receiver, asyncio.Event())
    tasks: list[asyncio.Task[None]] = []
    try:
        log(f"starting the stack in {stack.workdir}")
        await stack.start()
        await receiver.start()
        for account in accounts:
            await receiver.register(stack, account)
        tasks = [asyncio.create_task(c.run(rig.stopping)) for c in clients]
        async with asyncio.timeout(30):
            await asyncio.gather(*(c.subscribed.wait() for c in clients))
        yield rig
    finally:
        rig.stopping.set()
        for client in clients:
            await client.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await receiver.stop()
        await stack.stop()


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS`` in /proc), None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None

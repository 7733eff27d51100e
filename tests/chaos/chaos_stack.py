"""Pulse as separate real processes the reliability suites can hurt: a moto server, a
``redis-server`` (with an append-only file, so a restart keeps its data; standalone, cluster
or sentinel, see ``redis_modes``), and every service as its own ``python -m <package>``
process, several replicas of those that scale out. Nothing is mocked. The stack owns every
process, so it can kill, pause and restart any of them.

The services run here with a few documented settings chosen so a suite settles in seconds
(``WORKER_ENV``, ``STREAM_ENV``, ``INGEST_ENV``). Imported through ``harness``, which
re-exports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from redis_modes import RedisDeployment, RedisMode

from pulse.clients import RedisClient, aws_client
from pulse.settings import PulseSettings
from pulse.topology_apply import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    LOCAL_WEBHOOK_RECEIVERS_ENV,
    WHOLE_RUN_HISTORY_ENV,
    free_port,
    stop_process,
    wait_for_port,
)
from pulse_dev.testing import ServiceProcess

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

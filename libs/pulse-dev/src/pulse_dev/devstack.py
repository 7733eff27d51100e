"""``pulse dev``: the whole system on one machine, as ``make run`` starts it.

Starts (or reuses) the AWS emulator and Redis, applies the topology, runs the five services as
child processes with prefixed logs, waits until each is ready, prints the URLs and a dev token,
optionally sends demo traffic, and on Ctrl-C / SIGTERM stops every child it started. Children
also get SIGTERM from the kernel if this launcher dies (PR_SET_PDEATHSIG), so none is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp

from pulse.auth import issue_token
from pulse.logging import configure_logging
from pulse.service import sleep_unless_stopped
from pulse.settings import PulseSettings
from pulse.topology import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    LOCAL_WEBHOOK_RECEIVERS_ENV,
    emulator_argv,
    free_port,
    redis_answers,
    redis_server_argv,
    redis_server_binary,
)

__all__ = [
    "DevStackConfig",
    "DevStackProcess",
    "ServiceSpec",
    "free_port_block",
    "run_dev_stack",
]

_COLOURS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m", "\033[37m")
_RESET = "\033[0m"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # directory / image name
    package: str  # python -m <package>
    port: int
    ready_path: str = "/readyz"


@dataclass
class DevStackConfig:
    emulator_port: int = 4566
    redis_url: str | None = None  # None: 127.0.0.1:6379 if it answers, else start one there
    ingest_port: int = 8080
    gateway_port: int = 8090
    ops_port_base: int = 9101
    resource_prefix: str = "pulse-"
    redis_prefix: str = "pulse:"
    demo_rate: float = 0.0  # payments per second; 0 = no demo traffic
    json_logs: bool = False
    log_level: str = "info"
    colour: bool = field(default_factory=sys.stdout.isatty)
    extra_env: dict[str, str] = field(default_factory=dict)

    def services(self) -> list[ServiceSpec]:
        return [
            ServiceSpec("ingest", "ingest", self.ingest_port),
            ServiceSpec("stream-processor", "stream_processor", self.ops_port_base),
            ServiceSpec("fraud-worker", "fraud_worker", self.ops_port_base + 1),
            ServiceSpec("notify-worker", "notify_worker", self.ops_port_base + 2),
            ServiceSpec("ws-gateway", "ws_gateway", self.gateway_port),
        ]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Child:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, colour: str) -> None:
        self.name = name
        self.proc = proc
        self.colour = colour
        self.pump: asyncio.Task[None] | None = None


class DevStack:
    def __init__(self, config: DevStackConfig, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.out = out
        self.children: list[_Child] = []
        self.stopping = asyncio.Event()
        self.width = max(len(s.name) for s in config.services()) + 1

    # -- output -----------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _prefix(self, child: _Child) -> str:
        label = f"{child.name:<{self.width}}|"
        return f"{child.colour}{label}{_RESET} " if self.config.colour else f"{label} "

    async def _pump(self, child: _Child) -> None:
        assert child.proc.stdout is not None
        prefix = self._prefix(child)
        async for line in child.proc.stdout:
            self.out.write(prefix + line.decode(errors="replace"))
        self.out.flush()

    # -- processes --------------------------------------------------------------------
    async def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child = _Child(name, proc, _COLOURS[len(self.children) % len(_COLOURS)])
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        return child

    async def stop_all(self, grace: float = 15.0) -> None:
        for child in reversed(self.children):
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                await asyncio.wait_for(child.proc.wait(), remaining)
            except TimeoutError:
                self.say(f"{child.name} did not stop within {grace:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
            if child.pump is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await child.pump

    # -- dependencies -----------------------------------------------------------------
    async def ensure_emulator(self, env: dict[str, str]) -> None:
        port = self.config.emulator_port
        if await _port_open(port):
            self.say(f"AWS emulator: reusing the one on 127.0.0.1:{port}")
            return
        self.say(f"AWS emulator: starting moto server on 127.0.0.1:{port}")
        await self.spawn("aws-emulator", emulator_argv(port), env)
        try:
            async with asyncio.timeout(30):
                await _wait_port(port)
        except TimeoutError:
            raise RuntimeError(f"the AWS emulator did not listen on port {port} in 30 s") from None

    async def ensure_redis(self, env: dict[str, str]) -> str:
        if self.config.redis_url:
            return self.config.redis_url
        if redis_answers():
            self.say("Redis: using the one on 127.0.0.1:6379")
            return "redis://127.0.0.1:6379/0"
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "no Redis answers on 127.0.0.1:6379 and no redis-server binary was found; "
                "install Redis or run `uv sync` to get the bundled one"
            )
        workdir = await asyncio.to_thread(_run_dir)
        self.say("Redis: starting one on 127.0.0.1:6379")
        await self.spawn("redis", redis_server_argv(binary, 6379, workdir), env)
        try:
            async with asyncio.timeout(30):
                await _wait_port(6379)
        except TimeoutError:
            raise RuntimeError("redis-server did not listen on port 6379 in 30 s") from None
        return "redis://127.0.0.1:6379/0"

    async def wait_ready(self, spec: ServiceSpec) -> None:
        """Poll the service's readiness endpoint until it answers 200."""
        url = f"http://127.0.0.1:{spec.port}{spec.ready_path}"
        async with aiohttp.ClientSession() as session:
            while True:
                self._check_children()
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                        if resp.status == 200:  # noqa: PLR2004 - HTTP OK
                            return
                await asyncio.sleep(0.2)

    def _check_children(self) -> None:
        for child in self.children:
            if child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}")

    async def watch(self) -> int:
        """Wait for a stop signal or a child's death; the launcher's exit code."""
        waits = {asyncio.create_task(c.proc.wait()): c for c in self.children}
        stop = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
        for task in [*waits, stop]:
            task.cancel()
        if stop in done:
            return 0
        dead = next(waits[t] for t in done if t in waits)
        self.say(f"{dead.name} exited with code {dead.proc.returncode}; stopping the stack")
        return 1


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _wait_port(port: int) -> None:
    while not await _port_open(port):  # noqa: ASYNC110 - polling another process's port
        await asyncio.sleep(0.1)


def _base_env(config: DevStackConfig) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in AWS_TEST_CREDENTIALS.items():
        env.setdefault(key, value)
    env.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{config.emulator_port}",
            "PULSE_RESOURCE_PREFIX": config.resource_prefix,
            "PULSE_REDIS_PREFIX": config.redis_prefix,
            "PULSE_LOG_FORMAT": "json" if config.json_logs else "console",
            "PULSE_LOG_LEVEL": config.log_level,
            "PYTHONUNBUFFERED": "1",
            **LOCAL_WEBHOOK_RECEIVERS_ENV,  # webhooks to receivers on this machine, over http
        }
    )
    env.update(config.extra_env)
    return env


def _operator_env(config: DevStackConfig) -> str:
    """The environment an operator command needs to reach this stack's AWS emulator."""
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{config.emulator_port}",
        **AWS_TEST_CREDENTIALS,
        "PULSE_RESOURCE_PREFIX": config.resource_prefix,
        "PULSE_REDIS_PREFIX": config.redis_prefix,
        **LOCAL_WEBHOOK_RECEIVERS_ENV,  # `pulse webhooks add` of a receiver on this machine
    }
    return " ".join(f"{k}={v}" for k, v in env.items())


def _banner(config: DevStackConfig, settings: PulseSettings) -> str:
    secret = settings.jwt_secret.get_secret_value()
    ops = issue_token(secret, sub="ops-dev", roles=["ops"], ttl_seconds=12 * 3600)
    account = issue_token(secret, sub="A", ttl_seconds=12 * 3600)
    ingest = f"http://127.0.0.1:{config.ingest_port}"
    gateway = f"ws://127.0.0.1:{config.gateway_port}/ws"
    return "\n".join(
        [
            "",
            "Pulse is running.",
            f"  ingest API      {ingest}   (OpenAPI: {ingest}/openapi.json)",
            f"  WebSocket       {gateway}?token=<token>",
            f"  AWS emulator    http://127.0.0.1:{config.emulator_port}",
            "",
            "  dev tokens (12 h): role ops (every account, every channel), and account A:",
            f"    OPS={ops}",
            f"    TOKEN={account}",
            "",
            "  try (in a shell where the two lines above are set):",
            f'    pulse tail --url {gateway} --channel payments --token "$OPS"',
            f'    curl -s -X POST {ingest}/v1/payments -H "Authorization: Bearer $TOKEN" \\',
            "      -H 'Content-Type: application/json' \\",
            '      -d \'{"account_id":"A","amount":"12.50","currency":"EUR","merchant_id":"m-1"}\'',
            "  the operator commands (pulse keys, pulse webhooks) reach this stack with:",
            f"    export {_operator_env(config)}",
            "    pulse keys create --account A    # an API key for a merchant backend",
            "  Ctrl-C stops everything.",
            "",
        ]
    )


async def _demo_traffic(
    config: DevStackConfig, settings: PulseSettings, stopping: asyncio.Event
) -> None:
    from pulse_dev.load import AccountTokens, random_payment  # noqa: PLC0415 - only with --demo

    url = f"http://127.0.0.1:{config.ingest_port}/v1/payments"
    interval = 1.0 / config.demo_rate
    tokens = AccountTokens(settings.jwt_secret.get_secret_value())
    async with aiohttp.ClientSession() as session:
        while not stopping.is_set():
            payment = random_payment()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await session.post(
                    url,
                    json=payment,
                    headers=tokens.headers(payment["account_id"]),
                    timeout=aiohttp.ClientTimeout(5),
                )
            await sleep_unless_stopped(stopping, interval)


async def run_dev_stack(config: DevStackConfig, out: TextIO = sys.stdout) -> int:
    """Run the local stack until Ctrl-C / SIGTERM; the exit code (0 after a clean stop)."""
    # The launcher reports in its own words; library log lines only when something is wrong.
    configure_logging("pulse-dev", level="warning", fmt="console")
    stack = DevStack(config, out)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stack.stopping.set)
    env = _base_env(config)
    code = 0
    demo: asyncio.Task[None] | None = None
    try:
        await stack.ensure_emulator(env)
        env["REDIS_URL"] = await stack.ensure_redis(env)
        # The launcher applies the topology itself, so it needs the same AWS settings.
        os.environ.update(
            {k: env[k] for k in ("AWS_ENDPOINT_URL", "REDIS_URL", *AWS_TEST_CREDENTIALS)}
        )
        settings = _settings_from(env)
        outputs = await asyncio.to_thread(apply_topology, settings)
        stack.say(f"topology: {len(outputs.changes)} change(s) applied")
        for spec in config.services():
            svc_env = {**env, "PULSE_HTTP_PORT": str(spec.port), "PULSE_SERVICE_NAME": spec.name}
            await stack.spawn(spec.name, [sys.executable, "-m", spec.package], svc_env)
        try:
            async with asyncio.timeout(90):
                await asyncio.gather(*(stack.wait_ready(s) for s in config.services()))
        except TimeoutError:
            raise RuntimeError("services not ready after 90 s; see their logs above") from None
        stack.say(_banner(config, settings))
        stack.say("ready")
        if config.demo_rate > 0:
            stack.say(f"demo traffic: {config.demo_rate:g} payment(s)/s")
            demo = asyncio.create_task(_demo_traffic(config, settings, stack.stopping))
        code = await stack.watch()
    except RuntimeError as exc:
        stack.say(f"pulse dev: {exc}")
        code = 1
    finally:
        stack.stopping.set()
        if demo is not None:
            await demo
        stack.say("stopping…")
        await stack.stop_all()
        stack.say("stopped")
    return code


def _run_dir() -> str:
    workdir = Path(".run")
    workdir.mkdir(exist_ok=True)
    return str(workdir.resolve())


def _settings_from(env: dict[str, str]) -> PulseSettings:
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return PulseSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def free_port_block(size: int) -> int:
    """A base port followed by ``size - 1`` more free ports (for the workers' ops ports)."""
    for _ in range(100):
        base = free_port()
        if base + size > 65535:  # noqa: PLR2004 - highest TCP port
            continue
        if all(_bindable(p) for p in range(base, base + size)):
            return base
    raise RuntimeError(f"no block of {size} free ports found")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class DevStackProcess:
    """``pulse dev`` as a child process on free ports, for tests and benchmarks.

    ``start()`` returns once the launcher printed ``ready``; ``stop()`` sends SIGTERM and
    returns the exit code.
    """

    def __init__(self, log_path: Path, *, redis_url: str | None = None, prefix: str = "") -> None:
        self.log_path = log_path
        self.emulator_port, self.ingest_port, self.gateway_port = (free_port() for _ in range(3))
        self.ops_port_base = free_port_block(3)
        self.prefix = prefix or f"dev{os.getpid()}-"
        self.redis_url = redis_url
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/ws"

    @property
    def ports(self) -> list[int]:
        ops = self.ops_port_base
        return [self.emulator_port, self.ingest_port, self.gateway_port, ops, ops + 1, ops + 2]

    def start(self, *, timeout: float = 120.0, extra_args: list[str] | None = None) -> None:
        argv = [
            sys.executable,
            "-m",
            "pulse.cli",
            "dev",
            "--emulator-port",
            str(self.emulator_port),
            "--ingest-port",
            str(self.ingest_port),
            "--gateway-port",
            str(self.gateway_port),
            "--ops-port-base",
            str(self.ops_port_base),
            "--resource-prefix",
            self.prefix,
            "--redis-prefix",
            f"pulse:{self.prefix}",
            *(["--redis-url", self.redis_url] if self.redis_url else []),
            *(extra_args or []),
        ]
        env = dict(os.environ)
        env.pop("AWS_ENDPOINT_URL", None)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
                argv, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while b"\nready\n" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"pulse dev did not become ready:\n{self.logs()[-6000:]}")
            time.sleep(0.2)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

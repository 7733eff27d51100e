"""``pulse dev``: the whole system on one machine, as ``make run`` starts it.

Starts (or reuses) the AWS emulator and Redis, applies the topology, runs the five services as
child processes with prefixed logs, waits until each is ready, records the stack in
``.run/stack.json`` (:class:`pulse.cli.target.LocalStack`: how ``pulse`` commands in another
terminal find it), prints the URLs, dev tokens and commands to paste, optionally sends demo
traffic (:class:`pulse_dev.load.DemoTraffic`), and on Ctrl-C / SIGTERM stops the services,
then the emulator and Redis it started, and removes the stack file. Children also get SIGTERM
from the kernel if this launcher dies (PR_SET_PDEATHSIG), so none is left; a stack file left
by a killed launcher names a dead pid and is ignored.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import aiohttp

from pulse.auth import issue_token
from pulse.cli.target import STACK_FILE, LocalStack
from pulse.logging import configure_logging
from pulse.service import sleep_unless_stopped
from pulse.settings import PulseSettings
from pulse.topology_apply import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    LOCAL_WEBHOOK_RECEIVERS_ENV,
    emulator_argv,
    free_port,
    owns_port,
    redis_answers,
    redis_server_argv,
    redis_server_binary,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

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
# A service's shutdown grace in the local stack, and the launcher's wait for each group of
# children (services, then the emulator and Redis) before it kills them: Ctrl-C is quick.
_SERVICE_GRACE_SECONDS = 2
_STOP_GRACE_SECONDS = 3.0
_DEPENDENCY_GRACE_SECONDS = 1.0  # the emulator and Redis keep nothing: no reason to wait
_TOKEN_TTL_SECONDS = 12 * 3600


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

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def gateway_url(self) -> str:
        """The gateway's HTTP base: the console at ``/``, the WebSocket at ``/ws``."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def gateway_origins(self) -> list[str]:
        """The origins a browser gives the console's page (the one ingest lets call it)."""
        return [f"http://{host}:{self.gateway_port}" for host in ("127.0.0.1", "localhost")]

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
    def __init__(
        self, name: str, proc: asyncio.subprocess.Process, colour: str, *, dependency: bool
    ) -> None:
        self.name = name
        self.proc = proc
        self.colour = colour
        self.dependency = dependency  # the emulator or Redis: stopped after the services
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
    async def spawn(
        self, name: str, argv: list[str], env: dict[str, str], *, dependency: bool = False
    ) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        colour = _COLOURS[len(self.children) % len(_COLOURS)]
        child = _Child(name, proc, colour, dependency=dependency)
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        return child

    async def stop_all(self, grace: float = _STOP_GRACE_SECONDS) -> None:
        """Stop the services (SIGTERM, ``grace`` seconds before SIGKILL), then what they use:
        the emulator and Redis, which the services may still call while they stop."""
        await self._stop([c for c in self.children if not c.dependency], grace)
        dependencies = [c for c in self.children if c.dependency]
        await self._stop(dependencies, min(grace, _DEPENDENCY_GRACE_SECONDS))

    async def _stop(self, children: list[_Child], grace: float) -> None:
        for child in children:
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                await asyncio.wait_for(child.proc.wait(), remaining)
            except TimeoutError:
                self.say(f"{child.name} did not stop within {grace:g} s; killing it")
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
        await self.spawn("aws-emulator", emulator_argv(port), env, dependency=True)
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
        await self.spawn("redis", redis_server_argv(binary, 6379, workdir), env, dependency=True)
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
    # Ctrl-C stops the stack within seconds: little is in flight on a laptop.
    env.setdefault("PULSE_SHUTDOWN_GRACE_SECONDS", str(_SERVICE_GRACE_SECONDS))
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


def _service_env(config: DevStackConfig, spec: ServiceSpec, env: dict[str, str]) -> dict[str, str]:
    """The environment of one service: the stack's, its port, and what ties the console on
    the gateway to ingest (the console's origins may call ingest; it knows ingest's URL)."""
    own = {"PULSE_HTTP_PORT": str(spec.port), "PULSE_SERVICE_NAME": spec.name}
    if spec.name == "ingest":
        own["PULSE_CORS_ORIGINS"] = ",".join(config.gateway_origins())
    if spec.name == "ws-gateway":
        own["PULSE_CONSOLE_INGEST_URL"] = config.ingest_url
    return {**env, **own, **config.extra_env}


def _local_stack(config: DevStackConfig, settings: PulseSettings) -> LocalStack:
    return LocalStack(
        pid=os.getpid(),
        aws_endpoint_url=f"http://127.0.0.1:{config.emulator_port}",
        region=settings.aws_region,
        resource_prefix=config.resource_prefix,
        redis_url=settings.redis_url,
        redis_prefix=config.redis_prefix,
        ingest_url=config.ingest_url,
        gateway_url=config.gateway_url,
        started_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        env=dict(LOCAL_WEBHOOK_RECEIVERS_ENV),
    )


def _remove_stack_file(path: Path) -> None:
    """Remove the stack file if this launcher wrote it (another may have replaced it)."""
    stack = LocalStack.read(path)
    if stack is not None and stack.pid == os.getpid():
        path.unlink(missing_ok=True)


def _pulse_command() -> str:
    """How to run ``pulse`` from the launcher's directory, to paste in another terminal:
    the virtual environment's script (``.venv/bin/pulse`` from a checkout's root)."""
    script = Path(sys.executable).parent / "pulse"
    if not script.exists():
        return "pulse"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def _banner(config: DevStackConfig, settings: PulseSettings, stack_file: Path) -> str:
    secret = settings.jwt_secret.get_secret_value()
    ops = issue_token(secret, sub="ops-dev", roles=["ops"], ttl_seconds=_TOKEN_TTL_SECONDS)
    account = issue_token(secret, sub="A", ttl_seconds=_TOKEN_TTL_SECONDS)
    ingest, gateway = config.ingest_url, config.gateway_url
    pulse = _pulse_command()
    return "\n".join(
        [
            "",
            "Pulse is running.",
            f"  console         {gateway}/#token={ops}",
            f"  ingest API      {ingest}   (OpenAPI: {ingest}/openapi.json)",
            f"  WebSocket       {gateway.replace('http', 'ws', 1)}/ws?token=<token>",
            f"  AWS emulator    http://127.0.0.1:{config.emulator_port}",
            f"  stack file      {stack_file}",
            "",
            "  dev tokens (12 h) — role ops (every account, every channel):",
            f"    {ops}",
            "  and account A:",
            f"    {account}",
            "",
            f"  in another terminal, from {Path.cwd()} (pulse finds this stack by its stack file):",
            f"    {pulse} tail --channel payments --token {ops}",
            f"    {pulse} review list",
            f"    {pulse} dlq list",
            f"    {pulse} keys create --account A",
            f'    curl -s -X POST {ingest}/v1/payments -H "Authorization: Bearer {account}" \\',
            "      -H 'Content-Type: application/json' \\",
            '      -d \'{"account_id":"A","amount":"12.50","currency":"EUR","merchant_id":"m-1"}\'',
            "  Ctrl-C stops everything.",
            "",
        ]
    )


async def _demo_traffic(
    config: DevStackConfig, settings: PulseSettings, stopping: asyncio.Event
) -> None:
    from pulse_dev.load import AccountTokens, DemoTraffic  # noqa: PLC0415 - only with --demo

    url = f"{config.ingest_url}/v1/payments"
    interval = 1.0 / config.demo_rate
    tokens = AccountTokens(settings.jwt_secret.get_secret_value())
    traffic = DemoTraffic(rate=config.demo_rate)
    async with aiohttp.ClientSession() as session:
        while not stopping.is_set():
            payment = traffic.next_payment()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.post(
                    url,
                    json=payment,
                    headers=tokens.headers(payment["account_id"]),
                    timeout=aiohttp.ClientTimeout(5),
                ):
                    pass  # the answer is not looked at: the console shows what happened
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
    stack_file = (Path.cwd() / STACK_FILE).resolve()
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
            svc_env = _service_env(config, spec, env)
            await stack.spawn(spec.name, [sys.executable, "-m", spec.package], svc_env)
        try:
            async with asyncio.timeout(90):
                await asyncio.gather(*(stack.wait_ready(s) for s in config.services()))
        except TimeoutError:
            raise RuntimeError("services not ready after 90 s; see their logs above") from None
        await asyncio.to_thread(_local_stack(config, settings).write, stack_file)
        stack.say(_banner(config, settings, stack_file))
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
        _remove_stack_file(stack_file)
        if demo is not None:  # a request in flight is dropped: Ctrl-C waits for none
            demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
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
        block = range(base, base + size)
        if all(owns_port(p) for p in block) and all(_bindable(p) for p in block):
            return base
    raise RuntimeError(f"no block of {size} free ports found")


def _bindable(port: int) -> bool:
    """Whether a server could listen on ``port`` now: as servers do, with ``SO_REUSEADDR``,
    so a port whose last connections wait out TIME_WAIT (thousands, after a benchmark's
    clients) counts as free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        # The launcher's working directory, where it keeps .run/ (its stack file).
        self.workdir = log_path.parent
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
    def stack_file(self) -> Path:
        return self.workdir / STACK_FILE

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
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while b"\nready\n" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"pulse dev did not become ready:\n{self.logs()[-6000:]}")
            time.sleep(0.2)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGINT: Ctrl-C) and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @classmethod
    @contextlib.contextmanager
    def running(cls, workdir: Path, *, redis_url: str, prefix: str) -> Iterator[DevStackProcess]:
        """A started stack working in ``workdir`` (its log and .run/ there), killed after."""
        proc = cls(workdir / "pulse-dev.log", redis_url=redis_url, prefix=prefix)
        proc.start()
        try:
            yield proc
        finally:
            proc.kill()

"""``pulse dev``: the whole system on one machine, as ``make run`` starts it.

Starts (or reuses) the AWS emulator and Redis, applies the topology, runs the five services as
child processes with prefixed logs, waits until each is ready, records the stack in
``.run/stack.json`` (:class:`pulse.cli.target.LocalStack`: how ``pulse`` commands in another
terminal find it), prints the URLs, dev tokens and commands to paste, optionally sends demo
traffic (:class:`pulse_dev.load.DemoTraffic`), and on Ctrl-C / SIGTERM stops the services,
then the emulator and Redis it started, and removes the stack file. Children also get SIGTERM
from the kernel if this launcher dies (PR_SET_PDEATHSIG), so none is left; a stack file left
by a killed launcher names a dead pid and is ignored.

The children themselves (spawned, their output prefixed, stopped in order) are
:class:`pulse_dev.devstack_children.DevStack`'s; ``pulse dev`` as a child process of a test
or a benchmark is :class:`pulse_dev.devstack_process.DevStackProcess` (re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import aiohttp

from pulse.auth import issue_token
from pulse.cli.target import STACK_FILE, LocalStack
from pulse.logging import configure_logging
from pulse.service import sleep_unless_stopped
from pulse.settings import PulseSettings
from pulse.topology_apply import apply_topology
from pulse_dev.devstack_children import DevStack
from pulse_dev.devstack_process import DevStackProcess, free_port_block
from pulse_dev.emulators import AWS_TEST_CREDENTIALS, LOCAL_WEBHOOK_RECEIVERS_ENV

__all__ = [
    "DevStackConfig",
    "DevStackProcess",
    "ServiceSpec",
    "free_port_block",
    "run_dev_stack",
]

# A service's shutdown grace in the local stack (the launcher's own waits for its children
# are in pulse_dev.devstack_children): Ctrl-C is quick.
_SERVICE_GRACE_SECONDS = 2
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


def _settings_from(env: dict[str, str]) -> PulseSettings:
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return PulseSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)

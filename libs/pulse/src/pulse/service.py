"""The Kubernetes lifecycle every Pulse process shares.

- ``/healthz`` (liveness) answers as long as the event loop runs; it checks no dependency.
- ``/readyz`` (readiness) runs the service's dependency checks and answers 503 while any
  fails or while the process is shutting down.
- ``/metrics`` serves Prometheus.
- With ``PULSE_OPS_PORT`` set (and not the API's port), the three live on that internal
  port; an API keeps ``/healthz`` and ``/readyz`` on its public port too (load balancers
  probe it there) but not ``/metrics`` (:func:`serving_api`).
- SIGTERM / SIGINT set :attr:`Lifecycle.stopping`; the service stops taking work, finishes
  what is in flight within ``shutdown_grace_seconds`` and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, TypeVar

import uvloop
from aiohttp import web

from pulse.errors import ConfigurationError
from pulse.logging import configure_logging, get_logger
from pulse.metrics import BUILD_INFO, http_metrics_middleware, metrics_handler

if TYPE_CHECKING:
    from pulse.clients import RedisClient
    from pulse.settings import PulseSettings

__all__ = [
    "FrontDoor",
    "Lifecycle",
    "ReadinessCheck",
    "add_ops_routes",
    "ops_app",
    "redis_check",
    "retry_until_found",
    "run_service",
    "serving_api",
    "serving_ops",
    "sleep_unless_stopped",
    "start_http_app",
    "table_check",
]

ReadinessCheck = Callable[[], Awaitable[object]]
# Given aiohttp's protocol factory, the factory of the listening socket's protocols (see
# :func:`start_http_app`).
FrontDoor = Callable[[Callable[[], asyncio.BaseProtocol]], Callable[[], asyncio.BaseProtocol]]
T = TypeVar("T")
log = get_logger("pulse.service")


class Lifecycle:
    """Shutdown signalling and readiness checks of one process."""

    def __init__(self, settings: PulseSettings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.checks: dict[str, ReadinessCheck] = {}
        self.started_at = time.time()

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info("shutdown requested", signal=sig.name)
        self.stopping.set()

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Run every check (each bounded to 2 s); ``(ok, {name: "ok" | error})``."""
        results: dict[str, str] = {}
        # A copy: a part that starts late (a queue's consumer) adds its check meanwhile.
        for name, check in list(self.checks.items()):
            try:
                await asyncio.wait_for(check(), timeout=2.0)
                results[name] = "ok"
            except Exception as exc:  # a failing dependency is reported, not raised
                results[name] = f"{type(exc).__name__}: {exc}"[:200]
        if self.stopping.is_set():
            results["shutdown"] = "stopping"
        ok = all(v == "ok" for v in results.values())
        return ok, results


def add_ops_routes(app: web.Application, lifecycle: Lifecycle, *, metrics: bool = True) -> None:
    """Mount ``/healthz``, ``/readyz`` and (unless ``metrics`` is false) ``/metrics`` on ``app``."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ok, results = await lifecycle.readiness()
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": results},
            status=200 if ok else 503,
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if metrics:
        app.router.add_get("/metrics", metrics_handler)


async def start_http_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 10.0,
    backlog: int = 128,
    front: FrontDoor | None = None,
) -> web.AppRunner:
    """Start ``app`` on ``host:port``; the caller awaits ``runner.cleanup()`` to stop it.

    ``backlog`` is the listen queue: a server that takes bursts of thousands of connections
    (the gateway) needs more than aiohttp's 128, or the kernel resets connects while the
    event loop is busy. ``front``, if given, makes the protocol of every accepted
    connection from aiohttp's protocol factory (``web.Server``): a service may serve some
    connections itself and hand the others to aiohttp.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site: web.BaseSite = (
        web.TCPSite(runner, host, port, reuse_address=True, backlog=backlog)
        if front is None
        else _FrontSite(runner, host, port, backlog=backlog, front=front)
    )
    await site.start()
    log.info("http listening", host=host, port=port)
    return runner


class _FrontSite(web.BaseSite):
    """A TCP site whose connections get ``front``'s protocols instead of aiohttp's."""

    __slots__ = ("_front", "_host", "_port")

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, backlog: int, front: FrontDoor
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._front = front

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")
        self._server = await asyncio.get_running_loop().create_server(
            self._front(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )


def ops_app(lifecycle: Lifecycle) -> web.Application:
    """A small app with only the ops routes, for workers that serve no API."""
    app = web.Application(middlewares=[http_metrics_middleware(lifecycle.settings.service_name)])
    add_ops_routes(app, lifecycle)
    return app


async def sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stopping`` is set meanwhile."""
    if seconds <= 0 or stopping.is_set():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


async def retry_until_found(
    what: str, find: Callable[[], T], stopping: asyncio.Event, *, retry_seconds: float = 2.0
) -> T | None:
    """Run the blocking ``find()`` until it succeeds; None if ``stopping`` is set first.

    For resources the topology may still be creating when a service starts.
    """
    while not stopping.is_set():
        try:
            return await asyncio.to_thread(find)
        except Exception as exc:
            log.warning("not available yet", resource=what, error=str(exc))
        await sleep_unless_stopped(stopping, retry_seconds)
    return None


def redis_check(redis: RedisClient) -> ReadinessCheck:
    """A readiness check that PINGs Redis."""

    async def check() -> None:
        await redis.ping()

    return check


def table_check(ddb: Any, table_name: str) -> ReadinessCheck:
    """A readiness check that describes a DynamoDB table (it exists and answers)."""

    async def check() -> None:
        await asyncio.to_thread(ddb.describe_table, TableName=table_name)

    return check


@asynccontextmanager
async def serving_ops(lifecycle: Lifecycle) -> AsyncIterator[None]:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` for the block, for a service with no
    API: on ``PULSE_OPS_PORT`` when set, else on ``PULSE_HTTP_PORT``."""
    settings = lifecycle.settings
    port = settings.separate_ops_port or settings.http_port
    runner = await start_http_app(ops_app(lifecycle), settings.http_host, port)
    try:
        yield
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving_api(
    app: web.Application,
    lifecycle: Lifecycle,
    *,
    shutdown_timeout: float | None = None,
    backlog: int = 128,
    front: FrontDoor | None = None,
) -> AsyncIterator[web.AppRunner]:
    """Serve the public ``app`` on ``PULSE_HTTP_PORT`` and the ops routes for the block.

    Mounts ``/healthz`` and ``/readyz`` on ``app`` (so ``app`` must not mount them itself).
    Without a separate ``PULSE_OPS_PORT``, ``/metrics`` goes on ``app`` as well, as a single
    port setup (``make run``, the tests) expects; with one, ``/metrics`` is served only on
    that internal port, next to its own ``/healthz`` and ``/readyz``, so the public port
    never exposes the metrics. Yields the API's runner; on exit the API stops first (its
    in-flight requests get ``shutdown_timeout``, default ``PULSE_SHUTDOWN_GRACE_SECONDS``),
    then the ops port, so probes keep answering while the API drains. ``front``: see
    :func:`start_http_app`.
    """
    settings = lifecycle.settings
    ops_port = settings.separate_ops_port
    add_ops_routes(app, lifecycle, metrics=ops_port is None)
    ops_runner = (
        await start_http_app(ops_app(lifecycle), settings.http_host, ops_port)
        if ops_port is not None
        else None
    )
    try:
        grace = settings.shutdown_grace_seconds if shutdown_timeout is None else shutdown_timeout
        runner = await start_http_app(
            app,
            settings.http_host,
            settings.http_port,
            shutdown_timeout=grace,
            backlog=backlog,
            front=front,
        )
        try:
            yield runner
        finally:
            await runner.cleanup()
    finally:
        if ops_runner is not None:
            await ops_runner.cleanup()


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "0+unknown"


def run_service(
    settings_factory: Callable[[], PulseSettings],
    main: Callable[[Lifecycle], Awaitable[None]],
    *,
    package: str,
) -> int:
    """Load settings, configure logging, run ``main`` until it returns; the exit code.

    Exit codes: 0 after a clean shutdown, 2 on invalid configuration, 1 on a crash.
    """
    try:
        settings = settings_factory()
    except ConfigurationError as exc:
        sys.stderr.write(f"{package}: {exc}\n")
        return 2
    configure_logging(settings.service_name, level=settings.log_level, fmt=settings.log_format)
    BUILD_INFO.info({"service": settings.service_name, "version": _package_version(package)})

    async def _run() -> None:
        lifecycle = Lifecycle(settings)
        lifecycle.install_signal_handlers()
        await main(lifecycle)

    try:
        # uvloop's event loop: the services are I/O-bound loops of small requests, where it
        # cuts the per-request overhead (measured on ingest's API against a bare PutItem loop).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_run())
    except ConfigurationError as exc:
        log.error("invalid configuration", error=str(exc))  # noqa: TRY400 - no traceback for bad config
        return 2
    except Exception:
        log.exception("service crashed")
        return 1
    log.info("stopped")
    return 0

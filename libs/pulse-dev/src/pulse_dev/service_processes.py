"""Pulse services as real child processes of a test or a benchmark, and how to talk to them.

- :class:`ServiceProcess` runs ``python -m <package>`` with its log file: start (waiting for
  its port), stop (SIGTERM, the exit code) or kill (SIGKILL, as a crash would);
- :class:`GatewayFactory` starts ws-gateway processes on a Redis, each a
  :class:`RunningGateway` (its port, Redis prefix, JWT secret :data:`GATEWAY_SECRET` unless
  given, tokens it accepts);
- :func:`next_frame` and :func:`send_frame` talk JSON frames to a gateway's WebSocket.

Plain classes and functions: the pytest fixtures that start them (``service_process``,
``gateways``, ``module_gateways``) are in :mod:`pulse_dev.testing`, which re-exports these.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import orjson

from pulse.auth import issue_token
from pulse_dev.emulators import free_port, stop_process, wait_for_port

if TYPE_CHECKING:
    from pathlib import Path

    from websockets.asyncio.client import ClientConnection

    from pulse_dev.forkserver import ForkedProcess, Forkserver

__all__ = [
    "GATEWAY_SECRET",
    "GatewayFactory",
    "RunningGateway",
    "ServiceProcess",
    "next_frame",
    "send_frame",
]


class ServiceProcess:
    """A Pulse service as a real child process (``python -m package``) with its log file.

    While :attr:`forkserver` is set (the tests set it: :mod:`pulse_dev.forkserver`), the
    process is forked from one that has imported the services' libraries already, which saves
    each start 1.5 to 2 s of CPU; otherwise (benchmarks, the chaos and soak scripts) it is a new
    interpreter."""

    forkserver: ClassVar[Forkserver | None] = None

    def __init__(self, package: str, env: dict[str, str], log_path: Path) -> None:
        self.package = package
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | ForkedProcess | None = None

    def start(self, *, wait_port: int | None = None, timeout: float = 30.0) -> ServiceProcess:
        forkserver = ServiceProcess.forkserver
        if forkserver is not None and forkserver.serves(self.env):
            self.proc = forkserver.start(self.package, self.env, self.log_path)
        else:
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and package
                    [sys.executable, "-m", self.package],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        if wait_port is not None:
            try:
                wait_for_port(wait_port, timeout=timeout)
            except TimeoutError:
                self.kill()
                raise RuntimeError(
                    f"{self.package} did not start:\n{self.logs()[-4000:]}"
                ) from None
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; the exit code (a clean shutdown is 0)."""
        assert self.proc is not None
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# -- the ws-gateway as a real process ----------------------------------------------------

GATEWAY_SECRET: Final = "ws-gateway-test-secret-0123456789abcdef"  # noqa: S105 - tests only


@dataclass
class RunningGateway:
    """A ``python -m ws_gateway`` process of a test, and how to reach it."""

    port: int
    prefix: str  # its PULSE_REDIS_PREFIX
    secret: str  # its PULSE_JWT_SECRET (HS256)
    process: ServiceProcess

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def token(self, sub: str, roles: list[str] | None = None, ttl: int = 600) -> str:
        """A token this gateway accepts."""
        return issue_token(self.secret, sub=sub, roles=roles, ttl_seconds=ttl)

    def ws_url(self, sub: str, roles: list[str] | None = None, ttl: int = 600) -> str:
        return f"{self.ws}?token={self.token(sub, roles, ttl)}"

    def start(self) -> RunningGateway:
        """Start the process again (after :meth:`kill`): same port, keys and log file."""
        self.process.start(wait_port=self.port)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()


class GatewayFactory:
    """Starts ws-gateway processes on the test Redis; :meth:`close` kills every one."""

    def __init__(self, redis_url: str, log_dir: Path) -> None:
        self._redis_url = redis_url
        self._log_dir = log_dir
        self._started: list[ServiceProcess] = []

    def start(
        self,
        *,
        prefix: str | None = None,
        secret: str = GATEWAY_SECRET,
        port: int | None = None,
        **env: str,
    ) -> RunningGateway:
        """A gateway with its own port and Redis prefix (unless given), up and listening.

        ``env`` adds or overrides settings (``PULSE_SEND_QUEUE_SIZE="64"``, ``REDIS_URL`` of
        another Redis)."""
        port = port or free_port()
        prefix = prefix or f"pulse:gw{uuid.uuid4().hex[:8]}:"
        settings = {
            "REDIS_URL": self._redis_url,
            "PULSE_REDIS_PREFIX": prefix,
            "PULSE_HTTP_PORT": str(port),
            "PULSE_JWT_SECRET": secret,
            **env,
        }
        log = self._log_dir / f"ws_gateway-{len(self._started) + 1}.log"
        process = ServiceProcess("ws_gateway", settings, log)
        self._started.append(process)
        process.start(wait_port=port)
        return RunningGateway(port, prefix, secret, process)

    def close(self) -> None:
        for process in self._started:
            process.kill()


async def next_frame(
    ws: ClientConnection,
    timeout: float = 5.0,  # noqa: ASYNC109 - a bound on one receive, as tests name it
) -> dict[str, Any]:
    """The next frame a gateway sends ``ws``, decoded from JSON; fails after ``timeout``."""
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def send_frame(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    """Sends ``frame`` as JSON on ``ws``; the gateway's next frame (:func:`next_frame`)."""
    await ws.send(orjson.dumps(frame).decode())
    return await next_frame(ws)

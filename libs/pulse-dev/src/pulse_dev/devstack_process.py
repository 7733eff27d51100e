"""``pulse dev`` as a child process on free ports, for tests and benchmarks.

:class:`DevStackProcess` runs ``python -m pulse.cli dev`` in a working directory of its own
(its log and ``.run/`` stack file there) and waits for the launcher's ``ready``;
:func:`free_port_block` finds the run of free ports the workers' ops ports take.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from pulse.cli.target import STACK_FILE
from pulse_dev.emulators import free_port, owns_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["DevStackProcess", "free_port_block"]


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

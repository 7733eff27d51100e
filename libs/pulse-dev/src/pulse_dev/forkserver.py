"""Service processes forked from one that has imported their libraries already.

``python -m ingest`` spends 1.5 to 2 s of CPU importing boto3, aiohttp, redis, pydantic,
structlog… before it runs a line of Pulse, and a test run starts some 200 services. A
:class:`Forkserver` is one ``python -m pulse_dev.forkserver`` process that imports those
libraries once and, for each start, forks a child that takes the start's environment, log
file (stdout and stderr), working directory and a session of its own, and runs
``<package>.__main__`` as ``python -m <package>`` does. The child is a process like any other:
it binds its own ports, handles its own signals and exits with its own code.

The child is handed to the process that asked for it. That process becomes a child
subreaper (``PR_SET_CHILD_SUBREAPER``), and the fork server starts each service through an
intermediate process that exits at once: the service is re-parented to the asker, which
waits for it as for any child of its own (:class:`ForkedProcess`: ``poll``, ``wait``,
``send_signal``, ``kill``, ``returncode``, as :class:`subprocess.Popen` has them).

In ``ps`` a forked service shows the fork server's command line (``python -m
pulse_dev.forkserver``); its log file and ports say which service it is.

What an interpreter reads only when it starts (the ``PYTHON*`` variables) is the fork
server's: :meth:`Forkserver.serves` says no to an environment that changes one of them, and
such a start runs ``python -m`` as before. ``PULSE_TEST_FORKSERVER=0`` turns the fork server
off in the tests (every start runs ``python -m``).

Run as a module it is the fork server: one JSON request per line on stdin
(``{"package", "env", "log", "cwd"}``), one JSON reply per line on stdout (``{"pid"}`` or
``{"error"}``), until stdin closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

__all__ = ["ForkedProcess", "Forkserver", "enabled"]

# What the services import before any of Pulse's code runs (all of it, or its costly part).
PRELOAD: Final = (
    "asyncio",
    "boto3",
    "botocore.session",
    "botocore.client",
    "aiohttp",
    "aiohttp.web",
    "redis.asyncio",
    "redis.asyncio.cluster",
    "redis.asyncio.sentinel",
    "pydantic",
    "pydantic_settings",
    "structlog",
    "prometheus_client",
    "websockets.asyncio.server",
    "websockets.asyncio.client",
    "orjson",
    "jwt",
    "uvloop",
)
_PR_SET_CHILD_SUBREAPER: Final = 36
# How often wait() with a timeout looks at the child, at most (as subprocess.Popen does).
_WAIT_STEP_S: Final = 0.05


def enabled() -> bool:
    """Whether the tests start services through a fork server (``PULSE_TEST_FORKSERVER``)."""
    return os.environ.get("PULSE_TEST_FORKSERVER", "1").lower() not in {"0", "false", "no"}


class ForkedProcess:
    """A service forked by a :class:`Forkserver` and re-parented to this process: what of
    :class:`subprocess.Popen` the tests use (no pipes: its output goes to its log file)."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        """Its exit code (negative: the signal that ended it), or None while it runs."""
        with self._lock:
            if self.returncode is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait until it exits; :class:`subprocess.TimeoutExpired` after ``timeout``."""
        if timeout is None:
            with self._lock:
                if self.returncode is None:
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
                return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while (code := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, _WAIT_STEP_S)
        return code

    def send_signal(self, sig: int) -> None:
        """Signal it, unless it has exited (and been waited for)."""
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Forkserver:
    """A ``python -m pulse_dev.forkserver`` child of this process that starts services for it
    (see the module's text). Thread-safe; :meth:`close` ends it (not the services)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._python_env: dict[str, str] = {}

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a service with environment ``env`` can be forked: its ``PYTHON*`` variables
        are the fork server's (``PYTHONUNBUFFERED`` aside: the fork server's output is
        unbuffered, as the services' must be)."""
        return _python_variables(env) == _python_variables({**os.environ})

    def start(self, package: str, env: dict[str, str], log_path: Path) -> ForkedProcess:
        """Fork ``python -m package`` with ``env`` (its whole environment), writing its output
        to ``log_path`` (appended)."""
        request = {"package": package, "env": env, "log": str(log_path), "cwd": str(Path.cwd())}
        with self._lock:
            proc = self._running()
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited (code {proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the fork server could not start {package}: {reply['error']}")
        return ForkedProcess(int(reply["pid"]), [sys.executable, "-m", package])

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._proc
            for pipe in (self._proc.stdin, self._proc.stdout):  # a fork server that died
                if pipe is not None:
                    pipe.close()
        _become_subreaper()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pulse_dev.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self._proc


def _python_variables(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONUNBUFFERED"}


def _become_subreaper() -> None:
    """Orphaned descendants of this process (the services, once their intermediate exits)
    become its children."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


# -- the fork server itself -------------------------------------------------------------


def _read_line(fd: int, pending: bytearray) -> bytes:
    """The next line from ``fd`` (b"" at its end), read unbuffered: a forked service must
    not inherit requests read ahead."""
    while b"\n" not in pending:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line


def _fork_service() -> int | None:
    """In the fork server: the pid of a new service process (its parent, an intermediate,
    has exited). In the service: None."""
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        os.close(read_end)
        service = os.fork()
        if service == 0:
            os.close(write_end)
            return None
        os.write(write_end, str(service).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        pid = pipe.read()
    os.waitpid(intermediate, 0)
    return int(pid)


def serve() -> dict[str, Any] | None:
    """Answer requests until stdin closes (None); in a forked service, its request."""
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    pending = bytearray()
    while line := _read_line(0, pending):
        request: dict[str, Any] = json.loads(line)
        try:
            pid = _fork_service()
        except OSError as exc:
            os.write(1, json.dumps({"error": str(exc)}).encode() + b"\n")
            continue
        if pid is None:
            return request
        os.write(1, json.dumps({"pid": pid}).encode() + b"\n")
    return None


def become_service(request: dict[str, Any]) -> None:
    """In a forked service: its session, working directory, output and environment, then
    its package's ``__main__`` as ``python -m`` runs it."""
    os.setsid()
    os.chdir(request["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["package"]]
    sys.path[0] = request["cwd"]  # as ``python -m`` puts its working directory first
    runpy.run_module(request["package"], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    forked = serve()
    if forked is not None:
        become_service(forked)

"""The children of ``pulse dev``'s launcher: the services, and the emulator and Redis it starts.

:class:`DevStack` spawns each child in a session of its own (SIGTERM from the kernel if the
launcher dies: PR_SET_PDEATHSIG), pumps its output to the launcher's with a coloured
``name |`` prefix, starts the AWS emulator and Redis unless one answers already, polls a
service's readiness, watches for a stop signal or a child's death, and stops the services
before the emulator and Redis they may still call. :mod:`pulse_dev.devstack` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import aiohttp

from pulse_dev.emulators import (
    emulator_argv,
    redis_answers,
    redis_server_argv,
    redis_server_binary,
)

if TYPE_CHECKING:
    from pulse_dev.devstack import DevStackConfig, ServiceSpec

__all__ = ["DevStack"]

_COLOURS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m", "\033[37m")
_RESET = "\033[0m"
_PR_SET_PDEATHSIG = 1
# The launcher's wait for each group of children (services, then the emulator and Redis)
# before it kills them: Ctrl-C is quick.
_STOP_GRACE_SECONDS = 3.0
_DEPENDENCY_GRACE_SECONDS = 1.0  # the emulator and Redis keep nothing: no reason to wait


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


def _run_dir() -> str:
    workdir = Path(".run")
    workdir.mkdir(exist_ok=True)
    return str(workdir.resolve())

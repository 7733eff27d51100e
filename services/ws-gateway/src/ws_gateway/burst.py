"""One frame's bytes written to many sockets by more than one thread at once.

A fan-out to N connections is N ``send`` calls, and inside each one the kernel does the
packet's work: TCP and IP on the way out and, on loopback or a virtual network, much of the
receiving side too. That work, not Python, is what a big fan-out spends its time on (the
gateway benchmark prints it as ``send_floor_us``), and one thread can only do it on one
core. The call releases the GIL, so :class:`SocketBurst` has a few threads make the calls
side by side, each taking the next chunk of sockets as it is done with one, and the event
loop takes chunks itself: a fan-out to 10,000 connections takes about half as long on two
cores.

What keeps it safe: the event loop waits until every chunk is written, so nothing else of
the gateway's runs meanwhile and no other write can come between; the caller hands over only
sockets whose transport holds nothing unsent (:meth:`ChannelFanout._write_direct`), so the
bytes go out in order. The threads touch nothing but the file descriptors. What the kernel
did not take (a full socket buffer) is reported back and the caller gives the rest to the
socket's transport, which then writes it when the client reads.
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["FAILED", "SocketBurst", "default_threads", "usable_cpus"]

# Sockets each thread takes at a time: small enough to even out a thread that is descheduled.
_CHUNK: Final = 64
# Below this many sockets one thread is as quick: handing work over costs some microseconds.
_PARALLEL_FROM: Final = 512
# At most this many threads by default: past it the cores are better left to other processes.
_DEFAULT_MAX: Final = 8
# What :meth:`SocketBurst.write` reports for a socket the write failed on (reset, closed).
FAILED: Final = -1


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity, lowered to its cgroup's CPU quota (a
    Kubernetes CPU limit; cgroup v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us``), rounded up;
    at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cpu_quota(root: Path) -> float | None:
    """The cgroup's CPU quota in CPUs, or None when it has none (or it cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (root / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        v1_quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        v1_period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if v1_quota < 0 else v1_quota / v1_period
    return None


def default_threads() -> int:
    return min(usable_cpus(), _DEFAULT_MAX)


class SocketBurst:
    """Writes the same bytes to many nonblocking sockets (file descriptors), with
    ``threads`` threads in all: the caller's and ``threads - 1`` of the burst's own."""

    __slots__ = ("_pool", "_threads")

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("a burst needs at least one thread")
        self._threads = threads
        self._pool = (
            ThreadPoolExecutor(threads - 1, thread_name_prefix="fanout") if threads > 1 else None
        )

    def write(self, data: bytes, fds: Sequence[int]) -> list[tuple[int, int]]:
        """Write ``data`` to every one of ``fds``; blocks until done. Returns, for each socket
        that did not take all of it, its index in ``fds`` and the bytes it took (0 when its
        buffer was full, :data:`FAILED` when the write failed)."""
        chunks = iter(range(0, len(fds), _CHUNK))
        if self._pool is None or len(fds) < _PARALLEL_FROM:
            return _write_chunks(data, fds, chunks)
        # The shared iterator hands each chunk to one thread: next() on it holds the GIL.
        helpers = [
            self._pool.submit(_write_chunks, data, fds, chunks) for _ in range(self._threads - 1)
        ]
        short = _write_chunks(data, fds, chunks)
        for helper in helpers:
            short.extend(helper.result())
        return short

    def close(self) -> None:
        """Stop the threads; later writes are made by the caller's thread alone."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _write_chunks(data: bytes, fds: Sequence[int], chunks: Iterator[int]) -> list[tuple[int, int]]:
    size = len(data)
    short: list[tuple[int, int]] = []
    write = os.write
    for start in chunks:
        for i in range(start, min(start + _CHUNK, len(fds))):
            try:
                sent = write(fds[i], data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = FAILED
            if sent != size:
                short.append((i, sent))
    return short

"""Writing one frame to many sockets from several threads, over real socket pairs: every
socket gets the bytes once, and a socket that took less (full, or its peer gone) is reported
at its own index. Also how many CPUs the process may use."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import pytest

from pulse_dev.socket_pairs import read_available, socket_pairs
from ws_gateway.burst import FAILED, SocketBurst, default_threads, usable_cpus

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PAIRS = 700  # above the size from which the burst shares the writes between threads
DATA = bytes(range(256)) * 2


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    with socket_pairs(PAIRS) as made:
        yield made


def fill(sock: socket.socket) -> None:
    """Write until the kernel takes no more."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    while True:
        try:
            sock.send(b"f" * 4096)
        except BlockingIOError:
            return


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_every_socket_gets_the_bytes_exactly_once(
    pairs: list[tuple[socket.socket, socket.socket]], threads: int
) -> None:
    burst = SocketBurst(threads)
    try:
        for _ in range(3):
            assert burst.write(DATA, [ours.fileno() for ours, _ in pairs]) == []
            assert all(read_available(peer) == DATA for _, peer in pairs)
    finally:
        burst.close()


@pytest.mark.parametrize("threads", [1, 3])
def test_sockets_that_took_less_are_reported_at_their_own_index(
    pairs: list[tuple[socket.socket, socket.socket]], threads: int
) -> None:
    full = {5, 130, 699}  # in the first, a middle and the last chunk
    gone = {0, 64, 400}
    for i in full:
        fill(pairs[i][0])
    for i in gone:
        pairs[i][1].close()
    burst = SocketBurst(threads)
    try:
        short = dict(burst.write(DATA, [ours.fileno() for ours, _ in pairs]))
    finally:
        burst.close()
    assert short == {**dict.fromkeys(full, 0), **dict.fromkeys(gone, FAILED)}
    for i, (_, peer) in enumerate(pairs):
        if i not in full | gone:
            assert read_available(peer) == DATA


def test_a_socket_with_room_for_part_reports_the_bytes_it_took() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.setblocking(False)
        peer.setblocking(False)
        fill(ours)
        peer.recv(6000)  # some room again, less than the data
        data = b"d" * 200_000
        [(index, took)] = SocketBurst(1).write(data, [ours.fileno()])
        assert index == 0
        assert 0 < took < len(data)
        assert read_available(peer).endswith(data[:took])


def test_after_close_the_callers_thread_writes_alone(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    burst = SocketBurst(3)
    burst.close()
    assert burst.write(DATA, [ours.fileno() for ours, _ in pairs]) == []
    assert all(read_available(peer) == DATA for _, peer in pairs)


def test_a_burst_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        SocketBurst(0)


def test_usable_cpus_follow_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == affinity  # no cpu.max: not limited
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: two threads may run
    assert usable_cpus(tmp_path) == min(affinity, 2)
    (tmp_path / "cpu.max").write_text("20000 100000\n")  # 0.2 CPU
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert usable_cpus(tmp_path) == affinity


def test_usable_cpus_follow_a_cgroup_v1_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert usable_cpus(tmp_path) == 1
    assert 1 <= default_threads() <= 8

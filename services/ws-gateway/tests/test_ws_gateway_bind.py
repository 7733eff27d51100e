"""A gateway that cannot listen exits with the error at once, not when a signal comes."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from pulse_dev.testing import ServiceProcess


def test_a_port_already_in_use_stops_the_gateway_at_once(redis_url: str, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"REDIS_URL": redis_url, "PULSE_HTTP_PORT": str(port), "PULSE_LOG_FORMAT": "json"}
        gateway = ServiceProcess("ws_gateway", env, tmp_path / "gateway.log").start()
        assert gateway.proc is not None
        try:
            code = gateway.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            raise AssertionError(f"still running:\n{gateway.logs()[-2000:]}") from None
    assert code != 0
    assert "address already in use" in gateway.logs()

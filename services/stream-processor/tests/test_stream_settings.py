"""Settings a deployment relies on without setting them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from stream_processor.settings import load_stream_processor_settings

WORKER_ID = (
    "from stream_processor.settings import StreamProcessorSettings as S; print(S().worker_id)"
)


def test_two_replicas_never_share_a_default_worker_id() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_WORKER_ID"}
    ids = {
        subprocess.run(
            [sys.executable, "-c", WORKER_ID], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(ids) == 2  # hostname-pid: two processes on one host differ by pid
    assert all(worker_id.startswith(f"{socket.gethostname()}-") for worker_id in ids)


def test_the_worker_id_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on Kubernetes, where PULSE_WORKER_ID is the pod's name (downward API)."""
    monkeypatch.setenv("PULSE_WORKER_ID", "pulse-stream-processor-7d9f-abcde")
    assert load_stream_processor_settings().worker_id == "pulse-stream-processor-7d9f-abcde"

"""The fork server: a service it forks runs as ``python -m`` would run it, as this process's
own child (exit codes, signals, timeouts), with the start's environment, directory and log."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from pulse_dev.forkserver import Forkserver
from pulse_dev.service_processes import ServiceProcess
from pulse_dev.testing import until

if TYPE_CHECKING:
    from collections.abc import Iterator

# A package run with -m: it reports what it was started with, then does what PROBE_DO says.
PROBE = textwrap.dedent(
    """
    import os, signal, sys, time
    import orjson

    report = {
        "argv0": sys.argv[0],
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "setting": os.environ.get("PROBE_SETTING"),
        "leaked": os.environ.get("PROBE_ONLY_IN_THE_TEST"),
        "sid_is_pid": os.getsid(0) == os.getpid(),
        "stdin": sys.stdin.read(),
        "name": __name__,
    }
    with open(os.environ["PROBE_REPORT"], "wb") as out:
        out.write(orjson.dumps(report))
    print("probe started", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    do = os.environ.get("PROBE_DO", "exit")
    if do == "exit":
        sys.exit(int(os.environ.get("PROBE_CODE", "0")))
    if do == "graceful":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(0.05)
    """
)


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``probe`` package in a directory that is the working directory (``python -m probe``
    finds it there, as a service is found on the path)."""
    package = tmp_path / "probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(PROBE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def forkserver() -> Iterator[Forkserver]:
    server = Forkserver()
    yield server
    server.close()


def _report(path: Path) -> dict[str, object]:
    until(path.exists, timeout=20)
    return dict(orjson.loads(until(path.read_bytes, timeout=5)))


def test_a_forked_service_runs_as_python_m_would_with_only_its_environment(
    probe: Path, forkserver: Forkserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = probe / "probe.log"
    env = {**os.environ, "PROBE_SETTING": "given", "PROBE_REPORT": str(probe / "r.json")}
    # The fork server's own environment has a variable the start's has not.
    monkeypatch.setenv("PROBE_ONLY_IN_THE_TEST", "the fork server's")
    process = forkserver.start("probe", {**env, "PROBE_CODE": "3"}, log)
    assert process.wait(20) == 3
    report = _report(probe / "r.json")
    assert report == {
        "argv0": str(probe / "probe" / "__main__.py"),
        "cwd": str(probe),
        "path0": str(probe),
        "setting": "given",
        "leaked": None,
        "sid_is_pid": True,
        "stdin": "",
        "name": "__main__",
    }
    assert log.read_text().splitlines() == ["probe started", "to stderr"]
    assert process.returncode == 3


def test_a_forked_service_is_this_processs_child_for_signals_waits_and_exit_codes(
    probe: Path, forkserver: Forkserver
) -> None:
    base = {**os.environ, "PROBE_REPORT": str(probe / "r.json")}
    graceful = forkserver.start("probe", {**base, "PROBE_DO": "graceful"}, probe / "g.log")
    _report(probe / "r.json")
    assert graceful.poll() is None
    stat = (Path("/proc") / str(graceful.pid) / "stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()  # its parent: this process
    with pytest.raises(subprocess.TimeoutExpired):
        graceful.wait(0.2)
    graceful.terminate()
    assert graceful.wait(20) == 0
    graceful.kill()  # after it exited: nothing to signal, no error

    (probe / "r.json").unlink()
    stubborn = forkserver.start("probe", {**base, "PROBE_DO": "sleep"}, probe / "s.log")
    _report(probe / "r.json")
    stubborn.send_signal(signal.SIGTERM)
    assert stubborn.wait(20) == -signal.SIGTERM


def test_a_start_changing_what_python_reads_at_start_up_is_not_forked(
    probe: Path, forkserver: Forkserver
) -> None:
    assert forkserver.serves({**os.environ, "PULSE_ANYTHING": "1", "PYTHONUNBUFFERED": "1"})
    assert not forkserver.serves({**os.environ, "PYTHONPATH": str(probe)})
    assert not forkserver.serves({**os.environ, "PYTHONDEVMODE": "1"})


def test_service_process_forks_when_the_tests_have_a_fork_server_and_execs_otherwise(
    probe: Path, forkserver: Forkserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ServiceProcess, "forkserver", forkserver)
    env = {"PROBE_REPORT": str(probe / "f.json"), "PROBE_DO": "graceful"}
    forked = ServiceProcess("probe", env, probe / "f.log").start()
    _report(probe / "f.json")
    assert forked.stop() == 0  # SIGTERM, then its exit code
    assert not isinstance(forked.proc, subprocess.Popen)

    env["PROBE_REPORT"] = str(probe / "e.json")
    execd = ServiceProcess("probe", {**env, "PYTHONPATH": str(probe)}, probe / "e.log").start()
    _report(probe / "e.json")
    assert execd.stop() == 0
    assert isinstance(execd.proc, subprocess.Popen)
    assert (probe / "e.log").read_text().startswith("probe started")

    monkeypatch.setattr(ServiceProcess, "forkserver", None)
    env["PROBE_REPORT"] = str(probe / "n.json")
    plain = ServiceProcess("probe", env, probe / "n.log").start()
    _report(probe / "n.json")
    assert plain.stop() == 0
    assert isinstance(plain.proc, subprocess.Popen)


def test_the_fork_server_ends_with_its_input_and_a_dead_one_is_replaced(
    probe: Path, forkserver: Forkserver
) -> None:
    env = {**os.environ, "PROBE_REPORT": str(probe / "r.json")}
    assert forkserver.start("probe", env, probe / "1.log").wait(20) == 0
    server = forkserver._proc
    assert server is not None
    server.kill()
    server.wait()
    assert forkserver.start("probe", env, probe / "2.log").wait(20) == 0
    replaced = forkserver._proc
    assert replaced is not None
    assert replaced.pid != server.pid
    forkserver.close()
    assert replaced.poll() == 0

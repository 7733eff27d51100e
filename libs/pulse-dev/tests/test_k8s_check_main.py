"""python -m pulse_dev.k8s_check against the repository, as make k8s-check runs it."""

import subprocess
import sys

from pulse_dev.k8s_check.catalogue import every_check
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]


def k8s_check(repository: Repository, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pulse_dev.k8s_check", *args],
        cwd=repository.root,
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
    )


def test_every_check_passes_on_the_repository(k8s_repository: Repository) -> None:
    done = k8s_check(k8s_repository)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "k8s-check: all passed"
    assert lines[2].startswith("  PASS  tools: v4.")
    printed = [line.removeprefix("  PASS  ").rsplit(" (", 1)[0] for line in lines[3:-1]]
    assert printed == [c.name for c in every_check()]


def test_one_check_runs_by_name_and_an_unknown_name_is_refused(k8s_repository: Repository) -> None:
    done = k8s_check(k8s_repository, "--check", "pulse-crds: helm lint")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("  PASS  pulse")] == [
        next(
            line for line in done.stdout.splitlines() if "pulse-crds: helm lint --strict (" in line
        )
    ]
    refused = k8s_check(k8s_repository, "--check", "no such check")
    assert refused.returncode == 2
    assert "no check named like 'no such check'" in refused.stderr


def test_the_names_are_listed(k8s_repository: Repository) -> None:
    done = k8s_check(k8s_repository, "--list")
    assert done.stdout.splitlines() == [c.name for c in every_check()]

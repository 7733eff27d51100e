"""pulse_dev.k8s_check.dockerfiles: a generated Dockerfile passes; each rule can fail it."""

import re
from pathlib import Path

import pytest

from pulse_dev.k8s_check.dockerfiles import dockerfile_problems, dockerignore_problems

ROOT = Path(__file__).resolve().parents[3]
LOCK = (ROOT / "uv.lock").read_text()
INGEST = (ROOT / "services/ingest/Dockerfile").read_text()
WHERE = "services/ingest/Dockerfile"


def problems(text: str, port: int = 8080) -> list[str]:
    return dockerfile_problems("ingest", text, port, lock=LOCK, root=ROOT)


def test_the_generated_dockerfile_passes() -> None:
    assert problems(INGEST) == []


def test_a_port_other_than_the_charts_fails() -> None:
    assert problems(INGEST, port=9999) == [f"{WHERE}: EXPOSE ['8080'] != chart port 9999"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            (r"(?m)^ARG PYTHON_IMAGE=.*$", "ARG PYTHON_IMAGE=python:3.11-slim"),
            (
                f"{WHERE}: base image must be a pinned python:3.11.x-slim-bookworm, "
                "got 'python:3.11-slim'"
            ),
        ),
        (
            (r"FROM base AS runtime\nUSER 10001:10001", "FROM base AS runtime\nUSER root"),
            f"{WHERE}: the runtime stage must run as USER 10001:10001, got ['root']",
        ),
        (
            ("EXPOSE 8080", "EXPOSE 8080\nHEALTHCHECK CMD true"),
            f"{WHERE}: no HEALTHCHECK (Kubernetes probes do it)",
        ),
        (
            ("--no-dev --no-editable", "--no-editable"),
            f"{WHERE}: must install pulse-ingest with uv sync --frozen --no-dev",
        ),
        (
            ("COPY libs/pulse libs/pulse", "COPY libs/pulse libs/pulse\nCOPY NOTES.md ./"),
            "COPY source NOTES.md is not in the context",
        ),
    ],
)
def test_each_rule_can_fail(change: tuple[str, str], problem: str) -> None:
    pattern, replacement = change
    broken, count = re.subn(pattern, replacement, INGEST)
    assert count == 1
    assert any(problem in p for p in problems(broken))


def test_an_entrypoint_to_a_missing_package_and_a_dev_stage_on_another_fail() -> None:
    broken = INGEST.replace(
        'ENTRYPOINT ["python", "-m", "ingest"]', 'ENTRYPOINT ["python", "-m", "ingset"]'
    )
    found = problems(broken)
    assert f"{WHERE}: services/ingest/src/ingset/__main__.py does not exist" in found
    assert any(
        p.startswith(f"{WHERE}: the dev stage must run the reloader on the same package")
        for p in found
    )


def test_a_dockerignore_that_keeps_out_the_lock_fails() -> None:
    text = (ROOT / ".dockerignore").read_text()
    assert dockerignore_problems(text) == []
    assert dockerignore_problems(text.replace("!uv.lock\n", "")) == [
        ".dockerignore: must let uv.lock into the context"
    ]

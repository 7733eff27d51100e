"""The services' Dockerfiles: generated from ``services/Dockerfile.template``, parsed with
BuildKit's own parser, and held to Pulse's rules (pinned base, ``uv sync --frozen``, uid
10001, the chart's port, ``python -m <package>``, a dev stage for Skaffold's sync)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dockerfile

from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from pathlib import Path

    from pulse_dev.k8s_check.repository import Repository

BASE_IMAGE = re.compile(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?")
RUNTIME_USER = "10001:10001"
PYTHON_M = ["python", "-m"]
MIN_STAGES = 2  # a builder and a runtime stage at least
# What .dockerignore (an allow-list) must let into the build context.
CONTEXT_NEEDS = ("!uv.lock", "!pyproject.toml", "!libs/pulse/src/", "!services/*/src/")


@dataclass(frozen=True)
class Dockerfile:
    """One service's Dockerfile as BuildKit parses it (``dockerfile.Command`` tuples)."""

    service: str
    text: str
    commands: tuple[Any, ...]

    @classmethod
    def parse(cls, service: str, text: str) -> Dockerfile:
        return cls(service, text, tuple(dockerfile.parse_string(text)))

    def instructions(self, name: str) -> list[Any]:
        return [c for c in self.commands if c.cmd.upper() == name]

    @property
    def froms(self) -> list[Any]:
        return self.instructions("FROM")

    def runtime(self) -> list[Any]:
        """The instructions of the last (default) stage."""
        froms = self.froms
        return [c for c in self.commands if c.start_line > froms[-1].start_line] if froms else []

    def entrypoint(self) -> list[list[str]]:
        return [list(c.value) for c in self.runtime() if c.cmd.upper() == "ENTRYPOINT"]

    def package(self) -> str | None:
        """The package the runtime stage runs with ``python -m``, if it runs one so."""
        entry = self.entrypoint()
        if len(entry) == 1 and len(entry[0]) == len(PYTHON_M) + 1 and entry[0][:2] == PYTHON_M:
            return entry[0][-1]
        return None


def stage_name(instruction: Any) -> str | None:
    """The name ``FROM <image> AS <name>`` gives its stage."""
    match list(instruction.value):
        case [_, keyword, name] if keyword.upper() == "AS":
            return str(name)
    return None


def header_problems(image: Dockerfile, lock: str) -> list[str]:
    """The syntax line, a pinned base, two stages, and the service installed from uv.lock."""
    where, svc = f"services/{image.service}/Dockerfile", image.service
    problems = []
    if not image.text.startswith("# syntax=docker/dockerfile:1\n"):
        problems.append(f"{where}: the syntax directive must be the first line")
    args = {
        c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[-1] for c in image.instructions("ARG")
    }
    base = args.get("PYTHON_IMAGE", "")
    if not BASE_IMAGE.fullmatch(base):
        problems.append(
            f"{where}: base image must be a pinned python:3.11.x-slim-bookworm, got {base!r}"
        )
    if len(image.froms) < MIN_STAGES:
        problems.append(f"{where}: expected a multi-stage build")
    runs = " ".join(" ".join(c.value) for c in image.instructions("RUN"))
    wanted = (
        f"uv sync --frozen --no-dev --no-install-workspace --package pulse-{svc}",
        f"uv sync --frozen --no-dev --no-editable --package pulse-{svc}",
    )
    if not all(w in runs for w in wanted):
        problems.append(f"{where}: must install pulse-{svc} with uv sync --frozen --no-dev")
    if f'name = "pulse-{svc}"' not in lock:
        problems.append(f"{where}: pulse-{svc} is not a package in uv.lock")
    return problems


def runtime_problems(image: Dockerfile, port: int, root: Path) -> list[str]:
    """The runtime stage: uid 10001, no HEALTHCHECK, the chart's port, ``python -m``."""
    where = f"services/{image.service}/Dockerfile"
    problems = []
    users = [c.value[0] for c in image.runtime() if c.cmd.upper() == "USER"]
    if users != [RUNTIME_USER]:
        problems.append(f"{where}: the runtime stage must run as USER {RUNTIME_USER}, got {users}")
    if image.instructions("HEALTHCHECK"):
        problems.append(f"{where}: no HEALTHCHECK (Kubernetes probes do it)")
    expose = [v for c in image.instructions("EXPOSE") for v in c.value]
    if expose != [str(port)]:
        problems.append(f"{where}: EXPOSE {expose} != chart port {port}")
    package = image.package()
    if package is None:
        problems.append(
            f"{where}: ENTRYPOINT must be [python, -m, <package>], got {image.entrypoint()}"
        )
    elif not (root / "services" / image.service / "src" / package / "__main__.py").exists():
        problems.append(
            f"{where}: services/{image.service}/src/{package}/__main__.py does not exist"
        )
    return problems


def dev_stage_problems(image: Dockerfile) -> list[str]:
    """A dev stage from base, running the reloader on the same package, with the sources
    Skaffold syncs copied in and owned by the runtime user; runtime the last stage."""
    where, svc = f"services/{image.service}/Dockerfile", image.service
    froms = image.froms
    stages = {name: f for f in froms if (name := stage_name(f))}
    if (
        "dev" not in stages
        or stages["dev"].value[0] != "base"
        or stage_name(froms[-1]) != "runtime"
    ):
        return [f"{where}: needs a dev stage from base and runtime as the last (default) stage"]
    problems = []
    start, end = stages["dev"].start_line, froms[-1].start_line
    dev = [c for c in image.commands if start < c.start_line < end]
    dev_entry = [list(c.value) for c in dev if c.cmd.upper() == "ENTRYPOINT"]
    if dev_entry != [["python", "/app/reload.py", image.package() or "?"]]:
        problems.append(
            f"{where}: the dev stage must run the reloader on the same package, got {dev_entry}"
        )
    synced = {
        c.value[-1] for c in dev if c.cmd.upper() == "COPY" and f"--chown={RUNTIME_USER}" in c.flags
    }
    if synced != {"/app/src/libs/pulse/src", f"/app/src/services/{svc}/src"}:
        problems.append(
            f"{where}: the dev stage must copy the sources skaffold syncs, owned by 10001, "
            f"got {synced}"
        )
    return problems


def copy_problems(image: Dockerfile, root: Path) -> list[str]:
    """Every COPY from the context names something the context holds."""
    where = f"services/{image.service}/Dockerfile"
    return [
        f"{where}:{c.start_line}: COPY source {src} is not in the context"
        for c in image.instructions("COPY")
        if not any(f.startswith("--from") for f in c.flags)
        for src in c.value[:-1]
        if not src.startswith("<<")  # a heredoc, not a file
        and not (root / src).exists()
    ]


def dockerfile_problems(service: str, text: str, port: int, *, lock: str, root: Path) -> list[str]:
    image = Dockerfile.parse(service, text)
    return [
        *header_problems(image, lock),
        *runtime_problems(image, port, root),
        *dev_stage_problems(image),
        *copy_problems(image, root),
    ]


def dockerignore_problems(text: str) -> list[str]:
    ignore = text.split()
    return [
        f".dockerignore: must let {needed[1:]} into the context"
        for needed in CONTEXT_NEEDS
        if needed not in ignore
    ]


def service_ports(repository: Repository) -> dict[str, int]:
    """Each image's port: the chart's per service, kopf's liveness port for the operator."""
    values = repository.yaml("charts/pulse/values.yaml")
    ports = {svc: int(spec["port"]) for svc, spec in values["services"].items()}
    ports["operator"] = int(repository.yaml("charts/pulse-operator/values.yaml")["livenessPort"])
    return ports


def follow_the_rules(repository: Repository) -> Verdict:
    lock = repository.text("uv.lock")
    ports = service_ports(repository)
    problems = []
    for svc, port in ports.items():
        path = repository.root / "services" / svc / "Dockerfile"
        if not path.exists():
            problems.append(f"services/{svc}/Dockerfile: missing")
            continue
        problems += dockerfile_problems(
            svc, path.read_text(), port, lock=lock, root=repository.root
        )
    problems += dockerignore_problems(repository.text(".dockerignore"))
    return Verdict.of(problems, f"{len(ports)} Dockerfiles ok")


def in_sync_with_template(repository: Repository) -> Verdict:
    done = subprocess.run(  # noqa: S603 - the repository's own script
        [str(repository.root / "scripts/gen-dockerfiles.sh"), "--check"],
        cwd=repository.root,
        capture_output=True,
        text=True,
        check=False,
    )
    return Verdict(passed=done.returncode == 0, output=done.stdout + done.stderr)

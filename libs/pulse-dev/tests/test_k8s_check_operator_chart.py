"""pulse_dev.k8s_check.operator_chart: the operator's Deployment and RBAC as rendered."""

import copy

import pytest

from pulse_dev.k8s_check.operator_chart import operator_problems
from pulse_dev.k8s_check.render import OPERATOR_CHART, Document
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]


@pytest.fixture
def namespaced(k8s_repository: Repository) -> list[Document]:
    return copy.deepcopy(k8s_repository.renders.documents(OPERATOR_CHART, "default"))


def first(docs: list[Document], kind: str) -> Document:
    return next(d for d in docs if d["kind"] == kind)


def test_both_modes_pass(k8s_repository: Repository, namespaced: list[Document]) -> None:
    clusterwide = k8s_repository.renders.documents(OPERATOR_CHART, "clusterwide-values")
    assert operator_problems("operator-default", namespaced, clusterwide=False) == []
    assert operator_problems("operator-clusterwide", clusterwide, clusterwide=True) == []


def test_two_replicas_and_a_root_pod_fail(namespaced: list[Document]) -> None:
    spec = first(namespaced, "Deployment")["spec"]
    spec["replicas"] = 2
    spec["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    assert operator_problems("operator-default", namespaced, clusterwide=False) == [
        "operator-default: the operator must run one replica with strategy Recreate",
        "operator-default: pod security is not restricted",
    ]


def test_a_grant_beyond_the_allow_list_fails(namespaced: list[Document]) -> None:
    first(namespaced, "Role")["rules"].append(
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    )
    first(namespaced, "Role")["rules"].append(
        {"apiGroups": ["pulse.dev"], "resources": ["eventpipelines"], "verbs": ["delete"]}
    )
    assert operator_problems("operator-default", namespaced, clusterwide=False) == [
        "operator-default: Role grants ['get'] on core/secrets",
        "operator-default: Role grants ['delete'] on pulse.dev/eventpipelines",
    ]


def test_namespaced_mode_holding_pipelines_cluster_wide_fails(
    k8s_repository: Repository, namespaced: list[Document]
) -> None:
    role = first(namespaced, "ClusterRole")
    role["rules"].append(
        {"apiGroups": ["pulse.dev"], "resources": ["eventpipelines"], "verbs": ["get"]}
    )
    (problem,) = operator_problems("operator-default", namespaced, clusterwide=False)
    assert problem.startswith("operator-default: namespaced mode must hold only CRD discovery")

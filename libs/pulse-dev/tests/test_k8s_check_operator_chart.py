"""pulse_dev.k8s_check.operator_chart: the operator's Deployment and RBAC as rendered."""

import copy

import pytest

from pulse_dev.k8s_check.operator_chart import (
    grouped,
    guard_problems,
    operator_problems,
    required_problems,
)
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


def test_namespaced_mode_holding_anything_cluster_wide_fails(namespaced: list[Document]) -> None:
    """kopf scans nothing when it watches one namespace: the old CRD-discovery ClusterRole is
    a grant beyond what it does."""
    namespaced.append(
        {
            "kind": "ClusterRole",
            "metadata": {"name": "pulse-pulse-operator-discovery"},
            "rules": [
                {
                    "apiGroups": ["apiextensions.k8s.io"],
                    "resources": ["customresourcedefinitions"],
                    "verbs": ["list", "watch"],
                }
            ],
        }
    )
    (problem,) = operator_problems("operator-default", namespaced, clusterwide=False)
    assert problem.startswith("operator-default: namespaced mode must hold nothing cluster-wide")


def test_the_operator_needs_update_on_pipeline_finalizers(namespaced: list[Document]) -> None:
    """The Role as it was: without eventpipelines/finalizers update, an API server with
    OwnerReferencesPermissionEnforcement refuses the outputs ConfigMap's blockOwnerDeletion."""
    assert required_problems("operator-default", grouped(namespaced), clusterwide=False) == []
    role = first(namespaced, "Role")
    role["rules"] = [r for r in role["rules"] if r["resources"] != ["eventpipelines/finalizers"]]
    assert required_problems("operator-default", grouped(namespaced), clusterwide=False) == [
        (
            "operator-default: the Role lacks ['update'] on pulse.dev/eventpipelines/finalizers "
            "(the outputs ConfigMap's blockOwnerDeletion, under "
            "OwnerReferencesPermissionEnforcement)"
        )
    ]


def test_the_uninstall_guard_passes_and_its_breaches_fail(
    k8s_repository: Repository, namespaced: list[Document]
) -> None:
    clusterwide = k8s_repository.renders.documents(OPERATOR_CHART, "clusterwide-values")
    assert guard_problems("operator-clusterwide", clusterwide) == []
    assert guard_problems("operator-default", namespaced) == []
    job = next(d for d in namespaced if d["kind"] == "Job")
    del job["metadata"]["annotations"]["helm.sh/hook-output-log-policy"]
    job["spec"]["template"]["spec"]["containers"][0]["env"] = []
    assert guard_problems("operator-default", namespaced) == [
        (
            "operator-default: Helm does not print the hook's refusal (hook-output-log-policy "
            "hook-failed)"
        ),
        "operator-default: the hook must look where the operator watches (PULSE_WATCH_NAMESPACE)",
    ]
    without = [d for d in namespaced if d["kind"] != "Job"]
    assert guard_problems("operator-default", without) == [
        "operator-default: no pre-delete hook Job refusing to uninstall while pipelines exist"
    ]

"""pulse_dev.k8s_check.cluster_scope: cluster-scoped names per release, across namespaces."""

from typing import Any

from pulse_dev.k8s_check.cluster_scope import NAMESPACES, cluster_scoped, collisions
from pulse_dev.k8s_check.pod_security import CHART_SCENARIOS
from pulse_dev.k8s_check.render import OPERATOR_CHART, Document
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]


def obj(kind: str, name: str, namespace: str | None = None) -> Document:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"kind": kind, "metadata": meta}


def test_the_old_discovery_clusterrole_collides() -> None:
    """The operator chart's ClusterRole was <fullname>-discovery in every namespace: Helm
    refused a second release in another one."""
    renders = {
        ns: [
            obj("ClusterRole", "pulse-operator-discovery"),
            obj("ClusterRoleBinding", "pulse-operator-discovery"),
            obj("Role", "pulse-operator", ns),
        ]
        for ns in NAMESPACES
    }
    assert collisions("operator", renders) == [
        f"operator: {kind} pulse-operator-discovery is rendered the same in namespaces "
        f"{NAMESPACES[0]} and {NAMESPACES[1]}: a second release would fail to install "
        "(name it after the release's namespace)"
        for kind in ("ClusterRole", "ClusterRoleBinding")
    ]


def test_names_with_the_namespace_and_the_crd_pass() -> None:
    renders = {
        ns: [
            obj("ClusterRole", f"{ns}-pulse-operator"),
            obj("CustomResourceDefinition", "eventpipelines.pulse.dev"),
            obj("ClusterTriggerAuthentication", f"{ns}-keda"),
        ]
        for ns in NAMESPACES
    }
    assert collisions("x", renders) == []
    assert cluster_scoped(renders["pulse"]) == {
        ("ClusterRole", "pulse-pulse-operator"),
        ("CustomResourceDefinition", "eventpipelines.pulse.dev"),
        ("ClusterTriggerAuthentication", "pulse-keda"),
    }


def test_every_chart_in_two_namespaces(k8s_repository: Repository) -> None:
    for chart, scenario in CHART_SCENARIOS:
        renders = {ns: k8s_repository.renders.documents(chart, scenario, ns) for ns in NAMESPACES}
        assert collisions(f"{chart} {scenario}", renders) == []
    clusterwide = k8s_repository.renders.documents(
        OPERATOR_CHART, "clusterwide-values", "pulse-eks"
    )
    assert cluster_scoped(clusterwide) == {
        ("ClusterRole", "pulse-eks-pulse-pulse-operator"),
        ("ClusterRoleBinding", "pulse-eks-pulse-pulse-operator"),
    }
    # watching one namespace, the operator installs nothing cluster-scoped at all
    assert cluster_scoped(k8s_repository.renders.documents(OPERATOR_CHART, "default")) == set()

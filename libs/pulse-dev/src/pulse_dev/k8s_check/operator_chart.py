"""charts/pulse-operator as rendered: one replica, Recreate, a liveness probe on kopf's port,
a restricted pod, and RBAC within an allow-list (namespaced by default, cluster-wide when
asked)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pulse_dev.k8s_check.render import OPERATOR_CHART, Document
from pulse_dev.k8s_check.security import container_restricted, pod_restricted
from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pulse_dev.k8s_check.repository import Repository

# (apiGroup, resource) -> verbs the operator may hold; nothing else
ALLOWED = {
    ("pulse.dev", "eventpipelines"): {"get", "list", "watch", "patch"},
    ("pulse.dev", "eventpipelines/status"): {"get", "patch"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}
# How the problems name each render -> its values file.
SCENARIOS = {"operator-default": "default", "operator-clusterwide": "clusterwide-values"}


def grouped(docs: Iterable[Document]) -> dict[str, list[Document]]:
    by_kind: dict[str, list[Document]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    return by_kind


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def deployment_problems(
    scenario: str, dep: Document, by_kind: dict[str, list[Document]]
) -> list[str]:
    spec = dep["spec"]
    problems = []
    if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
        problems.append(f"{scenario}: the operator must run one replica with strategy Recreate")
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    probe = c.get("livenessProbe", {}).get("httpGet", {})
    if probe.get("path") != "/healthz":
        problems.append(f"{scenario}: no liveness probe on /healthz")
    env = container_env(c)
    port = {p["name"]: p["containerPort"] for p in c.get("ports", [])}.get(probe.get("port"))
    if str(port) != env.get("PULSE_HTTP_PORT"):
        problems.append(
            f"{scenario}: the liveness probe's port {port} is not PULSE_HTTP_PORT "
            f"{env.get('PULSE_HTTP_PORT')}"
        )
    if not (pod_restricted(pod) and container_restricted(c)):
        problems.append(f"{scenario}: pod security is not restricted")
    accounts = {d["metadata"]["name"] for d in by_kind.get("ServiceAccount", [])}
    if pod.get("serviceAccountName") not in accounts:
        problems.append(f"{scenario}: the service account is not rendered")
    return problems


def rbac_problems(scenario: str, by_kind: dict[str, list[Document]]) -> list[str]:
    """Nothing beyond the allow-list, no wildcards."""
    return [
        f"{scenario}: {kind} grants {sorted(extra) or rule['verbs']} on {group or 'core'}/{res}"
        for kind in ("ClusterRole", "Role")
        for role in by_kind.get(kind, [])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        if (extra := set(rule["verbs"]) - ALLOWED.get((group, res), set()))
        or "*" in res
        or "*" in group
    ]


def scope_problems(
    scenario: str, dep: Document, by_kind: dict[str, list[Document]], *, clusterwide: bool
) -> list[str]:
    """Namespaced: a Role in its own namespace, only CRD discovery cluster-wide.
    clusterWide: every namespace, with a ClusterRole."""
    env = container_env(dep["spec"]["template"]["spec"]["containers"][0])
    cluster_resources = {
        r
        for role in by_kind.get("ClusterRole", [])
        for rule in role["rules"]
        for r in rule["resources"]
    }
    problems = []
    if not clusterwide:
        if cluster_resources != {"customresourcedefinitions"}:
            problems.append(
                f"{scenario}: namespaced mode must hold only CRD discovery cluster-wide, "
                f"has {sorted(cluster_resources)}"
            )
        if not by_kind.get("Role") or env.get("PULSE_WATCH_NAMESPACE") != "pulse":
            problems.append(f"{scenario}: must watch its own namespace with a Role")
    elif env.get("PULSE_WATCH_NAMESPACE") != "" or "eventpipelines" not in cluster_resources:
        problems.append(f"{scenario}: clusterWide must watch every namespace with a ClusterRole")
    return problems


def operator_problems(scenario: str, docs: Iterable[Document], *, clusterwide: bool) -> list[str]:
    by_kind = grouped(docs)
    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        return [f"{scenario}: the chart must render one Deployment, renders {len(deployments)}"]
    (dep,) = deployments
    return [
        *deployment_problems(scenario, dep, by_kind),
        *rbac_problems(scenario, by_kind),
        *scope_problems(scenario, dep, by_kind, clusterwide=clusterwide),
    ]


def runs_least_privileged(repository: Repository) -> Verdict:
    problems = [
        p
        for scenario, values in SCENARIOS.items()
        for p in operator_problems(
            scenario,
            repository.renders.documents(OPERATOR_CHART, values),
            clusterwide=values == "clusterwide-values",
        )
    ]
    return Verdict.of(problems, "operator chart ok")

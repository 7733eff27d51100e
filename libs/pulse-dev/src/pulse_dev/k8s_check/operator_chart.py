"""charts/pulse-operator as rendered: one replica, Recreate, a liveness probe on kopf's port,
a restricted pod, RBAC within an allow-list (namespaced by default, cluster-wide when asked)
and holding what the operator does, and the pre-delete hook that refuses to uninstall it
while EventPipelines exist."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pulse_dev.k8s_check.render import OPERATOR_CHART, Document
from pulse_dev.k8s_check.security import container_restricted, pod_restricted
from pulse_dev.k8s_check.suite import Problems, Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pulse_dev.k8s_check.repository import Repository

# (apiGroup, resource) -> verbs the operator may hold; nothing else
ALLOWED = {
    ("pulse.dev", "eventpipelines"): {"get", "list", "watch", "patch"},
    ("pulse.dev", "eventpipelines/status"): {"get", "patch"},
    ("pulse.dev", "eventpipelines/finalizers"): {"update"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
# (apiGroup, resource) -> verbs the operator uses where it watches, and why.
REQUIRED = {
    ("pulse.dev", "eventpipelines"): (
        {"get", "list", "watch", "patch"},
        "kopf lists, watches and patches them (finalizer, progress annotations)",
    ),
    ("pulse.dev", "eventpipelines/status"): ({"patch"}, "conditions, outputs, depths"),
    ("pulse.dev", "eventpipelines/finalizers"): (
        {"update"},
        "the outputs ConfigMap's blockOwnerDeletion, under OwnerReferencesPermissionEnforcement",
    ),
    ("", "configmaps"): ({"get", "create", "patch"}, "the outputs ConfigMap (server-side apply)"),
    ("", "events"): ({"create"}, "Events about each pipeline (kubectl describe, k9s)"),
}
# How the problems name each render -> its values file.
SCENARIOS = {"operator-default": "default", "operator-clusterwide": "clusterwide-values"}
GUARD_MODULE = "pulse_operator.uninstall_guard"
GUARD_SOURCE = "services/operator/src/pulse_operator/uninstall_guard.py"


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
    """Namespaced: a Role in its own namespace and nothing cluster-wide (kopf scans nothing
    when it watches one namespace). clusterWide: every namespace, with a ClusterRole."""
    env = container_env(dep["spec"]["template"]["spec"]["containers"][0])
    cluster_resources = {
        r
        for role in by_kind.get("ClusterRole", [])
        for rule in role["rules"]
        for r in rule["resources"]
    }
    problems = []
    if not clusterwide:
        if cluster := [k for k in ("ClusterRole", "ClusterRoleBinding") if by_kind.get(k)]:
            problems.append(
                f"{scenario}: namespaced mode must hold nothing cluster-wide (kopf's scanning "
                f"is off), renders {cluster} granting {sorted(cluster_resources)}"
            )
        if not by_kind.get("Role") or env.get("PULSE_WATCH_NAMESPACE") != "pulse":
            problems.append(f"{scenario}: must watch its own namespace with a Role")
    elif env.get("PULSE_WATCH_NAMESPACE") != "" or "eventpipelines" not in cluster_resources:
        problems.append(f"{scenario}: clusterWide must watch every namespace with a ClusterRole")
    return problems


def granted(roles: Iterable[Document]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> the verbs these roles grant."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    verbs.setdefault((group, res), set()).update(rule["verbs"])
    return verbs


def required_problems(
    scenario: str, by_kind: dict[str, list[Document]], *, clusterwide: bool
) -> list[str]:
    """The role the operator's ServiceAccount is bound to grants everything it does."""
    kind = "ClusterRole" if clusterwide else "Role"
    have = granted(by_kind.get(kind, []))
    return [
        f"{scenario}: the {kind} lacks {sorted(verbs - have.get((group, res), set()))} on "
        f"{group or 'core'}/{res} ({why})"
        for (group, res), (verbs, why) in REQUIRED.items()
        if verbs - have.get((group, res), set())
    ]


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


def grants_what_it_does(repository: Repository) -> Verdict:
    problems = [
        p
        for scenario, values in SCENARIOS.items()
        for p in required_problems(
            scenario,
            grouped(repository.renders.documents(OPERATOR_CHART, values)),
            clusterwide=values == "clusterwide-values",
        )
    ]
    return Verdict.of(problems, f"the operator's role grants all of {len(REQUIRED)} rules it uses")


def guard_problems(scenario: str, docs: Iterable[Document]) -> list[str]:
    """A pre-delete hook Job runs the uninstall guard as the operator's ServiceAccount, on the
    namespace it watches, and Helm prints its refusal."""
    by_kind = grouped(docs)
    jobs = [
        j
        for j in by_kind.get("Job", [])
        if (j["metadata"].get("annotations") or {}).get("helm.sh/hook") == "pre-delete"
    ]
    if len(jobs) != 1:
        return [f"{scenario}: no pre-delete hook Job refusing to uninstall while pipelines exist"]
    (job,) = jobs
    annotations = job["metadata"]["annotations"]
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    (dep,) = by_kind["Deployment"]
    problems = Problems()
    problems.expect(
        GUARD_MODULE in (c.get("command") or []) + (c.get("args") or []),
        f"{scenario}: the hook does not run {GUARD_MODULE}",
    )
    problems.expect(
        "hook-failed" in annotations.get("helm.sh/hook-output-log-policy", ""),
        f"{scenario}: Helm does not print the hook's refusal (hook-output-log-policy hook-failed)",
    )
    problems.expect(
        "before-hook-creation" in annotations.get("helm.sh/hook-delete-policy", ""),
        f"{scenario}: a refused run must not block the next uninstall (before-hook-creation)",
    )
    problems.expect(
        pod.get("serviceAccountName") == dep["spec"]["template"]["spec"]["serviceAccountName"],
        f"{scenario}: the hook must run as the operator's ServiceAccount (it may list pipelines)",
    )
    watched = container_env(dep["spec"]["template"]["spec"]["containers"][0])
    problems.expect(
        container_env(c).get("PULSE_WATCH_NAMESPACE") == watched.get("PULSE_WATCH_NAMESPACE"),
        f"{scenario}: the hook must look where the operator watches (PULSE_WATCH_NAMESPACE)",
    )
    problems.expect(job["spec"].get("backoffLimit") == 0, f"{scenario}: the hook must not retry")
    return problems


def uninstall_is_guarded(repository: Repository) -> Verdict:
    problems = [
        p
        for scenario, values in SCENARIOS.items()
        for p in guard_problems(scenario, repository.renders.documents(OPERATOR_CHART, values))
    ]
    if not (repository.root / GUARD_SOURCE).is_file():
        problems.append(f"{GUARD_SOURCE} is missing")
    off = repository.helm.run(
        "template", "pulse", OPERATOR_CHART, "--set", "uninstallGuard.enabled=false"
    )
    if off.returncode != 0:
        problems.append(f"uninstallGuard.enabled=false (the override) fails: {off.stderr.strip()}")
    elif "pre-delete" in off.stdout:
        problems.append("uninstallGuard.enabled=false still renders the pre-delete hook")
    return Verdict.of(problems, "helm uninstall is refused while EventPipelines exist")


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

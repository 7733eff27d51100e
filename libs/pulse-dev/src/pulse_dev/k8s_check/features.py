"""What the EKS values must turn on: HPAs and KEDA triggers, Ingresses that drain, network
policies, the ``helm test`` Job, and the script it runs working in the gateway's image."""

from __future__ import annotations

import ast
import importlib
import inspect
from typing import TYPE_CHECKING

from pulse_dev.k8s_check.chart_rules import Render
from pulse_dev.k8s_check.monitoring import alerts, dashboards, monitoring_problems
from pulse_dev.k8s_check.suite import Problems, Verdict

if TYPE_CHECKING:
    from pulse_dev.k8s_check.render import Document
    from pulse_dev.k8s_check.repository import Repository

HTTP_SERVICES = ("ingest", "ws-gateway")
SERVICES = ("ingest", "ws-gateway", "stream-processor", "fraud-worker", "notify-worker")
# service -> the KEDA trigger, the metadata key naming what it scales on, and its value
TRIGGERS = {
    "fraud-worker": (
        "aws-sqs-queue",
        "queueURL",
        "https://sqs.eu-west-1.amazonaws.com/111122223333/pulse-prod-fraud",
    ),
    "notify-worker": (
        "aws-sqs-queue",
        "queueURL",
        "https://sqs.eu-west-1.amazonaws.com/111122223333/pulse-prod-notify",
    ),
    "stream-processor": ("aws-dynamodb-streams", "tableName", "pulse-prod-payments"),
}
# A WebSocket lives as long as the Ingress lets it idle.
GATEWAY_READ_TIMEOUT_SECONDS = 3600
EGRESS_PORTS = {53, 443, 6379}  # DNS, AWS, Redis
HELM_TEST_ENV = {"INGEST_URL", "GATEWAY_URL", "PULSE_JWT_SECRET"}


def autoscaling_problems(render: Render) -> Problems:
    problems = Problems()
    kinds = render.kinds
    for svc in HTTP_SERVICES:
        hpa = kinds.get(("HorizontalPodAutoscaler", f"pulse-{svc}"))
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"pulse-{svc}"}
        problems.expect(
            hpa and hpa["spec"]["scaleTargetRef"] == target,
            f"HPA for {svc} missing or aimed elsewhere",
        )
        problems.expect(("ServiceMonitor", f"pulse-{svc}") in kinds, f"no ServiceMonitor for {svc}")
        problems.expect(("PodDisruptionBudget", f"pulse-{svc}") in kinds, f"no PDB for {svc}")
    for svc in TRIGGERS:
        problems += keda_problems(render, svc)
    so = kinds.get(
        ("ScaledObject", "pulse-stream-processor"), {"spec": {"triggers": [{"metadata": {}}]}}
    )
    problems.expect(
        so["spec"]["triggers"][0]["metadata"].get("shardCount") == "1",
        "stream processor: at most one replica per shard (shardCount 1)",
    )
    return problems


def keda_problems(render: Render, svc: str) -> Problems:
    """One trigger on the right queue or table, strings only, the workload's IRSA identity."""
    problems = Problems()
    trigger, key, want = TRIGGERS[svc]
    so = render.kinds.get(("ScaledObject", f"pulse-{svc}"))
    if not so:
        problems.append(f"no ScaledObject for {svc}")
        return problems
    (t,) = so["spec"]["triggers"]
    got = t["metadata"].get(key)
    problems.expect(
        t["type"] == trigger and got == want,
        f"{svc}: trigger {t['type']} {got} != {trigger} {want}",
    )
    problems.expect(
        so["spec"]["scaleTargetRef"]["name"] == f"pulse-{svc}",
        f"{svc}: ScaledObject targets another Deployment",
    )
    problems.expect(
        all(isinstance(v, str) for v in t["metadata"].values()),
        f"{svc}: KEDA trigger metadata values must be strings",
    )
    auth = render.kinds.get(("TriggerAuthentication", t["authenticationRef"]["name"]), {})
    problems.expect(
        auth.get("spec", {}).get("podIdentity", {}).get("provider") == "aws",
        f"{svc}: on EKS KEDA must use the workload's IRSA identity",
    )
    problems.expect(("PodMonitor", f"pulse-{svc}") in render.kinds, f"no PodMonitor for {svc}")
    return problems


def ingress_problems(render: Render) -> Problems:
    """TLS Ingresses to the API ports; the gateway's long enough for WebSockets and drained
    (a preStop pause within a longer grace period)."""
    problems = Problems()
    for svc in HTTP_SERVICES:
        ing = render.kinds.get(("Ingress", f"pulse-{svc}"))
        if not ing:
            problems.append(f"no Ingress for {svc}")
            continue
        backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        problems.expect(
            backend == {"name": f"pulse-{svc}", "port": {"name": "http"}},
            f"Ingress {svc}: backend {backend}",
        )
        problems.expect(ing["spec"].get("tls"), f"Ingress {svc}: no TLS on EKS")
    gw = render.kinds.get(("Ingress", "pulse-ws-gateway"), {"metadata": {}})
    timeout = (
        gw["metadata"]
        .get("annotations", {})
        .get("nginx.ingress.kubernetes.io/proxy-read-timeout", 0)
    )
    problems.expect(
        int(timeout) >= GATEWAY_READ_TIMEOUT_SECONDS,
        "gateway Ingress: WebSockets need a long read timeout",
    )
    gw_dep = render.kinds.get(
        ("Deployment", "pulse-ws-gateway"), {"spec": {"template": {"spec": {}}}}
    )
    pod = gw_dep["spec"]["template"]["spec"]
    lifecycle = pod.get("containers", [{}])[0].get("lifecycle", {})
    pause = lifecycle.get("preStop", {}).get("sleep", {}).get("seconds", 0)
    problems.expect(
        pause > 0 and pod.get("terminationGracePeriodSeconds", 0) > pause,
        "gateway: a preStop pause and a grace period longer than it, to drain",
    )
    return problems


def network_policy_problems(render: Render) -> Problems:
    """Default deny; Prometheus reaches the ops port, other pods do not; egress to DNS, AWS
    and Redis for every service."""
    problems = Problems()
    nps = [d for d in render.docs if d["kind"] == "NetworkPolicy"]
    for np in nps:
        name = np["metadata"]["name"]
        if ("Deployment", name) in render.kinds:
            problems += ingress_rule_problems(name, np, render.ops_port(name))
    deny = [n for n in nps if n["metadata"]["name"].endswith("-default-deny")]
    problems.expect(
        deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"},
        "no default-deny NetworkPolicy",
    )
    for svc in SERVICES:
        policy = render.kinds.get(("NetworkPolicy", f"pulse-{svc}"))
        if not policy:
            problems.append(f"no NetworkPolicy for {svc}")
            continue
        ports = {
            p.get("port") for e in policy["spec"].get("egress", []) for p in e.get("ports", [])
        }
        problems.expect(
            ports >= EGRESS_PORTS,
            f"NetworkPolicy {svc}: egress must allow DNS, AWS and Redis, has {ports}",
        )
    return problems


def from_prometheus(peer: dict[str, object]) -> bool:
    selector = peer.get("namespaceSelector")
    if not isinstance(selector, dict):
        return False
    return bool(selector["matchLabels"].get("kubernetes.io/metadata.name") == "monitoring")


def ingress_rule_problems(name: str, np: Document, ops: str | None) -> Problems:
    problems = Problems()
    for rule in np["spec"].get("ingress", []):
        ports = {p["port"] for p in rule.get("ports", [])}
        peers = rule.get("from", [])
        if any(from_prometheus(f) for f in peers):
            problems.expect(
                ops in ports, f"NetworkPolicy {name}: Prometheus must reach the ops port"
            )
        if any(f == {"podSelector": {}} for f in peers) and ops == "ops":
            problems.expect(
                "ops" not in ports,
                f"NetworkPolicy {name}: the ops port must not be open to every pod",
            )
    return problems


def helm_test_jobs(docs: list[Document]) -> list[Document]:
    return [
        d
        for d in docs
        if d["kind"] == "Job" and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]


def helm_test_problems(render: Render) -> Problems:
    problems = Problems()
    tests = helm_test_jobs(render.docs)
    problems.expect(len(tests) == 1, "no helm test Job")
    for job in tests:
        (c,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"] for e in c["env"]}
        problems.expect(env >= HELM_TEST_ENV, f"helm test env lacks {sorted(HELM_TEST_ENV - env)}")
        problems.expect(
            c["securityContext"].get("readOnlyRootFilesystem") is True,
            "helm test container must be restricted too",
        )
    return problems


def eks_feature_problems(render: Render) -> Problems:
    return Problems(
        [
            *autoscaling_problems(render),
            *ingress_problems(render),
            *monitoring_problems(render),
            *network_policy_problems(render),
            *helm_test_problems(render),
        ]
    )


def eks_features(repository: Repository) -> Verdict:
    render = Render("eks-values", repository.renders.pulse("eks-values"))
    nps = [d for d in render.docs if d["kind"] == "NetworkPolicy"]
    return Verdict.of(
        eks_feature_problems(render),
        f"features ok: {len(alerts(render.docs))} alerts, {len(dashboards(render.docs))} "
        f"dashboard(s), {len(nps)} NetworkPolicies",
    )


def helm_test_script_works(repository: Repository) -> Verdict:
    """The test Job's script parses, sends ingest its bearer token, and what it imports exists
    in the gateway's environment (websockets' sync client, pulse.auth.issue_token taking sub,
    roles and ttl_seconds)."""
    (job,) = helm_test_jobs(repository.renders.pulse("eks-values"))
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    ast.parse(script)
    client = importlib.import_module("websockets.sync.client")
    auth = importlib.import_module("pulse.auth")
    parameters = set(inspect.signature(auth.issue_token).parameters)
    problems = Problems()
    problems.expect(
        '"Authorization": f"Bearer {token}"' in script,
        "the helm test must send ingest Authorization: Bearer <token> (every /v1/ route wants one)",
    )
    problems.expect(hasattr(client, "connect"), "websockets.sync.client has no connect")
    problems.expect(
        {"sub", "roles", "ttl_seconds"} <= parameters,
        f"pulse.auth.issue_token takes {sorted(parameters)}, not sub, roles and ttl_seconds",
    )
    return Verdict.of(problems, "the helm test script parses; its imports exist")

"""pulse_dev.k8s_check.pod_security: PodSecurity restricted, rule by rule, and on the charts."""

import copy
from typing import Any

import pytest
import yaml

from pulse_dev.k8s_check.pod_security import (
    CHART_SCENARIOS,
    document_problems,
    pod_templates,
    restricted_violations,
)
from pulse_dev.k8s_check.render import PULSE_CHART, Document
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]

# LocalStack as charts/pulse's dev values rendered it before it ran as its image's user: the
# pod PodSecurity restricted refused (FailedCreate … forbidden) in a dev namespace.
OLD_LOCALSTACK = yaml.safe_load("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: pulse-localstack}
spec:
  selector: {matchLabels: {app: localstack}}
  template:
    metadata: {labels: {app: localstack}}
    spec:
      automountServiceAccountToken: false
      securityContext:
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: localstack
          image: localstack/localstack:4.4.0
          securityContext:
            allowPrivilegeEscalation: false
""")


NOT_NON_ROOT = (
    "dev: Deployment/pulse-localstack: container localstack: runAsNonRoot must be true "
    "(pod or container)"
)


def restricted_pod() -> dict[str, Any]:
    return {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "app",
                "image": "i",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


def test_the_old_dev_localstack_is_refused() -> None:
    assert document_problems("dev", [OLD_LOCALSTACK]) == [
        NOT_NON_ROOT,
        "dev: Deployment/pulse-localstack: container localstack: capabilities must drop ALL",
    ]


def test_a_restricted_pod_is_admitted() -> None:
    assert restricted_violations({}, restricted_pod()) == []


@pytest.mark.parametrize(
    ("breach", "violation"),
    [
        (lambda p: p.update(hostNetwork=True), "hostNetwork: true"),
        (
            lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
            "hostPath volume h",
        ),
        (
            lambda p: p["containers"][0]["securityContext"].update(privileged=True),
            "container app: privileged: true",
        ),
        (
            lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["CHOWN"]),
            "container app: adds capabilities ['CHOWN'] (only NET_BIND_SERVICE)",
        ),
        (
            lambda p: p["containers"][0]["securityContext"].update(runAsNonRoot=False),
            "container app: runAsNonRoot must be true (pod or container)",
        ),
        (lambda p: p["securityContext"].update(runAsUser=0), "pod: runAsUser 0"),
        (
            lambda p: p["containers"][0]["securityContext"].update(
                seccompProfile={"type": "Unconfined"}
            ),
            "container app: seccompProfile Unconfined",
        ),
        (
            lambda p: p["securityContext"].pop("seccompProfile"),
            "container app: seccompProfile must be RuntimeDefault or Localhost",
        ),
        (
            lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
            "container app: allowPrivilegeEscalation must be false",
        ),
        (
            lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
            "container app: hostPort 80",
        ),
        (
            lambda p: p["securityContext"].update(
                sysctls=[{"name": "kernel.msgmax", "value": "1"}]
            ),
            "sysctl kernel.msgmax is not a safe sysctl",
        ),
        (
            lambda p: p["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}}),
            "volume n: type ['nfs'] is not allowed",
        ),
        (
            lambda p: p.setdefault("initContainers", []).append({"name": "init", "image": "i"}),
            "container init: capabilities must drop ALL",
        ),
    ],
)
def test_each_rule_refuses_its_breach(breach: Any, violation: str) -> None:
    pod = restricted_pod()
    breach(pod)
    assert violation in restricted_violations({}, pod)


def test_cronjob_and_job_pods_are_found() -> None:
    job = {"kind": "Job", "spec": {"template": {"spec": restricted_pod()}}}
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": job["spec"]}}}
    assert [len(list(pod_templates(d))) for d in (job, cron, {"kind": "Service"})] == [1, 1, 0]


def test_every_chart_renders_restricted_pods_only(k8s_repository: Repository) -> None:
    """The services, Jobs and hooks, the operator and its uninstall guard, LocalStack and
    Redis: with every values file, nothing a restricted namespace would refuse."""
    pods: list[str] = []
    for chart, scenario in CHART_SCENARIOS:
        docs = k8s_repository.renders.documents(chart, scenario)
        assert document_problems(f"{chart} {scenario}", docs) == []
        pods += [d["metadata"]["name"] for d in docs for _ in pod_templates(d)]
    # the release is "pulse": the operator chart's objects are pulse-pulse-operator…
    assert {
        "pulse-localstack",
        "pulse-redis",
        "pulse-ingest",
        "pulse-pulse-operator",
        "pulse-pulse-operator-uninstall-guard",
    } <= set(pods)


def test_the_dev_localstack_made_root_again_fails(k8s_repository: Repository) -> None:
    docs: list[Document] = copy.deepcopy(
        k8s_repository.renders.documents(PULSE_CHART, "dev-values")
    )
    localstack = next(
        d for d in docs if (d["kind"], d["metadata"]["name"]) == ("Deployment", "pulse-localstack")
    )
    del localstack["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    del localstack["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]
    assert document_problems("dev", docs) == [NOT_NON_ROOT]

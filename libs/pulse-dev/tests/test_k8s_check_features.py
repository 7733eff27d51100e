"""pulse_dev.k8s_check.features on the EKS render, then with one thing broken."""

import copy

import pytest

from pulse_dev.k8s_check.chart_rules import Render
from pulse_dev.k8s_check.features import eks_feature_problems
from pulse_dev.k8s_check.render import Document
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]


@pytest.fixture
def eks(k8s_repository: Repository) -> list[Document]:
    return copy.deepcopy(k8s_repository.renders.pulse("eks-values"))


def find(docs: list[Document], kind: str, name: str) -> Document:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_the_eks_values_have_every_feature(eks: list[Document]) -> None:
    assert eks_feature_problems(Render("eks-values", eks)) == []


def test_a_keda_trigger_on_another_queue_with_a_number_fails(eks: list[Document]) -> None:
    (trigger,) = find(eks, "ScaledObject", "pulse-fraud-worker")["spec"]["triggers"]
    trigger["metadata"]["queueURL"] = "https://sqs.eu-west-1.amazonaws.com/111122223333/other"
    trigger["metadata"]["queueLength"] = 5
    problems = eks_feature_problems(Render("eks-values", eks))
    assert (
        "fraud-worker: trigger aws-sqs-queue https://sqs.eu-west-1.amazonaws.com/111122223333/other"
        " != aws-sqs-queue https://sqs.eu-west-1.amazonaws.com/111122223333/pulse-prod-fraud"
        in problems
    )
    assert "fraud-worker: KEDA trigger metadata values must be strings" in problems


def test_a_gateway_that_does_not_drain_fails(eks: list[Document]) -> None:
    pod = find(eks, "Deployment", "pulse-ws-gateway")["spec"]["template"]["spec"]
    del pod["containers"][0]["lifecycle"]
    assert eks_feature_problems(Render("eks-values", eks)) == [
        "gateway: a preStop pause and a grace period longer than it, to drain"
    ]


def test_no_default_deny_and_no_dns_egress_fail(eks: list[Document]) -> None:
    docs = [d for d in eks if not d["metadata"]["name"].endswith("-default-deny")]
    policy = find(docs, "NetworkPolicy", "pulse-ingest")
    for rule in policy["spec"]["egress"]:
        rule["ports"] = [p for p in rule.get("ports", []) if p.get("port") != 53]
    problems = eks_feature_problems(Render("eks-values", docs))
    assert "no default-deny NetworkPolicy" in problems
    assert any(p.startswith("NetworkPolicy ingest: egress must allow DNS") for p in problems)


def test_a_monitor_on_the_api_port_and_a_missing_alert_fail(eks: list[Document]) -> None:
    monitor = find(eks, "ServiceMonitor", "pulse-ingest")
    monitor["spec"]["endpoints"][0]["port"] = "http"
    for rules in (d for d in eks if d["kind"] == "PrometheusRule"):
        for group in rules["spec"]["groups"]:
            group["rules"] = [r for r in group["rules"] if r.get("alert") != "PulseStreamLagHigh"]
    problems = eks_feature_problems(Render("eks-values", eks))
    assert "ServiceMonitor/pulse-ingest: must scrape the ops port 'ops', not ['http']" in problems
    assert "no alert PulseStreamLagHigh" in problems


def test_a_helm_test_without_its_env_fails(eks: list[Document]) -> None:
    job = next(d for d in eks if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "GATEWAY_URL"]
    assert eks_feature_problems(Render("eks-values", eks)) == [
        "helm test env lacks ['GATEWAY_URL']"
    ]

"""pulse_dev.k8s_check.chart_rules on the chart as rendered, then with one thing broken."""

import copy
from pathlib import Path

import pytest

from pulse_dev.k8s_check.chart_rules import (
    PORTS,
    ChartValues,
    Irsa,
    Render,
    ServiceSettings,
    ops_port_problems,
    render_problems,
    settings_env_problems,
)
from pulse_dev.k8s_check.render import Document
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]


@pytest.fixture(scope="module")
def values(k8s_repository: Repository) -> ChartValues:
    return ChartValues(k8s_repository.yaml("charts/pulse/values.yaml"))


@pytest.fixture(scope="module")
def irsa(k8s_repository: Repository) -> Irsa:
    policies = Path(k8s_repository.root, "k8s/iam").glob("*-policy.json")
    return Irsa("111122223333", frozenset(p.name.removesuffix("-policy.json") for p in policies))


def rendered(repository: Repository, scenario: str) -> list[Document]:
    return copy.deepcopy(repository.renders.pulse(scenario))


def deployment(docs: list[Document], name: str) -> Document:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


@pytest.mark.parametrize("scenario", ["default", "dev-values", "eks-values"])
def test_the_chart_follows_its_rules(
    k8s_repository: Repository, values: ChartValues, irsa: Irsa, scenario: str
) -> None:
    assert render_problems(Render(scenario, rendered(k8s_repository, scenario)), values, irsa) == []


def test_a_container_that_may_escalate_privileges_fails(
    k8s_repository: Repository, values: ChartValues, irsa: Irsa
) -> None:
    docs = rendered(k8s_repository, "default")
    container = deployment(docs, "pulse-ingest")["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    assert render_problems(Render("default", docs), values, irsa) == [
        "default: Deployment/pulse-ingest: container securityContext not restricted"
    ]


def test_probes_on_the_public_port_and_no_tmp_fail(
    k8s_repository: Repository, values: ChartValues, irsa: Irsa
) -> None:
    docs = rendered(k8s_repository, "default")
    pod = deployment(docs, "pulse-ws-gateway")["spec"]["template"]["spec"]
    pod["containers"][0]["readinessProbe"]["httpGet"]["port"] = "http"
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "tmp"]
    problems = render_problems(Render("default", docs), values, irsa)
    where = "default: Deployment/pulse-ws-gateway"
    assert (
        f"{where}: the readiness probe must use port 'ops' (the ops routes), not 'http'" in problems
    )
    assert f"{where}: no emptyDir at /tmp" in problems


def test_a_missing_label_and_replicas_beside_an_autoscaler_fail(
    k8s_repository: Repository, values: ChartValues, irsa: Irsa
) -> None:
    docs = rendered(k8s_repository, "eks-values")
    dep = deployment(docs, "pulse-fraud-worker")
    del dep["metadata"]["labels"]["app.kubernetes.io/part-of"]
    dep["spec"]["replicas"] = 2
    problems = render_problems(Render("eks-values", docs), values, irsa)
    assert (
        "eks-values: Deployment/pulse-fraud-worker: missing labels {'app.kubernetes.io/part-of'}"
        in problems
    )
    assert (
        "eks-values: Deployment/pulse-fraud-worker: an autoscaler owns the count, so no replicas"
        in problems
    )


def test_an_irsa_role_outside_eks_and_a_wrong_one_on_eks_fail(
    k8s_repository: Repository, values: ChartValues, irsa: Irsa
) -> None:
    dev = rendered(k8s_repository, "dev-values")
    account = next(
        d for d in dev if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "pulse-ingest"
    )
    account["metadata"]["annotations"] = {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}
    assert render_problems(Render("dev-values", dev), values, irsa) == [
        "dev-values: ServiceAccount/pulse-ingest has an IRSA role outside eks"
    ]
    other = Irsa("999999999999", irsa.services_with_policy)
    problems = render_problems(
        Render("eks-values", rendered(k8s_repository, "eks-values")), values, other
    )
    assert any(
        "IRSA role" in p and "want 'arn:aws:iam::999999999999:role/pulse-ingest'" in p
        for p in problems
    )


def test_dev_values_without_the_in_cluster_redis_fail(
    k8s_repository: Repository, values: ChartValues, irsa: Irsa
) -> None:
    docs = [
        d for d in rendered(k8s_repository, "dev-values") if d["metadata"]["name"] != "pulse-redis"
    ]
    assert "dev-values: no pulse-redis" in render_problems(Render("dev-values", docs), values, irsa)


def test_an_ops_port_the_code_does_not_serve_fails(values: ChartValues) -> None:
    assert ops_port_problems(values, lambda _: "serving_api(app)") == []
    problems = ops_port_problems(values, lambda _: "")
    assert problems
    assert all("never calls pulse.service.serving_api" in p for p in problems)


@pytest.fixture(scope="module")
def settings() -> dict[str, ServiceSettings]:
    return {svc: ServiceSettings.of(svc) for svc in PORTS}


def ingest_env(docs: list[Document]) -> list[dict[str, object]]:
    env: list[dict[str, object]] = deployment(docs, "pulse-ingest")["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    return env


def test_ingest_and_the_gateway_verify_tokens_and_ingest_reads_the_doors_settings(
    settings: dict[str, ServiceSettings],
) -> None:
    assert {svc for svc, s in settings.items() if s.verifies_tokens} == {"ingest", "ws-gateway"}
    assert "PULSE_TRUSTED_PROXY_HOPS" in settings["ingest"].variables
    assert "PULSE_TRUSTED_PROXY_HOPS" not in settings["ws-gateway"].variables


@pytest.mark.parametrize("scenario", ["default", "dev-values", "eks-values"])
def test_every_variable_the_chart_sets_is_read(
    k8s_repository: Repository, settings: dict[str, ServiceSettings], scenario: str
) -> None:
    render = Render(scenario, rendered(k8s_repository, scenario))
    assert settings_env_problems(render, settings) == []


def test_a_misspelt_or_missing_setting_fails(
    k8s_repository: Repository, settings: dict[str, ServiceSettings]
) -> None:
    docs = rendered(k8s_repository, "default")
    env = ingest_env(docs)
    for entry in env:
        if entry["name"] == "PULSE_RATE_LIMIT_BURST":
            entry["name"] = "PULSE_RATE_LIMT_BURST"
    env[:] = [e for e in env if e["name"] != "PULSE_JWT_ALGORITHM"]
    where = "default: Deployment/pulse-ingest"
    assert settings_env_problems(Render("default", docs), settings) == [
        f"{where}: sets ['PULSE_RATE_LIMT_BURST'], which ingest's settings never read",
        f"{where}: verifies tokens but lacks ['PULSE_JWT_ALGORITHM']",
        f"{where}: reads the door's settings but lacks ['PULSE_RATE_LIMIT_BURST']",
    ]


def test_behind_an_ingress_no_trusted_proxy_fails(
    k8s_repository: Repository, settings: dict[str, ServiceSettings]
) -> None:
    docs = rendered(k8s_repository, "eks-values")
    for entry in ingest_env(docs):
        if entry["name"] == "PULSE_TRUSTED_PROXY_HOPS":
            entry["value"] = "0"
    (problem,) = settings_env_problems(Render("eks-values", docs), settings)
    assert "PULSE_TRUSTED_PROXY_HOPS must be at least 1" in problem

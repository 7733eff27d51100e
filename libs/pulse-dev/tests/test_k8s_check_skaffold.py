"""pulse_dev.k8s_check.skaffold and skaffold_render: the modules, statically and rendered."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulse_dev.k8s_check.render import Document
from pulse_dev.k8s_check.repository import Repository
from pulse_dev.k8s_check.skaffold import skaffold_problems
from pulse_dev.k8s_check.skaffold_render import (
    ProfileRender,
    ReleaseRender,
    apply_patches,
    split_install_problems,
    split_matches_single,
)

pytest_plugins = ["pulse_dev.k8s_check.testing"]

ROOT = Path(__file__).resolve().parents[3]
SERVICES = list(yaml.safe_load((ROOT / "charts/pulse/values.yaml").read_text())["services"])


@pytest.fixture
def cfgs() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / "skaffold.yaml").read_text()))


def module(cfgs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in cfgs if c["metadata"]["name"] == name)


def test_the_modules_pass(cfgs: list[dict[str, Any]]) -> None:
    problems, summary = skaffold_problems(cfgs, SERVICES, ROOT)
    assert problems == []
    assert summary.startswith("skaffold: modules ['fraud-worker', 'ingest',")


def test_a_module_without_the_base_building_elsewhere_fails(cfgs: list[dict[str, Any]]) -> None:
    ingest = module(cfgs, "ingest")
    del ingest["requires"]
    ingest["build"]["artifacts"][0]["context"] = "services/ingest"
    problems, _ = skaffold_problems(cfgs, SERVICES, ROOT)
    assert (
        "module ingest: must require pulse-base (the shared ConfigMap, Secrets, dev LocalStack "
        "and Redis)" in problems
    )
    assert "pulse/ingest: must build from the repository root" in problems
    assert any(p.startswith("service modules drift from ingest's shape") for p in problems)


def test_a_missing_profile_and_a_patch_past_the_list_fail(cfgs: list[dict[str, Any]]) -> None:
    gateway = module(cfgs, "ws-gateway")
    gateway["profiles"] = [p for p in gateway["profiles"] if p["name"] != "minikube"]
    kind = next(p for p in gateway["profiles"] if p["name"] == "kind")
    kind["patches"].append(
        {"op": "add", "path": "/build/artifacts/3/docker/buildArgs", "value": {}}
    )
    problems, _ = skaffold_problems(cfgs, SERVICES, ROOT)
    assert "module ws-gateway: no minikube profile" in problems
    assert (
        "module ws-gateway profile kind: /build/artifacts/3/docker/buildArgs names no artifact of "
        "this module" in problems
    )


def test_a_profile_patch_applies_like_skaffold(cfgs: list[dict[str, Any]]) -> None:
    ingest = module(cfgs, "ingest")
    patched = apply_patches(ingest, "kind")
    assert patched["build"]["artifacts"][0]["docker"]["target"] == "dev"
    assert "target" not in ingest["build"]["artifacts"][0]["docker"]  # the loaded module is kept


def docs_of(render: ProfileRender, release: str) -> list[Document]:
    return next(r.docs for r in render.releases if r.name == release)


def test_the_kind_profile_installs_each_object_once(k8s_repository: Repository) -> None:
    render = k8s_repository.skaffold.profile("kind")
    chart_of = {
        r["name"]: r["chartPath"]
        for c in k8s_repository.skaffold.cfgs()
        for r in c["deploy"]["helm"]["releases"]
    }
    assert split_install_problems(render, SERVICES, chart_of) == []
    assert split_matches_single(
        render.everything(), k8s_repository.renders.pulse("dev-values"), "dev"
    ).passed

    # the gateway's release also rendering the ingest Deployment: twice, and not its own alone
    ingest = next(d for d in docs_of(render, "pulse-ingest") if d["kind"] == "Deployment")
    gateway = next(r for r in render.releases if r.name == "pulse-ws-gateway")
    broken = copy.copy(render)
    broken.releases = [
        r if r is not gateway else ReleaseRender(r.module, r.name, [*r.docs, ingest])
        for r in render.releases
    ]
    problems = split_install_problems(broken, SERVICES, chart_of)
    assert (
        "kind: Deployment/pulse-ingest is rendered by releases ['pulse-ingest', "
        "'pulse-ws-gateway']: Helm would refuse the second" in problems
    )
    assert any(
        p.startswith("kind: release pulse-ws-gateway must deploy pulse-ws-gateway alone")
        for p in problems
    )


def test_a_split_install_missing_an_object_differs_from_one_release(
    k8s_repository: Repository,
) -> None:
    split = [
        d
        for d in k8s_repository.skaffold.profile("eks").everything()
        if d["kind"] != "PodDisruptionBudget"
    ]
    verdict = split_matches_single(
        split, k8s_repository.renders.pulse("eks-values"), "eks-values.yaml"
    )
    assert not verdict.passed
    assert "only single [('PodDisruptionBudget', " in verdict.output

"""Every skaffold.yaml module's Helm release rendered as Skaffold would (its valuesFiles after
the profile's patches, its overrides, setValues and setValueTemplates with stand-in image
names), alone and all together, for the dev (kind) and EKS profiles: each service's release
holds only its workload, no object is rendered twice, references between releases resolve,
and together they install what one release of the chart does."""

from __future__ import annotations

import collections
import copy
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pulse_dev.k8s_check.render import (
    API_VERSION_FLAGS,
    KUBE_VERSION,
    NAMESPACE,
    Document,
    ObjectKey,
    documents,
    labels,
    validate_strictly,
)
from pulse_dev.k8s_check.skaffold import releases
from pulse_dev.k8s_check.suite import Check, Problems, Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pulse_dev.k8s_check.render import Helm
    from pulse_dev.k8s_check.repository import Repository

STAND_IN_REGISTRY = "registry.test"
STAND_IN_TAG = "skaffold-tag"
# What a release may read that no release renders: the operator's outputs (optional) and the
# JWT Secret made apart on EKS.
EXTERNAL = {"pulse-outputs", "pulse-jwt"}
# profile -> the one-release values file the split install must match
SINGLE_RELEASE = {"kind": "dev-values", "eks": "eks-values"}


def apply_patches(cfg: dict[str, Any], profile: str) -> dict[str, Any]:
    """The module after its profile's JSON patches (Skaffold's profile activation).

    Raises ValueError on a patch operation other than add.
    """
    cfg = copy.deepcopy(cfg)
    for prof in cfg.get("profiles", []):
        if prof["name"] != profile:
            continue
        for p in prof.get("patches", []):
            if p.get("op", "add") != "add":
                raise ValueError(f"unsupported patch op {p['op']}")
            *parents, last = p["path"].strip("/").split("/")
            node = cfg
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), p["value"])
            else:
                node[last] = p["value"]
    return cfg


def stand_in_image(template: str) -> str:
    """A setValueTemplates value with Skaffold's image variables filled in."""
    template = re.sub(r"\{\{\.IMAGE_REPO_(\w+)\}\}", STAND_IN_REGISTRY + r"/\1", template)
    return re.sub(r"\{\{\.IMAGE_TAG_(\w+)\}\}", STAND_IN_TAG, template)


def helm_arguments(release: dict[str, Any], overrides: Path | None) -> list[str]:
    args = ["template", release["name"], release["chartPath"], "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION, *API_VERSION_FLAGS]
    for f in release.get("valuesFiles", []):
        args += ["-f", f]
    if overrides is not None:
        args += ["-f", str(overrides)]
    for k, v in release.get("setValues", {}).items():
        args += ["--set", f"{k}={v}"]
    for k, v in release.get("setValueTemplates", {}).items():
        args += ["--set", f"{k}={stand_in_image(v)}"]
    return args


@dataclass(frozen=True)
class ReleaseRender:
    module: str
    name: str
    docs: list[Document]


@dataclass
class ProfileRender:
    """Every module's releases under one profile; ``failures`` says which did not render."""

    profile: str
    releases: list[ReleaseRender] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def everything(self) -> list[Document]:
        return [d for r in self.releases for d in r.docs]


def render_profile(helm: Helm, cfgs: Iterable[dict[str, Any]], profile: str) -> ProfileRender:
    out = ProfileRender(profile)
    with tempfile.TemporaryDirectory(prefix="pulse-k8s-check-") as work:
        for cfg in cfgs:
            module = cfg["metadata"]["name"]
            for release in releases(apply_patches(cfg, profile)):
                overrides = None
                if "overrides" in release:
                    overrides = Path(work) / f"skaffold-{release['name']}-overrides.yaml"
                    overrides.write_text(yaml.safe_dump(release["overrides"]))
                done = helm.run(*helm_arguments(release, overrides))
                if done.returncode:
                    out.failures.append(
                        f"{profile}: helm template {release['name']} failed: "
                        f"{done.stderr.strip()[-600:]}"
                    )
                    continue
                out.releases.append(ReleaseRender(module, release["name"], documents(done.stdout)))
    return out


def containers(d: Document) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = d["spec"]["template"]["spec"]["containers"]
    return found


def service_release_problems(profile: str, release: ReleaseRender, svc: str) -> Problems:
    """Only its own objects, plus the topology Job it runs (dev) and, for the gateway, helm
    test; one workload; only the image Skaffold built."""
    problems = Problems()
    components = {labels(d).get("app.kubernetes.io/component") for d in release.docs}
    workloads = {d["metadata"]["name"] for d in release.docs if d["kind"] == "Deployment"}
    extra = components - {svc, "topology", "test" if svc == "ws-gateway" else svc}
    problems.expect(
        not extra,
        f"{profile}: release {release.name} renders objects of {sorted(extra, key=str)}, not "
        f"only {svc}'s",
    )
    problems.expect(
        workloads == {f"pulse-{svc}"},
        f"{profile}: release {release.name} must deploy pulse-{svc} alone, deploys "
        f"{sorted(workloads)}",
    )
    images = {
        c["image"]
        for d in release.docs
        if d["kind"] in ("Deployment", "Job")
        for c in containers(d)
    }
    problems.expect(
        images == {f"{STAND_IN_REGISTRY}/pulse_{svc.replace('-', '_')}:{STAND_IN_TAG}"},
        f"{profile}: release {release.name} runs images {sorted(images)}, not only the one "
        "Skaffold built",
    )
    return problems


def shared_release_problems(profile: str, release: ReleaseRender, services: list[str]) -> Problems:
    """The shared release of charts/pulse: no service objects, the shared ConfigMap."""
    problems = Problems()
    components = {labels(d).get("app.kubernetes.io/component") for d in release.docs}
    problems.expect(
        not components & set(services),
        f"{profile}: release {release.name} (shared) renders service objects "
        f"{sorted(str(c) for c in components & set(services))}",
    )
    problems.expect(
        any(
            d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pulse-env" for d in release.docs
        ),
        f"{profile}: release {release.name} lacks the shared ConfigMap pulse-env",
    )
    return problems


def reference_problems(profile: str, everything: list[Document]) -> Problems:
    """Every envFrom ConfigMap or Secret and every secretKeyRef resolves across releases."""
    problems = Problems()
    names = {(d["kind"], d["metadata"]["name"]) for d in everything}

    def missing(kind: str, name: str) -> bool:
        return (kind, name) not in names and name not in EXTERNAL

    for d in everything:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        for c in containers(d):
            for ref in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in ref and missing(kind, ref[key]["name"]):
                        problems.append(
                            f"{profile}: {d['kind']}/{d['metadata']['name']} reads "
                            f"{kind}/{ref[key]['name']}, which no release renders"
                        )
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and missing("Secret", ref["name"]):
                    problems.append(
                        f"{profile}: {d['metadata']['name']} reads Secret/{ref['name']}, which no "
                        "release renders"
                    )
    return problems


def split_install_problems(
    render: ProfileRender, services: list[str], chart_of: dict[str, str]
) -> Problems:
    """``chart_of``: release name -> its chartPath."""
    profile = render.profile
    problems = Problems(render.failures)
    owners: dict[ObjectKey, list[str]] = collections.defaultdict(list)
    for release in render.releases:
        for d in release.docs:
            owners[(d["kind"], d["metadata"]["name"])].append(release.name)
        if release.module in services:
            problems += service_release_problems(profile, release, release.module)
        elif chart_of[release.name] == "charts/pulse":
            problems += shared_release_problems(profile, release, services)
    problems += [
        f"{profile}: {kind}/{name} is rendered by releases {rels}: Helm would refuse the second"
        for (kind, name), rels in owners.items()
        if len(rels) > 1
    ]
    deployed = {d["metadata"]["name"] for d in render.everything() if d["kind"] == "Deployment"}
    want = {f"pulse-{s}" for s in services} | {"pulse-operator"}
    problems.expect(
        want <= deployed, f"{profile}: all modules together lack {sorted(want - deployed)}"
    )
    problems += reference_problems(profile, render.everything())
    return problems


def pulse_objects(docs: Iterable[Document]) -> set[ObjectKey]:
    """charts/pulse's objects; the topology Job counted once (one per release with services)."""
    out = set()
    for d in docs:
        if labels(d).get("app.kubernetes.io/name") != "pulse":
            continue
        name = d["metadata"]["name"]
        if d["kind"] == "Job" and "-topology" in name:
            name = "<topology Job>"
        out.add((d["kind"], name))
    return out


def split_matches_single(
    split: Iterable[Document], single: Iterable[Document], scenario: str
) -> Verdict:
    ours, one = pulse_objects(split), pulse_objects(single)
    if ours != one:
        return Verdict(
            passed=False,
            output=f"split install differs from the one-release install ({scenario}): only split "
            f"{sorted(ours - one)}, only single {sorted(one - ours)}",
        )
    return Verdict(passed=True, output=f"{len(ours)} objects, the same as one release")


@dataclass
class SkaffoldRenders:
    """Each profile rendered once, on first use."""

    repository: Repository
    _profiles: dict[str, ProfileRender] = field(default_factory=dict)

    def cfgs(self) -> list[dict[str, Any]]:
        return list(yaml.safe_load_all(self.repository.text("skaffold.yaml")))

    def profile(self, name: str) -> ProfileRender:
        if name not in self._profiles:
            self._profiles[name] = render_profile(self.repository.helm, self.cfgs(), name)
        return self._profiles[name]


def rendered_alone_and_together(profile: str) -> Check:
    def run(repository: Repository) -> Verdict:
        cfgs = repository.skaffold.cfgs()
        render = repository.skaffold.profile(profile)
        services = list(repository.yaml("charts/pulse/values.yaml")["services"])
        chart_of = {r["name"]: r["chartPath"] for cfg in cfgs for r in releases(cfg)}
        owners = {(d["kind"], d["metadata"]["name"]) for d in render.everything()}
        count = sum(len(releases(cfg)) for cfg in cfgs)
        return Verdict.of(
            split_install_problems(render, services, chart_of),
            f"{profile}: {len(owners)} objects from {count} releases, each once; each "
            "service's release holds only its workload",
        )

    return Check(
        f"skaffold modules rendered alone and together ({profile} profile): only their own "
        "objects, none twice",
        run,
    )


def installs_what_one_release_does(profile: str) -> Check:
    scenario = SINGLE_RELEASE[profile]

    def run(repository: Repository) -> Verdict:
        split = repository.skaffold.profile(profile).everything()
        return split_matches_single(split, repository.renders.pulse(scenario), f"{scenario}.yaml")

    return Check(
        f"skaffold modules together install what one release does ({profile} profile = "
        f"{scenario.removesuffix('-values')} values)",
        run,
    )


def renders_validate(repository: Repository) -> Verdict:
    verdicts = [
        validate_strictly(
            repository.skaffold.profile(p).everything(), f"skaffold-{p}.yaml", warn=False
        )
        for p in SINGLE_RELEASE
    ]
    return Verdict(
        passed=all(v.passed for v in verdicts), output="\n".join(v.output for v in verdicts).strip()
    )


def checks() -> list[Check]:
    return [
        *(rendered_alone_and_together(p) for p in SINGLE_RELEASE),
        *(installs_what_one_release_does(p) for p in SINGLE_RELEASE),
        Check(
            "skaffold modules' renders pass kubernetes-validate --strict (kind, eks)",
            renders_validate,
        ),
    ]

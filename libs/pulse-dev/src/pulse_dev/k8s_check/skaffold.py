"""skaffold.yaml, statically: one named module per service (plus pulse-base and the operator),
requires that resolve, artifacts built from the root with Dockerfiles and sync rules that
match the dev stage, releases that use only their own images, kind/minikube/eks profiles whose
patches address the module's own lists, one shape for the service modules, port-forwards.

No skaffold binary ships in a package registry reachable here, so ``skaffold diagnose`` cannot
run: this checks what it would, and :mod:`pulse_dev.k8s_check.skaffold_render` renders each
module's release the way Skaffold's helm deployer calls Helm.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

import yaml

from pulse_dev.k8s_check.suite import Problems, Verdict

if TYPE_CHECKING:
    from pathlib import Path

    from pulse_dev.k8s_check.repository import Repository

API_VERSION = "skaffold/v4beta13"
BASE = "pulse-base"
PROFILES = ("kind", "minikube", "eks")
ACTIVATION = {"kind": ["kind-.*"], "minikube": ["minikube"], "eks": ["arn:aws:eks:.*"]}
PORT_FORWARDS = (
    ("pulse-ingest", 8080),
    ("pulse-ws-gateway", 8090),
    ("kube-prometheus-stack-grafana", 80),
    ("pulse-localstack", 4566),
)
OWN_PORT_FORWARDS = {"ingest": 8080, "ws-gateway": 8090}
OPERATOR_IMAGE_TEMPLATES = {
    "image.repository": "{{.IMAGE_REPO_pulse_operator}}",
    "image.tag": "{{.IMAGE_TAG_pulse_operator}}",
}
IMAGE_REF = re.compile(r"\{\{\s*\.IMAGE_(?:REPO|TAG|FULLY_QUALIFIED)_(\w+)\s*\}\}")
DEV_STAGE_COPY = re.compile(r"^COPY --chown=10001:10001 \S+ (\S+)$", re.MULTILINE)


def image_key(image: str) -> str:
    """Skaffold's name for an image in templates and environment variables."""
    return re.sub(r"[/\-.]", "_", image)


def artifacts(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cfg.get("build", {}).get("artifacts", [])
    return found


def releases(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cfg.get("deploy", {}).get("helm", {}).get("releases", [])
    return found


def named_modules(cfgs: list[dict[str, Any]], problems: Problems) -> dict[str, dict[str, Any]]:
    """The documents by metadata.name (``skaffold dev -m <name>``)."""
    modules: dict[str, dict[str, Any]] = {}
    for i, cfg in enumerate(cfgs):
        problems.expect(
            cfg.get("apiVersion") == API_VERSION and cfg.get("kind") == "Config",
            f"skaffold.yaml document {i}: apiVersion must be {API_VERSION}, kind Config",
        )
        name = (cfg.get("metadata") or {}).get("name")
        if not name:
            problems.append(
                f"skaffold.yaml document {i}: no metadata.name, so `skaffold dev -m` cannot "
                "select it"
            )
            continue
        if name in modules:
            problems.append(f"skaffold.yaml: two modules named {name}")
        modules[name] = cfg
    return modules


class Requires:
    """The modules' requires: same file, names that exist, no cycle."""

    def __init__(self, modules: dict[str, dict[str, Any]], problems: Problems) -> None:
        self.modules, self.problems = modules, problems

    def direct(self, name: str) -> list[str]:
        out = []
        for req in self.modules.get(name, {}).get("requires", []):
            if set(req) - {"configs", "activeProfiles"}:
                self.problems.append(
                    f"module {name}: requires {req}: only configs in this file (no path, git "
                    "or GCS)"
                )
            for dep in req.get("configs", []):
                if dep in self.modules:
                    out.append(dep)
                else:
                    self.problems.append(f"module {name}: requires {dep}, which is no module")
        return out

    def closure(self, name: str, seen: tuple[str, ...] = ()) -> set[str]:
        if name in seen:
            self.problems.append(f"module {name}: requires itself through {' -> '.join(seen)}")
            return set()
        return {name}.union(*[self.closure(d, (*seen, name)) for d in self.direct(name)])


def requires_problems(modules: dict[str, dict[str, Any]]) -> Problems:
    """Every module but the base needs the base, which stands alone."""
    problems = Problems()
    graph = Requires(modules, problems)
    for name in modules:
        deps = graph.closure(name)
        problems.expect(
            name == BASE or BASE in deps,
            f"module {name}: must require {BASE} (the shared ConfigMap, Secrets, dev LocalStack "
            "and Redis)",
        )
    base = modules.get(BASE, {})
    problems.expect(
        not (base.get("requires") or artifacts(base)),
        f"module {BASE}: must stand alone (no requires) and build no image",
    )
    return problems


def sync_problems(image: str, artifact: dict[str, Any], dockerfile: str, root: Path) -> Problems:
    """Sync rules land exactly where the dev stage copies the sources."""
    problems = Problems()
    dev_dests = set(DEV_STAGE_COPY.findall(dockerfile))
    rules = artifact.get("sync", {}).get("manual", [])
    problems.expect(
        {r["dest"] for r in rules} == dev_dests and dev_dests,
        f"{image}: sync destinations {sorted(r['dest'] for r in rules)} != the dev stage's "
        f"sources {sorted(dev_dests)}",
    )
    for r in rules:
        problems.expect(
            r["src"].endswith("**/*.py") and list(root.glob(r["src"])),
            f"{image}: sync src {r['src']} matches no Python file",
        )
        problems.expect(
            r["src"].startswith(r.get("strip", "\0"))
            and r["dest"] == "/app/src/" + r["strip"].rstrip("/"),
            f"{image}: sync {r['src']} -> {r['dest']} strips {r.get('strip')!r}: the path "
            "would not "
            "match the dev image's",
        )
    return problems


def artifact_problems(modules: dict[str, dict[str, Any]], root: Path) -> tuple[Problems, list[str]]:
    """Each module builds only its own image, from the root, with a Dockerfile that exists.
    Also returns the images."""
    problems, builders = Problems(), dict[str, str]()
    for name, cfg in modules.items():
        built = [a.get("image") for a in artifacts(cfg)]
        problems.expect(
            name == BASE or built == [f"pulse/{name}"],
            f"module {name}: must build exactly pulse/{name}, builds {built}",
        )
        for a in artifacts(cfg):
            image, svc = a["image"], a["image"].rsplit("/", 1)[-1]
            if image in builders:
                problems.append(f"{image}: built by modules {builders[image]} and {name}")
            builders[image] = name
            problems.expect(
                a.get("context", ".") == ".", f"{image}: must build from the repository root"
            )
            dockerfile = a.get("docker", {}).get("dockerfile", "")
            if dockerfile != f"services/{svc}/Dockerfile" or not (root / dockerfile).is_file():
                problems.append(
                    f"{image}: dockerfile {dockerfile!r} must be services/{svc}/Dockerfile "
                    "and exist"
                )
                continue
            problems += sync_problems(image, a, (root / dockerfile).read_text(), root)
    return problems, list(builders)


def release_problems(
    name: str, release: dict[str, Any], own_images: set[str], root: Path
) -> Problems:
    """The chart exists; images only from the module's own artifacts; on charts/pulse, the
    shared instance and the module's scope."""
    problems = Problems()
    rel = release["name"]
    problems.expect(
        (root / release["chartPath"] / "Chart.yaml").exists(),
        f"release {rel}: no chart at {release['chartPath']}",
    )
    problems += [
        f"release {rel}: {key} uses image {ref}, which module {name} does not build"
        for key, tpl in release.get("setValueTemplates", {}).items()
        for ref in IMAGE_REF.findall(tpl)
        if ref not in own_images
    ]
    if release["chartPath"] == "charts/pulse":
        ov = release.get("overrides", {})
        problems.expect(
            ov.get("instance") == "pulse",
            f"release {rel}: overrides.instance must be pulse (one Pulse across releases)",
        )
        want = (
            {"shared": True, "services": []}
            if name == BASE
            else {"shared": False, "services": [name]}
        )
        problems.expect(
            ov.get("scope") == want, f"release {rel}: overrides.scope {ov.get('scope')} != {want}"
        )
    return problems


def image_template_problems(name: str, cfg: dict[str, Any]) -> Problems:
    """A service module passes its image to its one release with setValueTemplates."""
    problems = Problems()
    rels = releases(cfg)
    key = image_key(f"pulse/{name}")
    tpls = rels[0].get("setValueTemplates", {}) if len(rels) == 1 else {}
    for field, var in (("repository", "IMAGE_REPO_"), ("tag", "IMAGE_TAG_")):
        got, want = tpls.get(f"services.{name}.image.{field}"), "{{." + var + key + "}}"
        problems.expect(
            got == want,
            f"module {name}: setValueTemplates services.{name}.image.{field} = {got!r}, want "
            f"{want!r}",
        )
    return problems


def releases_problems(
    modules: dict[str, dict[str, Any]], services: list[str], root: Path
) -> tuple[Problems, int]:
    """Unique release names, each release's own rules, the operator's and CRDs' releases.
    Also returns how many releases there are."""
    problems, owners = Problems(), dict[str, tuple[str, dict[str, Any]]]()
    for name, cfg in modules.items():
        own = {image_key(a["image"]) for a in artifacts(cfg)}
        for r in releases(cfg):
            if r["name"] in owners:
                problems.append(
                    f"release {r['name']}: deployed by modules {owners[r['name']][0]} and {name}"
                )
            owners[r["name"]] = (name, r)
            problems += release_problems(name, r, own, root)
        if name in services:
            problems += image_template_problems(name, cfg)
    op_tpls = owners.get("pulse-operator", ("", {}))[1].get("setValueTemplates", {})
    problems.expect(
        op_tpls == OPERATOR_IMAGE_TEMPLATES, f"release pulse-operator: setValueTemplates {op_tpls}"
    )
    problems.expect(
        owners.get("pulse-crds", ("",))[0] == BASE, f"the CRD release pulse-crds must be in {BASE}"
    )
    return problems, len(owners)


def patch_problems(
    where: str, patch: dict[str, Any], counts: tuple[int, int], root: Path
) -> Problems:
    """A patch addresses an artifact or release the module has; the values files it adds
    exist and leave instance and scope to the modules' overrides."""
    problems = Problems()
    path, value = patch["path"], patch.get("value")
    n_artifacts, n_releases = counts
    if m := re.fullmatch(r"/build/artifacts/(\d+)/.*", path):
        problems.expect(
            int(m.group(1)) < n_artifacts, f"{where}: {path} names no artifact of this module"
        )
    if m := re.fullmatch(r"/deploy/helm/releases/(\d+)(/.*)?", path):
        problems.expect(
            int(m.group(1)) < n_releases, f"{where}: {path} names no release of this module"
        )
    for f in value if isinstance(value, list) else []:
        if not (isinstance(f, str) and f.endswith(".yaml")):
            continue
        if not (root / f).exists():
            problems.append(f"{where}: {f} does not exist")
        elif set(yaml.safe_load((root / f).read_text()) or {}) & {"instance", "scope"}:
            problems.append(
                f"{f}: must not set instance or scope (the modules' overrides own them)"
            )
    return problems


def profile_problems(name: str, cfg: dict[str, Any], pname: str, root: Path) -> Problems:
    """kind and minikube build the dev target with a writable /app/src for sync; eks the
    runtime (default) target."""
    profile = next((p for p in cfg.get("profiles", []) if p["name"] == pname), None)
    if profile is None:
        return Problems([f"module {name}: no {pname} profile"])
    where = f"module {name} profile {pname}"
    n_artifacts = len(artifacts(cfg))
    problems, targets, relaxed = Problems(), dict[int, Any](), False
    for patch in profile.get("patches", []):
        if m := re.fullmatch(r"/build/artifacts/(\d+)/docker/target", patch["path"]):
            targets[int(m.group(1))] = patch.get("value")
        problems += patch_problems(where, patch, (n_artifacts, len(releases(cfg))), root)
        flat = patch["path"] + " " + str(patch.get("value"))
        relaxed = relaxed or ("readOnlyRootFilesystem" in flat and "false" in flat)
    if pname == "eks":
        problems.expect(
            not targets, f"module {name}: profile eks must build the runtime (default) target"
        )
        return problems
    problems.expect(
        targets == dict.fromkeys(range(n_artifacts), "dev"),
        f"{where}: every artifact must build the dev target, got {targets}",
    )
    problems.expect(
        not n_artifacts or relaxed,
        f"{where}: sync needs a writable /app/src (readOnlyRootFilesystem false in dev)",
    )
    return problems


def profiles_problems(modules: dict[str, dict[str, Any]], root: Path) -> Problems:
    problems = Problems()
    for name, cfg in modules.items():
        for pname in PROFILES:
            problems += profile_problems(name, cfg, pname, root)
        profiles = {p["name"]: p for p in cfg.get("profiles", [])}
        contexts = {
            p: [a.get("kubeContext") for a in profiles.get(p, {}).get("activation", [])]
            for p in PROFILES
        }
        problems.expect(
            contexts == ACTIVATION,
            f"module {name}: profiles must activate on kubeContext kind-.*, minikube, "
            "arn:aws:eks:.* "
            f"(got {contexts})",
        )
    return problems


def shape_problems(modules: dict[str, dict[str, Any]], services: list[str]) -> Problems:
    """One shape for the service modules: equal once the name is a placeholder (port-forwards
    aside)."""

    def shape(name: str) -> str:
        cfg = copy.deepcopy(modules[name])
        cfg.pop("portForward", None)
        text = yaml.safe_dump(cfg, sort_keys=True)
        return text.replace("pulse_" + name.replace("-", "_"), "pulse_@KEY@").replace(name, "@SVC@")

    shapes = {s: shape(s) for s in services if s in modules}
    if len(set(shapes.values())) <= 1:
        return Problems()
    ref = services[0]
    drifted = [s for s, t in shapes.items() if t != shapes[ref]]
    return Problems([f"service modules drift from {ref}'s shape: {drifted}"])


def port_forward_problems(modules: dict[str, dict[str, Any]]) -> Problems:
    problems = Problems()
    forwards = {
        (p["resourceName"], p["port"])
        for cfg in modules.values()
        for p in cfg.get("portForward", [])
    }
    forwards |= {
        (p["value"]["resourceName"], p["value"]["port"])
        for cfg in modules.values()
        for prof in cfg.get("profiles", [])
        if prof["name"] == "kind"
        for p in prof.get("patches", [])
        if p["path"] == "/portForward/-"
    }
    for want in PORT_FORWARDS:
        problems.expect(want in forwards, f"skaffold.yaml: no portForward for {want}")
    for name, port in OWN_PORT_FORWARDS.items():
        own = {(p["resourceName"], p["port"]) for p in modules.get(name, {}).get("portForward", [])}
        problems.expect(
            (f"pulse-{name}", port) in own,
            f"module {name}: its own portForward for pulse-{name}:{port} (so -m {name} "
            "forwards it)",
        )
    return problems


def skaffold_problems(
    cfgs: list[dict[str, Any]], services: list[str], root: Path
) -> tuple[Problems, str]:
    """Everything wrong with skaffold.yaml's documents, and a summary for when nothing is."""
    problems = Problems()
    modules = named_modules(cfgs, problems)
    want = {BASE, "operator", *services}
    problems.expect(
        set(modules) == want,
        f"skaffold.yaml modules {sorted(m for m in modules if m)} != {sorted(want)} (pulse-base, "
        "the operator, one per service)",
    )
    problems += requires_problems(modules)
    found, images = artifact_problems(modules, root)
    problems += found
    found, n_releases = releases_problems(modules, services, root)
    problems += found
    problems += profiles_problems(modules, root)
    problems += shape_problems(modules, services)
    problems += port_forward_problems(modules)
    summary = (
        f"skaffold: modules {sorted(modules)}, {len(images)} artifacts with sync, "
        f"{n_releases} releases"
    )
    return problems, summary


def kind_cluster_problems(kind: dict[str, Any]) -> list[str]:
    if kind.get("kind") != "Cluster" or not kind.get("apiVersion", "").startswith("kind.x-k8s.io/"):
        return ["k8s/kind-cluster.yaml: not a kind Cluster config"]
    return []


def services_of(repository: Repository) -> list[str]:
    return list(repository.yaml("charts/pulse/values.yaml")["services"])


def modules_are_sound(repository: Repository) -> Verdict:
    cfgs = list(yaml.safe_load_all(repository.text("skaffold.yaml")))
    problems, summary = skaffold_problems(cfgs, services_of(repository), repository.root)
    problems += kind_cluster_problems(repository.yaml("k8s/kind-cluster.yaml"))
    return Verdict.of(problems, summary)

"""What the user reads: NOTES.txt as ``helm install`` prints it (dev, EKS, a split release)
names only objects the install creates, its Ingress URLs and next steps; the deploy docs name
existing charts, values files and paths, and agree with the EKS values (resource prefix, IRSA
role names, Skaffold's ECR repository names)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import yaml

from pulse_dev.k8s_check.render import NAMESPACE, PULSE_CHART, by_kind_and_name
from pulse_dev.k8s_check.suite import Problems, Verdict

if TYPE_CHECKING:
    from pathlib import Path

    from pulse_dev.k8s_check.render import Document
    from pulse_dev.k8s_check.repository import Repository

# helm template skips NOTES.txt; `helm install --dry-run=client` renders it without a cluster,
# so without the KEDA and Prometheus Operator CRDs: those features are off for this render.
WITHOUT_CRDS = (
    *("--set", "monitoring.enabled=false"),
    *("--set", "services.stream-processor.keda.enabled=false"),
    *("--set", "services.fraud-worker.keda.enabled=false"),
    *("--set", "services.notify-worker.keda.enabled=false"),
)
# scenario -> (release name, values file, extra flags); "split" is the gateway's own release
NOTES_INSTALLS = {
    "dev-values": ("pulse", "dev-values", ()),
    "eks-values": ("pulse", "eks-values", ()),
    "split": (
        "pulse-ws-gateway",
        "eks-values",
        (
            "--set",
            "instance=pulse",
            "--set",
            "scope.shared=false",
            "--set",
            "scope.services={ws-gateway}",
        ),
    ),
}
NEXT_STEPS = (
    "pulse token --sub",
    "helm test pulse",
    "port-forward svc/pulse-ingest 8080:8080",
    # every /v1/ route of ingest wants a bearer credential: a token or an API key
    '-H "Authorization: Bearer $TOKEN"',
    "pulse keys create --account",
)
DOC_PATH = re.compile(r"(?<![\w./-])((?:charts|k8s|services|scripts)/[A-Za-z0-9_./*-]+)")
HELM_ON_CHART = re.compile(
    r"helm (?:upgrade --install|install|template|lint)[^\n]*?\s(charts/[\w-]+)"
)
EVENTPIPELINE_SED = re.compile(
    r"sed 's/(\^  resourcePrefix: \.\*)/  resourcePrefix: ([^/]+)/' "
    r"k8s/examples/eventpipeline\.yaml"
)


def install_notes(repository: Repository, scenario: str) -> str:
    """What ``helm install --dry-run=client`` prints for the scenario, from NOTES: on."""
    release, values, extra = NOTES_INSTALLS[scenario]
    text = repository.helm.output(
        *("install", release, PULSE_CHART, "--dry-run=client", "--namespace", NAMESPACE),
        *("-f", f"{PULSE_CHART}/ci/{values}.yaml", *WITHOUT_CRDS, *extra),
    )
    return text[text.find("NOTES:") :] if "NOTES:" in text else ""


def ingress_url(svc: str, ingress: dict[str, Any]) -> str:
    secure = bool(ingress.get("tlsSecretName"))
    if svc == "ws-gateway":
        return f"{'wss' if secure else 'ws'}://{ingress['host']}"
    return f"{'https' if secure else 'http'}://{ingress['host']}"


def notes_problems(
    scenario: str, notes: str, docs: list[Document], eks: dict[str, Any]
) -> Problems:
    """``docs``: what the install creates; ``eks``: charts/pulse/ci/eks-values.yaml."""
    problems = Problems()
    if not notes:
        problems.append(f"{scenario}: no NOTES printed")
        return problems
    objects = by_kind_and_name(docs)
    for kind, short in (("Service", "svc"), ("Deployment", "deploy")):
        for name in re.findall(rf"\b{short}/([a-z0-9-]+)", notes):
            problems.expect(
                (kind, name) in objects,
                f"{scenario}: NOTES names {short}/{name}, which the install does not create",
            )
    for want in NEXT_STEPS:
        problems.expect(want in notes, f"{scenario}: NOTES do not say {want!r}")
    if scenario != "dev-values":
        shown = {"ws-gateway"} if scenario == "split" else {"ingest", "ws-gateway"}
        for svc in sorted(shown):
            url = ingress_url(svc, eks["services"][svc]["ingress"])
            problems.expect(url in notes, f"{scenario}: NOTES lack {svc}'s Ingress URL {url}")
        prefix = eks["aws"]["resourcePrefix"]
        problems.expect(
            "get eventpipelines" in notes and prefix in notes,
            f"{scenario}: NOTES must say the operator's EventPipeline (prefix {prefix}) "
            "creates the "
            "resources",
        )
    if scenario == "split":
        problems.expect(
            "helm test pulse-ws-gateway" in notes,
            "split: NOTES must name the release that holds the helm test",
        )
    return problems


def notes_name_real_objects(repository: Repository) -> Verdict:
    eks = repository.yaml(f"{PULSE_CHART}/ci/eks-values.yaml")
    problems = Problems()
    for scenario in NOTES_INSTALLS:
        render = "eks-values" if scenario == "split" else scenario
        notes = install_notes(repository, scenario)
        problems += notes_problems(scenario, notes, repository.renders.pulse(render), eks)
    return Verdict.of(
        problems, "NOTES name only objects the install creates, its Ingress URLs and next steps"
    )


def path_problems(doc: str, text: str, root: Path) -> Problems:
    """Every repository path a document names exists; every chart a helm command names is one."""
    problems = Problems()
    for raw in sorted(set(DOC_PATH.findall(text))):
        path = raw.rstrip(".,:;)")
        if "*" in path:
            problems.expect(list(root.glob(path)), f"{doc}: {path} matches no file")
        else:
            problems.expect((root / path).exists(), f"{doc}: {path} does not exist")
    for chart in HELM_ON_CHART.findall(text):
        problems.expect(
            (root / chart / "Chart.yaml").exists(),
            f"{doc}: helm command on {chart}, which is no chart",
        )
    return problems


def eventpipeline_problems(deploy: str, example: str, eks: dict[str, Any]) -> Problems:
    """The README's EventPipeline command: its sed finds the example's resourcePrefix line and
    sets the EKS prefix; the outputs ConfigMap is the one the EKS values mount."""
    problems = Problems()
    prefix = eks["aws"]["resourcePrefix"]
    m = EVENTPIPELINE_SED.search(deploy)
    if not m:
        problems.append(
            "README Deploy: no `sed ... k8s/examples/eventpipeline.yaml` setting the EKS "
            "resourcePrefix"
        )
    else:
        problems.expect(
            m.group(2) == prefix,
            f"README Deploy: the EventPipeline gets resourcePrefix {m.group(2)}, eks-values "
            f"has {prefix}",
        )
        problems.expect(
            re.search(r"(?m)^  resourcePrefix: ", example),
            "k8s/examples/eventpipeline.yaml: no `  resourcePrefix:` line for the README's sed",
        )
    problems.expect(
        f"{yaml.safe_load(example)['metadata']['name']}-outputs"
        == eks["pipeline"]["outputsConfigMap"],
        "eks-values pipeline.outputsConfigMap is not the example EventPipeline's <name>-outputs",
    )
    return problems


def ecr_problems(deploy: str, images: list[str]) -> Problems:
    """Skaffold's names for the images under --default-repo (/ and . escaped to _) are the
    ECR repositories the README lists."""
    problems = Problems()
    for image in images:
        ecr = re.sub(r"[/.]", "_", image)
        problems.expect(
            f"`{ecr}`" in deploy,
            f"README Deploy: the ECR repository {ecr} (Skaffold's name for {image}) is not listed",
        )
    return problems


def operator_values_problems(operator_eks: dict[str, Any], eks: dict[str, Any]) -> Problems:
    problems = Problems()
    where = "charts/pulse-operator/ci/eks-values.yaml"
    want_role = f"arn:aws:iam::{eks['aws']['accountId']}:role/pulse-operator"
    problems.expect(
        operator_eks["serviceAccount"]["annotations"].get("eks.amazonaws.com/role-arn")
        == want_role,
        f"{where}: IRSA role must be {want_role} (k8s/iam/README.md's name)",
    )
    problems.expect(
        operator_eks["image"]["repository"].startswith(eks["global"]["imageRegistry"] + "/"),
        f"{where}: image not in the same registry as charts/pulse's eks values",
    )
    return problems


def deploy_docs(root: Path) -> list[str]:
    return [
        "README.md",
        "k8s/README.md",
        "k8s/iam/README.md",
        *(str(p.relative_to(root)) for p in sorted(root.glob("charts/*/README.md"))),
        *(str(p.relative_to(root)) for p in sorted(root.glob("charts/*/templates/NOTES.txt"))),
    ]


def deploy_docs_agree(repository: Repository) -> Verdict:
    docs = deploy_docs(repository.root)
    problems = Problems()
    for doc in docs:
        problems += path_problems(doc, repository.text(doc), repository.root)
    readme = repository.text("README.md")
    deploy = readme[readme.index("## Deploy") : readme.index("## Operate")]
    eks = repository.yaml(f"{PULSE_CHART}/ci/eks-values.yaml")
    problems += eventpipeline_problems(
        deploy, repository.text("k8s/examples/eventpipeline.yaml"), eks
    )
    prefix = eks["aws"]["resourcePrefix"]
    iam = repository.text("k8s/iam/README.md")
    problems.expect(
        f"PREFIX={prefix}" in iam and "s/pulse-/$PREFIX/g" in iam,
        f"k8s/iam/README.md: the policy commands must substitute the resource prefix ({prefix} in "
        "eks-values)",
    )
    images = [
        a["image"]
        for c in yaml.safe_load_all(repository.text("skaffold.yaml"))
        for a in c.get("build", {}).get("artifacts", [])
    ]
    problems += ecr_problems(deploy, images)
    problems += operator_values_problems(
        repository.yaml("charts/pulse-operator/ci/eks-values.yaml"), eks
    )
    return Verdict.of(
        problems,
        f"{len(docs)} documents: paths exist, prefix {prefix}, {len(images)} ECR names, roles "
        "agree",
    )

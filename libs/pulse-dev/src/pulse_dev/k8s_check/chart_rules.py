"""The pulse chart's rendered objects follow its rules, with the default, dev and EKS values:
labels, selectors, restricted security contexts, named ports, probes on the ops port, /tmp,
checksums, environment, PDBs, IRSA roles, and what the dev and EKS values must produce; and
each container's ``PULSE_`` variables against the settings its service reads."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices

from pulse.settings import CredentialSettings, PulseSettings
from pulse_dev.k8s_check.render import PULSE_SCENARIOS, Document, ObjectKey, by_kind_and_name
from pulse_dev.k8s_check.security import container_restricted, pod_restricted
from pulse_dev.k8s_check.suite import Problems, Verdict

if TYPE_CHECKING:
    from collections.abc import Callable

    from pulse_dev.k8s_check.repository import Repository

# Each service's API port (PULSE_HTTP_PORT).
PORTS = {
    "ingest": 8080,
    "ws-gateway": 8090,
    "stream-processor": 9101,
    "fraud-worker": 9102,
    "notify-worker": 9103,
}
COMMON_ENV = {
    "AWS_REGION",
    "REDIS_URL",
    "PULSE_RESOURCE_PREFIX",
    "PULSE_REDIS_PREFIX",
    "PULSE_LOG_LEVEL",
}
LABELS = {
    "app.kubernetes.io/" + k
    for k in ("name", "instance", "version", "managed-by", "component", "part-of")
} | {"helm.sh/chart"}
SELECTOR = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
IRSA = "eks.amazonaws.com/role-arn"
# an emptyDir for what the read-only root filesystem cannot hold
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108 - a mount the chart renders
OUTPUTS_REF = {"configMapRef": {"name": "pulse-outputs", "optional": True}}
# What a service whose settings verify bearer tokens (pulse.settings.CredentialSettings) gets,
# and what the door of an API (ingest.access) reads: a service reading one of ACCESS_ENV
# gets every one, so the chart's rateLimit values are never silently the code's defaults.
CREDENTIAL_ENV = {"PULSE_JWT_SECRET", "PULSE_JWT_ALGORITHM", "PULSE_JWKS_CACHE_SECONDS"}
ACCESS_ENV = {
    "PULSE_API_KEY_CACHE_SECONDS",
    "PULSE_RATE_LIMIT_PER_SECOND",
    "PULSE_RATE_LIMIT_BURST",
    "PULSE_AUTH_FAILURES_PER_MINUTE",
    "PULSE_TRUSTED_PROXY_HOPS",
}


@dataclass(frozen=True)
class ChartValues:
    """charts/pulse/values.yaml: the ports each service's container names."""

    values: dict[str, Any]

    def port_names(self, svc: str) -> tuple[dict[str, int], str]:
        """The container's named ports, and the one serving the ops routes. The public
        services' API is "http" and, where they serve them apart (PULSE_OPS_PORT), the ops
        routes are "ops"; a worker's one port is "ops"."""
        v = {**self.values["defaults"], **self.values["services"][svc]}
        if not v["public"]:
            return {"ops": v["port"]}, "ops"
        if v["opsPort"] != v["port"]:
            return {"http": v["port"], "ops": v["opsPort"]}, "ops"
        return {"http": v["port"]}, "http"


@dataclass(frozen=True)
class Irsa:
    """Who gets an IRSA role on EKS: the services with a k8s/iam policy, in this account."""

    account: str
    services_with_policy: frozenset[str]


@dataclass(frozen=True)
class Render:
    scenario: str
    docs: list[Document]

    @cached_property
    def kinds(self) -> dict[ObjectKey, Document]:
        return by_kind_and_name(self.docs)

    def ops_port(self, name: str) -> str | None:
        """The port a Deployment serves its ops routes on (its readiness probe's), if any."""
        dep = self.kinds.get(("Deployment", name))
        if dep is None:
            return None
        port: str = dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"][
            "port"
        ]
        return port

    def config(self) -> dict[str, str]:
        cm = self.kinds.get(("ConfigMap", "pulse-env"), {})
        data: dict[str, str] = cm.get("data", {})
        return data


def config_and_label_problems(render: Render) -> Problems:
    problems = Problems()
    scenario, cm = render.scenario, render.config()
    problems.expect(
        ("ConfigMap", "pulse-env") in render.kinds, f"{scenario}: no ConfigMap pulse-env"
    )
    allowed_missing = {"REDIS_URL"} if scenario == "eks-values" else set()
    problems.expect(
        set(cm) | allowed_missing >= COMMON_ENV,
        f"{scenario}: ConfigMap lacks {COMMON_ENV - set(cm)}",
    )
    for d in render.docs:
        have = set(d["metadata"].get("labels", {}))
        problems.expect(
            have >= LABELS,
            f"{scenario}: {d['kind']}/{d['metadata']['name']}: missing labels {LABELS - have}",
        )
    return problems


def pod_problems(where: str, name: str, dep: Document) -> Problems:
    """Selector, checksum, service account, security, /tmp, requests and limits."""
    problems = Problems()
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    problems.expect(
        set(spec["selector"]["matchLabels"]) == SELECTOR,
        f"{where}: selector must be name+instance+component",
    )
    problems.expect(
        "checksum/config" in spec["template"]["metadata"].get("annotations", {}),
        f"{where}: no checksum/config",
    )
    problems.expect(pod.get("serviceAccountName") == name, f"{where}: wrong service account")
    problems.expect(
        pod_restricted(pod), f"{where}: pod must runAsNonRoot with seccomp RuntimeDefault"
    )
    problems.expect(container_restricted(c), f"{where}: container securityContext not restricted")
    tmp_volume = any(v["name"] == "tmp" and "emptyDir" in v for v in pod.get("volumes", []))
    problems.expect(
        TMP_MOUNT in c.get("volumeMounts", []) and tmp_volume,
        f"{where}: no emptyDir at /tmp",
    )
    resources = c.get("resources", {})
    problems.expect(
        "requests" in resources and "limits" in resources, f"{where}: requests and limits"
    )
    return problems


def port_and_env_problems(where: str, svc: str, c: dict[str, Any], values: ChartValues) -> Problems:
    """Named ports, the port variables, probes on the ops port, the environment's sources."""
    problems = Problems()
    port = PORTS[svc]
    named, ops = values.port_names(svc)
    got_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    problems.expect(got_ports == named, f"{where}: container ports {c['ports']} != {named}")
    env = {e["name"]: e for e in c.get("env", [])}
    problems.expect(
        env.get("PULSE_HTTP_PORT", {}).get("value") == str(port),
        f"{where}: PULSE_HTTP_PORT != {port}",
    )
    want_ops = str(named["ops"]) if "http" in named and "ops" in named else None
    problems.expect(
        env.get("PULSE_OPS_PORT", {}).get("value") == want_ops,
        f"{where}: PULSE_OPS_PORT must be {want_ops}",
    )
    for kind in ("liveness", "readiness", "startup"):
        got = c.get(f"{kind}Probe", {}).get("httpGet", {}).get("port")
        problems.expect(
            got == ops,
            f"{where}: the {kind} probe must use port {ops!r} (the ops routes), not {got!r}",
        )
    if svc == "stream-processor":
        problems.expect(
            env.get("PULSE_WORKER_ID", {}).get("valueFrom")
            == {"fieldRef": {"fieldPath": "metadata.name"}},
            f"{where}: PULSE_WORKER_ID must be the pod's name (downward API): two replicas must "
            "never share a lease owner id",
        )
    problems.expect(
        {"configMapRef": {"name": "pulse-env"}} in c.get("envFrom", []),
        f"{where}: no envFrom pulse-env",
    )
    probe_paths = {"liveness": "/healthz", "readiness": "/readyz"}
    for kind, path in probe_paths.items():
        problems.expect(
            c.get(f"{kind}Probe", {}).get("httpGet", {}).get("path") == path,
            f"{where}: {kind} must GET {path}",
        )
    return problems


def least_replicas(render: Render, name: str) -> int | None:
    """The autoscaler's minimum, when an HPA or a KEDA ScaledObject owns the count."""
    if hpa := render.kinds.get(("HorizontalPodAutoscaler", name)):
        return int(hpa["spec"]["minReplicas"])
    if scaled := render.kinds.get(("ScaledObject", name)):
        return int(scaled["spec"]["minReplicaCount"])
    return None


def service_and_scaling_problems(render: Render, svc: str, values: ChartValues) -> Problems:
    """The Service's ports; a PDB exactly where at least two replicas run."""
    problems = Problems()
    scenario, kinds, name = render.scenario, render.kinds, f"pulse-{svc}"
    named, _ = values.port_names(svc)
    svc_obj = kinds.get(("Service", name), {"spec": {"ports": [{}]}})
    ports = svc_obj["spec"]["ports"]
    problems.expect(
        ports[0].get("port") == PORTS[svc], f"{scenario}: Service/{name} port != {PORTS[svc]}"
    )
    problems.expect(
        {p.get("name"): p.get("port") for p in ports} == named,
        f"{scenario}: Service/{name} ports != {named}",
    )
    spec = kinds[("Deployment", name)]["spec"]
    where = f"{scenario}: Deployment/{name}"
    least = least_replicas(render, name)
    if least is None:
        least = spec["replicas"]
    else:
        problems.expect(
            "replicas" not in spec, f"{where}: an autoscaler owns the count, so no replicas"
        )
    problems.expect(
        (("PodDisruptionBudget", name) in render.kinds) == (least > 1),
        f"{where}: PDB must exist exactly when (minimum) replicas > 1",
    )
    return problems


def irsa_problems(render: Render, svc: str, irsa: Irsa) -> Problems:
    """On EKS a role exactly where k8s/iam has a policy (the services that call AWS), named
    as k8s/iam/README.md creates it: arn:aws:iam::<aws.accountId>:role/pulse-<service>.
    Elsewhere, none."""
    problems = Problems()
    scenario, name = render.scenario, f"pulse-{svc}"
    account = render.kinds.get(("ServiceAccount", name), {})
    role = account.get("metadata", {}).get("annotations", {}).get(IRSA)
    if scenario != "eks-values":
        problems.expect(
            role is None, f"{scenario}: ServiceAccount/{name} has an IRSA role outside eks"
        )
    elif svc in irsa.services_with_policy:
        want = f"arn:aws:iam::{irsa.account}:role/pulse-{svc}"
        problems.expect(
            role == want, f"{scenario}: ServiceAccount/{name} IRSA role {role!r}, want {want!r}"
        )
    else:
        problems.expect(
            role is None,
            f"{scenario}: ServiceAccount/{name} has IRSA role {role!r}, but {svc} calls no AWS "
            "API (no k8s/iam policy)",
        )
    return problems


def workload_problems(render: Render, svc: str, values: ChartValues, irsa: Irsa) -> Problems:
    problems = Problems()
    scenario, name = render.scenario, f"pulse-{svc}"
    dep = render.kinds.get(("Deployment", name))
    if dep is None:
        problems.append(f"{scenario}: no Deployment {name}")
        return problems
    for kind in ("Service", "ServiceAccount"):
        problems.expect((kind, name) in render.kinds, f"{scenario}: no {kind} {name}")
    where = f"{scenario}: Deployment/{name}"
    problems += pod_problems(where, name, dep)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    problems += port_and_env_problems(where, svc, c, values)
    problems += service_and_scaling_problems(render, svc, values)
    problems += irsa_problems(render, svc, irsa)
    return problems


def dev_problems(render: Render) -> Problems:
    """Dev values: the in-cluster LocalStack and Redis, the topology Job, the emulator's keys."""
    problems = Problems()
    scenario, cm, kinds = render.scenario, render.config(), render.kinds
    problems.expect(
        cm.get("AWS_ENDPOINT_URL") == "http://pulse-localstack:4566",
        f"{scenario}: AWS_ENDPOINT_URL must be the in-cluster LocalStack",
    )
    problems.expect(
        cm.get("REDIS_URL") == "redis://pulse-redis:6379/0",
        f"{scenario}: REDIS_URL must be the in-cluster Redis",
    )
    for dep in ("pulse-localstack", "pulse-redis"):
        problems.expect(
            ("Deployment", dep) in kinds and ("Service", dep) in kinds, f"{scenario}: no {dep}"
        )
    problems.expect(any(k == "Job" for k, _ in kinds), f"{scenario}: no topology Job")
    problems.expect(
        ("Secret", "pulse-aws") in kinds, f"{scenario}: no Secret with the emulator's keys"
    )
    return problems


def eks_problems(render: Render) -> Problems:
    """EKS values: the operator's outputs mounted, real AWS and ElastiCache, no dev objects."""
    problems = Problems()
    scenario, cm, kinds = render.scenario, render.config(), render.kinds
    for svc in PORTS:
        dep = kinds.get(("Deployment", f"pulse-{svc}"))
        env_from = (
            dep["spec"]["template"]["spec"]["containers"][0].get("envFrom", []) if dep else []
        )
        problems.expect(
            env_from[1:2] == [OUTPUTS_REF],
            f"{scenario}: {svc} must mount the operator's outputs ConfigMap after pulse-env",
        )
    problems.expect("AWS_ENDPOINT_URL" not in cm, f"{scenario}: no AWS_ENDPOINT_URL on real AWS")
    problems.expect(
        cm.get("REDIS_URL", "").startswith("rediss://"),
        f"{scenario}: REDIS_URL must be the ElastiCache (TLS) URL",
    )
    problems.expect(("Secret", "pulse-aws") not in kinds, f"{scenario}: no static AWS keys on EKS")
    problems.expect(
        not any(n in ("pulse-localstack", "pulse-redis") for _, n in kinds),
        f"{scenario}: no dev dependencies on EKS",
    )
    return problems


def render_problems(render: Render, values: ChartValues, irsa: Irsa) -> Problems:
    problems = config_and_label_problems(render)
    for svc in PORTS:
        problems += workload_problems(render, svc, values, irsa)
    if render.scenario == "dev-values":
        problems += dev_problems(render)
    if render.scenario == "eks-values":
        problems += eks_problems(render)
    return problems


def ops_port_problems(values: ChartValues, code_of: Callable[[str], str]) -> Problems:
    """A separate ops port only where the code serves one (pulse.service.serving_api), else
    the probes would fail in the cluster."""
    problems = Problems()
    for svc in values.values["services"]:
        named, _ = values.port_names(svc)
        if "http" in named and "ops" in named:
            problems.expect(
                "serving_api(" in code_of(svc),
                f"values: {svc} has opsPort {named['ops']} != port, but services/{svc}/src never "
                "calls pulse.service.serving_api",
            )
    return problems


@dataclass(frozen=True)
class ServiceSettings:
    """What a service's settings class reads: its variables, and whether it verifies tokens."""

    variables: frozenset[str]
    verifies_tokens: bool

    @classmethod
    def of(cls, svc: str) -> ServiceSettings:
        """From ``<package>.settings``: the one PulseSettings subclass it defines."""
        module = importlib.import_module(f"{svc.replace('-', '_')}.settings")
        (settings,) = [
            c
            for c in vars(module).values()
            if isinstance(c, type)
            and issubclass(c, PulseSettings)
            and c.__module__ == module.__name__
        ]
        variables = set()
        for name, spec in settings.model_fields.items():
            alias = spec.validation_alias
            if isinstance(alias, AliasChoices):
                variables |= {a for a in alias.choices if isinstance(a, str)}
            else:
                variables.add(f"PULSE_{name.upper()}")
        return cls(frozenset(variables), issubclass(settings, CredentialSettings))


def settings_env_problems(render: Render, settings: dict[str, ServiceSettings]) -> Problems:
    """Every PULSE_ variable a container gets is one its service reads (pydantic ignores the
    others, so a misspelt one would silently leave the code's default); a service verifying
    tokens gets the JWT settings, its secret from a Secret; a service reading the door's
    settings gets them all, and behind an Ingress trusts at least the controller's hop."""
    problems = Problems()
    for svc, reads in settings.items():
        name = f"pulse-{svc}"
        dep = render.kinds.get(("Deployment", name))
        if dep is None:
            continue
        where = f"{render.scenario}: Deployment/{name}"
        env = {
            e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", [])
        }
        unread = sorted(n for n in env if n.startswith("PULSE_") and n not in reads.variables)
        problems.expect(not unread, f"{where}: sets {unread}, which {svc}'s settings never read")
        if reads.verifies_tokens:
            problems.expect(
                set(env) >= CREDENTIAL_ENV,
                f"{where}: verifies tokens but lacks {sorted(CREDENTIAL_ENV - set(env))}",
            )
            problems.expect(
                "secretKeyRef" in env.get("PULSE_JWT_SECRET", {}).get("valueFrom", {}),
                f"{where}: PULSE_JWT_SECRET must come from a Secret",
            )
        if reads.variables & ACCESS_ENV:
            problems.expect(
                set(env) >= ACCESS_ENV,
                f"{where}: reads the door's settings but lacks {sorted(ACCESS_ENV - set(env))}",
            )
        hops = env.get("PULSE_TRUSTED_PROXY_HOPS", {}).get("value")
        if hops is not None and ("Ingress", name) in render.kinds:
            problems.expect(
                int(hops) >= 1,
                f"{where}: behind its Ingress, PULSE_TRUSTED_PROXY_HOPS must be at least 1 "
                "(else every client shares the controller's address)",
            )
    return problems


def follow_the_rules(repository: Repository) -> Verdict:
    values = ChartValues(repository.yaml("charts/pulse/values.yaml"))
    irsa = Irsa(
        account=str(repository.yaml("charts/pulse/ci/eks-values.yaml")["aws"]["accountId"]),
        services_with_policy=frozenset(
            p.name.removesuffix("-policy.json")
            for p in (repository.root / "k8s/iam").glob("*-policy.json")
        ),
    )
    settings = {svc: ServiceSettings.of(svc) for svc in PORTS}
    problems = Problems()
    for scenario in PULSE_SCENARIOS:
        render = Render(scenario, repository.renders.pulse(scenario))
        problems += render_problems(render, values, irsa)
        problems += settings_env_problems(render, settings)

    def code_of(svc: str) -> str:
        return " ".join(
            f.read_text() for f in (repository.root / "services" / svc / "src").rglob("*.py")
        )

    problems += ops_port_problems(values, code_of)
    return Verdict.of(problems, "rendered objects ok")

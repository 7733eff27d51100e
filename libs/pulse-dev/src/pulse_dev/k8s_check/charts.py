"""The three charts linted and rendered with every values file, each render validated against
the Kubernetes schemas, and the pulse chart's values schema refusing typos."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulse_dev.k8s_check.render import (
    CRD_CHART,
    KUBE_VERSION,
    OPERATOR_CHART,
    OPERATOR_SCENARIOS,
    PULSE_CHART,
    PULSE_SCENARIOS,
    documents,
    validate_strictly,
    values_flags,
)
from pulse_dev.k8s_check.suite import Check, Verdict

if TYPE_CHECKING:
    from pulse_dev.k8s_check.repository import Repository

# A Deployment with a misspelt field: the strict validator must refuse it, or it proves nothing.
MISSPELT_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: must-fail}
spec:
  replicaz: 2
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec: {containers: [{name: c, image: i}]}
"""
# Values the schema must refuse: misspelt keys at each level, a bad enum, a port that is no
# number, RS256 without the JWKS to verify it, a key cache longer than ingest accepts, a Redis
# mode Pulse does not know, sentinel mode without the sentinels and the master's name.
TYPOS = (
    "services.ingest.replicaz=2",
    "services.ingestt.replicas=1",
    "defaults.probes.liveness.pat=/x",
    "aws.regoin=eu-west-1",
    "logging.level=verbose",
    "services.ws-gateway.port=http",
    "auth.jwtAlgorithm=RS256",
    "auth.apiKeyCacheSeconds=60",
    "redis.mode=replicated",
    "redis.mode=sentinel",
)


def lint(chart: str, scenario: str, name: str) -> Check:
    def run(repository: Repository) -> Verdict:
        done = repository.helm.run("lint", "--strict", chart, *values_flags(chart, scenario))
        return Verdict(passed=done.returncode == 0, output=done.stdout + done.stderr)

    return Check(name, run)


def render_and_validate(chart: str, scenario: str, name: str, *, warn: bool) -> Check:
    def run(repository: Repository) -> Verdict:
        docs = repository.renders.documents(chart, scenario)
        return validate_strictly(docs, f"{chart} ({scenario} values)", warn=warn)

    return Check(name, run)


def validator_rejects_unknown_fields(_: Repository) -> Verdict:
    verdict = validate_strictly(documents(MISSPELT_DEPLOYMENT), "must-fail.yaml")
    if verdict.passed:
        return Verdict(passed=False, output="a Deployment with spec.replicaz validated")
    return Verdict(passed=True, output=verdict.output)


def schema_refuses(typo: str) -> Check:
    def run(repository: Repository) -> Verdict:
        done = repository.helm.run("template", "pulse", PULSE_CHART, "--set", typo)
        out = done.stdout + done.stderr
        if done.returncode == 0:
            return Verdict(
                passed=False,
                output=f"helm template --set {typo} succeeded; the schema must refuse it",
            )
        if "schema" not in out:
            return Verdict(passed=False, output=f"refused, but not by the schema: {out}")
        return Verdict(passed=True, output=out)

    return Check(f"schema refuses --set {typo}", run)


def schema_accepts_override(repository: Repository) -> Verdict:
    done = repository.helm.run(
        *("template", "pulse", PULSE_CHART, "--set", "services.ingest.replicas=0"),
        *("--set-string", "services.fraud-worker.env.PULSE_X=1"),
    )
    passed = done.returncode == 0 and "name: PULSE_X" in done.stdout
    return Verdict(passed=passed, output=done.stderr or "the override renders PULSE_X")


def label(scenario: str) -> str:
    return f"({scenario} values)"


def pulse_checks() -> list[Check]:
    """helm lint, then the validator's self-test and each render validated."""
    return [
        *(lint(PULSE_CHART, s, f"helm lint --strict {label(s)}") for s in PULSE_SCENARIOS),
        Check(
            "validator self-test: an unknown field is rejected", validator_rejects_unknown_fields
        ),
        *(
            # KEDA and Prometheus Operator kinds have no schema here: monitoring.py checks them
            render_and_validate(
                PULSE_CHART,
                s,
                f"helm template | kubernetes-validate --strict {KUBE_VERSION} {label(s)}",
                warn=False,
            )
            for s in PULSE_SCENARIOS
        ),
    ]


def operator_and_crd_checks() -> list[Check]:
    prefix = "pulse-operator: helm template | kubernetes-validate"
    return [
        *(
            lint(OPERATOR_CHART, s, f"pulse-operator: helm lint --strict {label(s)}")
            for s in OPERATOR_SCENARIOS
        ),
        render_and_validate(OPERATOR_CHART, "default", f"{prefix} (default values)", warn=True),
        render_and_validate(
            OPERATOR_CHART, "clusterwide-values", f"{prefix} (clusterwide values)", warn=True
        ),
        lint(CRD_CHART, "default", "pulse-crds: helm lint --strict"),
        render_and_validate(
            CRD_CHART, "default", "pulse-crds: helm template | kubernetes-validate", warn=True
        ),
    ]


def schema_checks() -> list[Check]:
    return [
        *(schema_refuses(typo) for typo in TYPOS),
        Check("schema accepts a valid override (replicas=0, env)", schema_accepts_override),
    ]

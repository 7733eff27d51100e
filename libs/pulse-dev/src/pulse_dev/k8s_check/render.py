"""Helm runs and what they render: parsed documents, rendered once per chart and values file,
and validated against the Kubernetes JSON schemas in strict mode (unknown fields fail)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import yaml
from kubernetes_validate import utils as kubernetes_validate

from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

KUBE_VERSION = "1.34.0"
NAMESPACE = "pulse"
PULSE_CHART = "charts/pulse"
OPERATOR_CHART = "charts/pulse-operator"
CRD_CHART = "charts/pulse-crds"
# The values files each chart is linted and rendered with; "default" is the chart's own values.
PULSE_SCENARIOS = ("default", "dev-values", "eks-values")
OPERATOR_SCENARIOS = ("default", "dev-values", "eks-values", "clusterwide-values")
# The pulse chart's renders pretend the cluster serves KEDA and the Prometheus Operator (as the
# EKS values need); the monitoring checks prove the chart refuses those features without them.
SERVED_APIS = (
    "keda.sh/v1alpha1/ScaledObject",
    "keda.sh/v1alpha1/TriggerAuthentication",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
API_VERSION_FLAGS = tuple(flag for api in SERVED_APIS for flag in ("--api-versions", api))

# One Kubernetes object as parsed YAML, and how objects are looked up: (kind, name).
Document: TypeAlias = dict[str, Any]
ObjectKey: TypeAlias = tuple[str, str]


class HelmError(Exception):
    """helm exited non-zero; the message is what it printed."""


def values_flags(chart: str, scenario: str) -> list[str]:
    """``-f <chart>/ci/<scenario>.yaml``, or nothing for the chart's default values."""
    return [] if scenario == "default" else ["-f", f"{chart}/ci/{scenario}.yaml"]


def documents(text: str) -> list[Document]:
    """The non-empty documents of a multi-document YAML stream."""
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind_and_name(docs: Iterable[Document]) -> dict[ObjectKey, Document]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def labels(doc: Document) -> dict[str, str]:
    found: dict[str, str] = doc["metadata"].get("labels") or {}
    return found


@dataclass(frozen=True)
class Helm:
    """The helm binary, run from the repository root (chart paths are relative to it)."""

    binary: Path
    root: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - the helm binary scripts/k8s-tools.sh installed
            [str(self.binary), *args], cwd=self.root, capture_output=True, text=True, check=False
        )

    def output(self, *args: str) -> str:
        """What helm printed; raises HelmError (with its stderr) when it fails."""
        done = self.run(*args)
        if done.returncode != 0:
            raise HelmError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def template(self, chart: str, scenario: str, namespace: str = NAMESPACE) -> str:
        """``helm template pulse <chart>`` as the cluster would install it (namespace pulse
        unless told, Kubernetes 1.34; for the pulse chart, KEDA and the Prometheus Operator
        served)."""
        served = API_VERSION_FLAGS if chart == PULSE_CHART else ()
        return self.output(
            *("template", "pulse", chart, "--namespace", namespace),
            *("--kube-version", KUBE_VERSION, *served, *values_flags(chart, scenario)),
        )


@dataclass
class Renders:
    """Each chart rendered once per values scenario (and namespace), on first use."""

    helm: Helm
    _texts: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def text(self, chart: str, scenario: str = "default", namespace: str = NAMESPACE) -> str:
        key = (chart, scenario, namespace)
        if key not in self._texts:
            self._texts[key] = self.helm.template(chart, scenario, namespace)
        return self._texts[key]

    def documents(
        self, chart: str, scenario: str = "default", namespace: str = NAMESPACE
    ) -> list[Document]:
        return documents(self.text(chart, scenario, namespace))

    def pulse(self, scenario: str) -> list[Document]:
        return self.documents(PULSE_CHART, scenario)


def validate_strictly(docs: Iterable[Document], source: str, *, warn: bool = True) -> Verdict:
    """Every document against the Kubernetes schemas, unknown fields refused.

    A kind with no schema here (KEDA's, the Prometheus Operator's) is a warning, shown only
    when ``warn``; it never fails the check.
    """
    errors: list[str] = []
    warnings: list[str] = []
    for doc in docs:
        name = f"{doc.get('kind', '?').lower()}/{doc.get('metadata', {}).get('name', '?')}"
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(item) for item in exc.path)
            errors.append(
                f"ERROR {source} did not validate for resource {name} against version "
                f"{exc.version}: {path}: {exc.message}"
            )
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as exc:
            if warn:
                warnings.append(f"WARN {source} {exc.message}")
        except Exception as exc:
            errors.append(f"ERROR {source} could not be validated: {exc}")
    return Verdict(passed=not errors, output="\n".join(errors + warnings))

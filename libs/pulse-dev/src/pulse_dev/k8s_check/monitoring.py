"""Monitoring as the chart renders it: monitors scraping the ops port with the release label
kube-prometheus-stack selects, the dead-letter, stream-lag and error-ratio alerts, Grafana
dashboards that parse and query only metrics some service exposes, and no render at all of
monitors or KEDA objects on a cluster without their CRDs (a silent drop is worse)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from pulse_dev.k8s_check.metrics import exposed_series
from pulse_dev.k8s_check.render import PULSE_CHART
from pulse_dev.k8s_check.suite import Check, Problems, Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pulse_dev.k8s_check.chart_rules import Render
    from pulse_dev.k8s_check.render import Document
    from pulse_dev.k8s_check.repository import Repository

MONITOR_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
RELEASE_LABEL = "kube-prometheus-stack"
ALERTS = (
    "PulseDeadLetterQueueNotEmpty",
    "PulseStreamLagHigh",
    "PulseHttpErrorRatioHigh",
    "PulseCredentialsRefusedOften",
    "PulseRateLimiterUnavailable",
)
DASHBOARDS = "charts/pulse/dashboards"
DASHBOARD_SERVICES = ("ingest", "ws-gateway", "stream-processor", "fraud-worker", "notify-worker")
METRIC = re.compile(r"\bpulse_[a-z0-9_]+")


def alert_rules(docs: Iterable[Document]) -> list[dict[str, Any]]:
    return [
        r
        for d in docs
        if d["kind"] == "PrometheusRule"
        for g in d["spec"]["groups"]
        for r in g["rules"]
    ]


def alerts(docs: Iterable[Document]) -> set[str]:
    return {r["alert"] for r in alert_rules(docs)}


def dashboards(docs: Iterable[Document]) -> list[Document]:
    """The ConfigMaps Grafana's sidecar loads."""
    return [
        d
        for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]


def scrape_problems(render: Render) -> Problems:
    """Monitors carry the release label and scrape the ops port."""
    problems = Problems()
    for d in render.docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind in MONITOR_KINDS:
            problems.expect(
                d["metadata"]["labels"].get("release") == RELEASE_LABEL,
                f"{kind}/{name}: no release label",
            )
        if kind in ("ServiceMonitor", "PodMonitor"):
            eps = d["spec"].get("endpoints") or d["spec"].get("podMetricsEndpoints") or [{}]
            scraped = [e.get("port") for e in eps]
            ops = render.ops_port(name)
            problems.expect(
                scraped == [ops], f"{kind}/{name}: must scrape the ops port {ops!r}, not {scraped}"
            )
    return problems


def monitoring_problems(render: Render) -> Problems:
    problems = scrape_problems(render)
    have = alerts(render.docs)
    for want in ALERTS:
        problems.expect(want in have, f"no alert {want}")
    found = dashboards(render.docs)
    problems.expect(found, 'no ConfigMap labelled grafana_dashboard: "1"')
    for cm in found:
        for key, text in cm["data"].items():
            try:
                json.loads(text)
            except ValueError as exc:
                problems.append(
                    f"ConfigMap/{cm['metadata']['name']}: {key} is not JSON after rendering: {exc}"
                )
    return problems


def metrics_in(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def variable_problems(where: str, dash: dict[str, Any], exposed: set[str]) -> Problems:
    """``namespace`` and ``service`` variables, each variable's query on exposed series."""
    problems = Problems()
    variables = dash.get("templating", {}).get("list", [])
    names = {v["name"] for v in variables}
    problems.expect(
        {"namespace", "service"} <= names,
        f"{where}: needs namespace and service variables, has {sorted(names)}",
    )
    for v in variables:
        q = v.get("query")
        query = q["query"] if isinstance(q, dict) else q or ""
        problems += [
            f"{where}: variable {v['name']} uses {name}, which no service exposes"
            for name in sorted(metrics_in(query) - exposed)
        ]
    return problems


def dashboard_problems(where: str, dash: dict[str, Any], exposed: set[str]) -> Problems:
    """A RED row per service and a saturation row; every panel queries exposed series."""
    problems = variable_problems(where, dash, exposed)
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    for svc in DASHBOARD_SERVICES:
        problems.expect(any(r.startswith(svc) for r in rows), f"{where}: no RED row for {svc}")
    problems.expect(any("Saturation" in r for r in rows), f"{where}: no saturation row")
    for p in (p for p in dash["panels"] if p["type"] != "row"):
        for t in p.get("targets", []):
            used = metrics_in(t["expr"])
            problems.expect(used, f"{where}: panel {p['title']!r} queries no pulse_ metric")
            problems += [
                f"{where}: panel {p['title']!r} uses {name}, which no service exposes"
                for name in sorted(used - exposed)
            ]
    return problems


def alert_metric_problems(docs: Iterable[Document], exposed: set[str]) -> list[str]:
    return [
        f"alert {r.get('alert')}: uses {name}, which no service exposes"
        for r in alert_rules(docs)
        for name in sorted(metrics_in(r["expr"]) - exposed)
    ]


def dashboards_use_real_metrics(repository: Repository) -> Verdict:
    exposed = exposed_series(repository.root)
    problems = Problems()
    for path in sorted((repository.root / DASHBOARDS).glob("*.json")):
        where = f"{DASHBOARDS}/{path.name}"
        problems += dashboard_problems(where, json.loads(path.read_text()), exposed)
    problems += alert_metric_problems(repository.renders.pulse("eks-values"), exposed)
    return Verdict.of(
        problems, f"dashboards and alerts use only the {len(exposed)} exposed pulse_ series"
    )


def refuses_without_crds(name: str, setting: str, api: str) -> Check:
    """The render with ``setting`` must fail, naming ``api`` as what the cluster lacks."""

    def run(repository: Repository) -> Verdict:
        done = repository.helm.run(
            "template",
            "pulse",
            PULSE_CHART,
            "-f",
            f"{PULSE_CHART}/ci/dev-values.yaml",
            "--set",
            setting,
        )
        out = done.stdout + done.stderr
        if done.returncode == 0:
            return Verdict(
                passed=False, output=f"rendered {setting} without the {api} CRD; it must fail"
            )
        if f"does not serve {api}" not in out:
            return Verdict(passed=False, output=f"failed, but not for the missing CRD: {out}")
        return Verdict(passed=True, output=out)

    return Check(name, run)


def crd_gate_checks() -> list[Check]:
    return [
        refuses_without_crds(
            "monitoring.enabled without Prometheus Operator CRDs fails the render",
            "monitoring.enabled=true",
            "monitoring.coreos.com/v1",
        ),
        refuses_without_crds(
            "keda.enabled without KEDA's CRDs fails the render",
            "services.fraud-worker.keda.enabled=true",
            "keda.sh/v1alpha1/ScaledObject",
        ),
    ]

"""pulse_dev.k8s_check.monitoring: dashboards and alerts query only exposed series."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pulse_dev.k8s_check.monitoring import alert_metric_problems, dashboard_problems, metrics_in

DASHBOARD = Path(__file__).resolve().parents[3] / "charts/pulse/dashboards/pulse-overview.json"


@pytest.fixture
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queried(dash: dict[str, Any]) -> set[str]:
    """Every pulse_ series the dashboard's panels and variables use."""
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [json.dumps(v.get("query")) for v in dash["templating"]["list"]]
    return {name for e in exprs for name in metrics_in(e)}


def test_a_dashboard_on_exposed_series_passes(dashboard: dict[str, Any]) -> None:
    assert dashboard_problems("d.json", dashboard, queried(dashboard)) == []


def test_a_panel_on_a_series_no_service_exposes_fails(dashboard: dict[str, Any]) -> None:
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in broken["panels"] if p["type"] != "row")
    panel["targets"][0]["expr"] = "sum(rate(pulse_made_up_total[5m]))"
    problems = dashboard_problems("d.json", broken, queried(dashboard))
    assert problems == [
        f"d.json: panel {panel['title']!r} uses pulse_made_up_total, which no service exposes"
    ]


def test_a_dashboard_without_a_service_row_or_variable_fails(dashboard: dict[str, Any]) -> None:
    broken = copy.deepcopy(dashboard)
    broken["panels"] = [p for p in broken["panels"] if not p["title"].startswith("ingest")]
    broken["templating"]["list"] = [
        v for v in broken["templating"]["list"] if v["name"] != "service"
    ]
    problems = dashboard_problems("d.json", broken, queried(dashboard))
    assert "d.json: no RED row for ingest" in problems
    assert any(p.startswith("d.json: needs namespace and service variables") for p in problems)


def test_an_alert_on_a_missing_series_fails() -> None:
    rule = {
        "kind": "PrometheusRule",
        "metadata": {"name": "pulse"},
        "spec": {"groups": [{"rules": [{"alert": "X", "expr": "pulse_dlq_depth > 0"}]}]},
    }
    assert alert_metric_problems([rule], {"pulse_dlq_depth"}) == []
    assert alert_metric_problems([rule], set()) == [
        "alert X: uses pulse_dlq_depth, which no service exposes"
    ]

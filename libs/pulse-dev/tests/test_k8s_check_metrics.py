"""pulse_dev.k8s_check.metrics: the metric naming rules, on a registry of its own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from pulse_dev.k8s_check.metrics import REQUIRED, declared, metric_problems, series_names


def test_metrics_that_break_the_rules_fail() -> None:
    registry = CollectorRegistry()
    Counter("requests", "no prefix", registry=registry)
    Histogram("pulse_request_duration_ms", "not base units", registry=registry)
    Gauge("pulse_publish_latency_seconds", "latency as a gauge", registry=registry)
    Gauge("pulse_queue_age", "a time without its unit", registry=registry)
    Counter("pulse_payments", "an id label", ["payment_id"], registry=registry)
    problems = metric_problems(declared(registry))
    for problem in (
        "requests: not prefixed pulse_",
        "pulse_request_duration_ms: not in base units (seconds, bytes, ratios)",
        "pulse_publish_latency_seconds: latency is a histogram, not a gauge",
        "pulse_queue_age: a time must be in seconds (…_seconds)",
        "pulse_payments: unbounded label(s) ['payment_id']",
        "no pulse_build_info",
        "pulse_stage_processed (a metric every deployment needs) is not registered",
    ):
        assert problem in problems


def test_the_metrics_kubernetes_md_names_pass() -> None:
    registry = CollectorRegistry()
    Info("pulse_build", "build", registry=registry)
    for name in REQUIRED:
        if name.endswith("_seconds") and "timestamp" not in name:
            Histogram(name, "latency", ["stage", "outcome"], registry=registry)
        elif name.endswith(("_in_progress", "_connections", "_timestamp_seconds")):
            Gauge(name, "level", ["stage"], registry=registry)
        else:
            Counter(name, "count", ["stage", "outcome"], registry=registry)
    assert metric_problems(declared(registry)) == []
    series = series_names(registry)
    assert {
        "pulse_build_info",
        "pulse_stage_processed_total",
        "pulse_message_age_seconds_bucket",
    } <= series

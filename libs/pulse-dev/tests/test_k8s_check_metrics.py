"""pulse_dev.k8s_check.metrics: the metric naming rules, on a registry of its own."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from pulse_dev.k8s_check.metrics import (
    REQUIRED,
    created_problems,
    created_series,
    declared,
    metric_problems,
    series_names,
)


@contextmanager
def created_metrics(*, enabled: bool) -> Iterator[None]:
    """prometheus_client's process-wide switch for the *_created series, restored after."""
    before = prometheus_client.metrics._use_created  # no public getter
    prometheus_client.metrics._use_created = enabled
    try:
        yield
    finally:
        prometheus_client.metrics._use_created = before


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


def test_a_histogram_named_like_its_own_series_fails() -> None:
    """pulse_sqs_message_receive_count, as the consumer named it: its series read
    pulse_sqs_message_receive_count_count."""
    registry = CollectorRegistry()
    Histogram("pulse_sqs_message_receive_count", "receives", ["queue"], registry=registry)
    Histogram("pulse_sqs_message_receives", "receives", ["queue"], registry=registry)
    problems = metric_problems(declared(registry))
    assert (
        "pulse_sqs_message_receive_count: a histogram's series would read "
        "pulse_sqs_message_receive_count_count; name what it measures (…_receives, not "
        "…_receive_count)"
    ) in problems
    assert not [p for p in problems if p.startswith("pulse_sqs_message_receives:")]


def test_created_series_fail_until_they_are_turned_off() -> None:
    registry = CollectorRegistry()
    Counter("pulse_payments_created", "payments", registry=registry)
    Histogram("pulse_message_age_seconds", "age", registry=registry)
    with created_metrics(enabled=True):
        assert created_series(registry) == [
            "pulse_message_age_seconds_created",
            "pulse_payments_created_created",
        ]
        (problem,) = created_problems(registry)
        assert problem.startswith("2 *_created series in a scrape")
    with created_metrics(enabled=False):
        assert created_problems(registry) == []


def test_importing_pulse_metrics_turns_the_created_series_off() -> None:
    """What every service imports before it serves: a fresh process exposes *_created series
    until pulse.metrics is imported, and none after."""
    script = (
        "import prometheus_client as p\n"
        "c = p.Counter('pulse_probe', 'probe')\n"
        "before = 'pulse_probe_created' in p.generate_latest().decode()\n"
        "import pulse.metrics\n"
        "after = 'pulse_probe_created' in p.generate_latest().decode()\n"
        "print(before, after)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_DISABLE_CREATED_SERIES"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["True", "False"]

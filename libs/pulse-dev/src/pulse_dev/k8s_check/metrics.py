"""Every Prometheus metric the code defines, registered by importing every module of
libs/pulse and the services, and held to the naming rules of docs/design.md (Metrics): the
``pulse_`` prefix, base units, latency as histograms, bounded labels, the metrics every
stage must have; no name whose series collide with the suffixes Prometheus adds (a histogram
``…_count`` reads ``…_count_count``), and no ``*_created`` series in a scrape."""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY

from pulse_dev.k8s_check.suite import Problems, Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from prometheus_client.registry import CollectorRegistry

    from pulse_dev.k8s_check.repository import Repository

# The series each metric type exposes, by suffix.
SUFFIXES = {
    "counter": ["_total"],
    "histogram": ["_bucket", "_count", "_sum"],
    "summary": ["_count", "_sum"],
    "info": ["_info"],
}
# ids of payments, users, connections, events, traces or endpoints make unbounded series
ID_LABELS = {
    "payment_id", "event_id", "trace_id", "account_id", "user", "user_id", "sub",
    "connection_id", "endpoint_id", "merchant_id", "message_id", "id", "url", "path", "channel",
}  # fmt: skip
NOT_BASE_UNIT = re.compile(
    r"_(milli|micro|nano)?(seconds_ms|ms|us|ns|milliseconds|microseconds|nanoseconds|minutes"
    r"|hours|days|kb|mb|gb|kilobytes|megabytes|percent)(_|$)"
)
A_TIME = re.compile(r"(duration|latency|_age|_time)")
A_LATENCY = re.compile(r"(duration|latency)")
# A histogram's or summary's own series end in these; a name ending so reads …_count_count.
SERIES_SUFFIXES = ("_count", "_sum", "_bucket", "_total", "_created")
# The Info behind pulse_build_info, and what else the naming rules name (counters without their
# _total, as registered).
BUILD_INFO = "pulse_build"
REQUIRED = (
    "pulse_http_request_duration_seconds",
    "pulse_message_processing_duration_seconds",
    "pulse_message_age_seconds",
    "pulse_stage_received",
    "pulse_stage_in_progress",
    "pulse_stage_processed",
    "pulse_stage_last_processed_timestamp_seconds",
    "pulse_stream_iterator_age_seconds",
    "pulse_ws_connections",
    "pulse_ws_messages_sent",
)


def load_every_metric(root: Path) -> CollectorRegistry:
    """Import every module of libs/pulse and of each service under ``root`` (but their
    ``__main__``), so every metric they define is in prometheus_client's default registry,
    which is returned."""
    packages = [("pulse", root / "libs/pulse/src/pulse")] + [
        (d.name, d)
        for s in sorted((root / "services").iterdir())
        if (s / "src").is_dir()
        for d in (s / "src").iterdir()
        if (d / "__init__.py").exists()
    ]
    for name, path in packages:
        importlib.import_module(name)
        for module in pkgutil.walk_packages([str(path)], prefix=f"{name}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    return REGISTRY


def series_names(registry: CollectorRegistry) -> set[str]:
    """The ``pulse_`` series a scrape can show: counters' ``_total``, histograms' buckets…"""
    return {
        metric.name + suffix
        for metric in registry.collect()
        if metric.name.startswith("pulse_")
        for suffix in SUFFIXES.get(metric.type, [""])
    }


def exposed_series(root: Path) -> set[str]:
    return series_names(load_every_metric(root))


@dataclass(frozen=True)
class Declared:
    """A metric as the code declares it."""

    name: str
    kind: str
    labels: frozenset[str]


def declared(registry: CollectorRegistry) -> list[Declared]:
    """Every metric object in the registry, but the process, platform and GC collectors
    prometheus_client registers itself (they have no ``_name``)."""
    # prometheus_client keeps no public list of its collectors, nor of a metric's label names
    collectors = list(registry._collector_to_names)  # noqa: SLF001
    return [
        Declared(name, str(getattr(c, "_type", "")), frozenset(getattr(c, "_labelnames", ())))
        for c in collectors
        if (name := getattr(c, "_name", None)) is not None
    ]


def naming_problems(metric: Declared) -> list[str]:
    name, kind = metric.name, metric.kind
    problems = Problems()
    problems.expect(name.startswith("pulse_"), f"{name}: not prefixed pulse_")
    problems.expect(
        not NOT_BASE_UNIT.search(name), f"{name}: not in base units (seconds, bytes, ratios)"
    )
    if A_TIME.search(name) and kind in ("histogram", "gauge", "summary"):
        problems.expect(
            name.endswith(("_seconds", "_timestamp_seconds")),
            f"{name}: a time must be in seconds (…_seconds)",
        )
    if A_LATENCY.search(name):
        problems.expect(kind == "histogram", f"{name}: latency is a histogram, not a {kind}")
    if unbounded := metric.labels & ID_LABELS:
        problems.append(f"{name}: unbounded label(s) {sorted(unbounded)}")
    if kind in ("histogram", "summary") and name.endswith(SERIES_SUFFIXES):
        problems.append(
            f"{name}: a {kind}'s series would read {name}_count; name what it measures "
            f"(…_receives, not …_receive_count)"
        )
    return problems


def created_series(registry: CollectorRegistry) -> list[str]:
    """The ``*_created`` series a scrape of ``registry`` would show, one per metric."""
    return sorted(
        {
            f"{metric.name}_created"
            for metric in registry.collect()
            if metric.name.startswith("pulse_")
            for sample in metric.samples
            if sample.name == f"{metric.name}_created"
        }
    )


def created_problems(registry: CollectorRegistry) -> list[str]:
    if not (created := created_series(registry)):
        return []
    call = "prometheus_client.disable_created_metrics() where pulse.metrics sets up"
    return [f"{len(created)} *_created series in a scrape (e.g. {created[0]}): call {call}"]


def metric_problems(metrics: Iterable[Declared]) -> list[str]:
    metrics = list(metrics)
    names = {m.name for m in metrics}
    problems = [p for m in metrics for p in naming_problems(m)]
    if BUILD_INFO not in names:
        problems.append("no pulse_build_info")
    problems += [
        f"{want} (a metric every deployment needs) is not registered"
        for want in REQUIRED
        if want not in names
    ]
    return problems


def follow_the_rules(repository: Repository) -> Verdict:
    registry = load_every_metric(repository.root)
    metrics = declared(registry)
    return Verdict.of(
        metric_problems(metrics) + created_problems(registry),
        f"{len(metrics)} pulse_ metrics: prefix, base units, latency histograms, bounded labels",
    )

"""What a Pulse service's ``/metrics`` says, for the benchmarks: a reading of every sample,
one sample of it, and the quantiles of what a histogram observed between two readings.

A histogram's quantile is estimated as Prometheus' ``histogram_quantile`` does: linearly
inside the bucket the rank falls in, so it is only as fine as the buckets around it.
"""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING, Final, TypeAlias

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MetricsReading", "histogram_quantile", "read_metrics", "sample"]

_TIMEOUT_S: Final = 5.0

# One sample per (name, sorted label pairs).
MetricsReading: TypeAlias = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def read_metrics(url: str) -> MetricsReading:
    """Every sample ``url`` (a ``/metrics`` address) serves now."""
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 - a local http address
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(reading: MetricsReading, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels`` (0 when there is none)."""
    return reading.get((name, tuple(sorted(labels.items()))), 0.0)


def _bucket_counts(
    before: MetricsReading, after: MetricsReading, name: str, labels: Mapping[str, str]
) -> list[tuple[float, float]]:
    """(upper bound, cumulative count observed between the readings) of each bucket."""
    counts = []
    for (sample_name, pairs), value in after.items():
        found = dict(pairs)
        bound = found.pop("le", None)
        if sample_name != f"{name}_bucket" or bound is None or found != labels:
            continue
        counts.append((float(bound), value - before.get((sample_name, pairs), 0.0)))
    return sorted(counts)


def histogram_quantile(
    before: MetricsReading,
    after: MetricsReading,
    q: float,
    name: str,
    labels: Mapping[str, str] | None = None,
) -> tuple[float, int] | None:
    """The ``q`` quantile (0..1) of what histogram ``name`` (with ``labels``) observed
    between ``before`` and ``after``, and how many observations: None if it observed none."""
    buckets = _bucket_counts(before, after, name, labels or {})
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower, int(total)  # above the largest bound: all that can be said
            inside = cumulative - below
            share = (rank - below) / inside if inside else 1.0
            return lower + (upper - lower) * share, int(total)
        lower, below = upper, cumulative
    return lower, int(total)

"""Ingest's own Prometheus metrics (bounded labels only)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

__all__ = ["PAYMENTS_CREATED", "PAYMENTS_REJECTED", "REJECTION_REASONS"]

PAYMENTS_CREATED: Final = Counter(
    "pulse_payments_created_total",
    "POST /v1/payments that reached DynamoDB, by outcome (created, replayed, conflict)",
    ["outcome"],
)
for _outcome in ("created", "replayed", "conflict"):
    PAYMENTS_CREATED.labels(_outcome)

# Problem types a create request can be refused with before anything is written.
REJECTION_REASONS: Final = frozenset(
    {
        "validation",
        "malformed-json",
        "unsupported-media-type",
        "payload-too-large",
        "invalid-idempotency-key",
    }
)
PAYMENTS_REJECTED: Final = Counter(
    "pulse_payments_rejected_total",
    "POST /v1/payments refused before any write, by problem type",
    ["reason"],
)
for _reason in REJECTION_REASONS:
    PAYMENTS_REJECTED.labels(_reason)

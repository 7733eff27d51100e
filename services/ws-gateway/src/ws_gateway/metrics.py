"""The gateway's Prometheus metrics (named by the rules of docs/design.md, "Metrics")."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AUTH_FAILURES",
    "CLIENT_CLOSES",
    "CONNECTIONS",
    "CONNECTIONS_REFUSED",
    "CONNECTION_DURATION",
    "DURABLE_READ_DURATION",
    "DURABLE_RECOVERIES",
    "GAP_FILLS",
    "MESSAGES_SENT",
    "RATE_LIMITED_OPS",
    "REDIS_CHANNELS",
    "REDIS_RESUBSCRIPTIONS",
    "SLOW_CONSUMER_CLOSES",
    "SUBSCRIPTIONS",
    "TOKEN_REFRESHES",
]

AUTH_REASONS: Final = ("missing", "invalid", "expired")

CONNECTIONS = Gauge("pulse_ws_connections", "Open WebSocket connections")
MESSAGES_SENT = Counter("pulse_ws_messages_sent_total", "Frames written to WebSocket clients")
CONNECTIONS_REFUSED = Counter(
    "pulse_ws_connections_refused_total",
    "Connections refused at the handshake by the connection limits",
    ["reason"],
)
SUBSCRIPTIONS = Gauge("pulse_ws_subscriptions", "Channel subscriptions of open connections")
REDIS_CHANNELS = Gauge(
    "pulse_ws_redis_channels", "Redis pub/sub channels this process is subscribed to"
)
RESUBSCRIBE_REASONS: Final = ("reconnect", "unsubscribed", "moved", "node_lost", "refused")
REDIS_RESUBSCRIPTIONS = Counter(
    "pulse_ws_redis_resubscriptions_total",
    "Live channels subscribed again after Redis dropped their subscription: the connection "
    "came back, Redis unsubscribed them (slot moved, node demoted), a MOVED or other error "
    "reply, a cluster node lost",
    ["reason"],
)
AUTH_FAILURES = Counter(
    "pulse_ws_auth_failures_total", "Connections refused at the handshake", ["reason"]
)
SLOW_CONSUMER_CLOSES = Counter(
    "pulse_ws_slow_consumer_closes_total", "Connections closed because their send queue was full"
)
CONNECTION_DURATION = Histogram(
    "pulse_ws_connection_duration_seconds",
    "How long WebSocket connections stayed open",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)

GAP_FILLS = Counter(
    "pulse_ws_gap_fills_total",
    "Channels caught up from history after the pub/sub connection came back",
    ["outcome"],
)
DURABLE_RECOVERIES = Counter(
    "pulse_ws_durable_recoveries_total",
    "Account channel offsets older than the Redis history, by outcome: recovered from the "
    "audit table, refused (recovered:false) or failed (the read failed: recovered:false)",
    ["outcome"],
)
DURABLE_READ_DURATION = Histogram(
    "pulse_ws_durable_read_duration_seconds",
    "Reads of an account's audit rows in channel order for a recovery (one query, every page)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED_OPS = Counter(
    "pulse_ws_rate_limited_ops_total", "Client operations refused by the per-connection limit"
)
TOKEN_REFRESHES = Counter("pulse_ws_token_refreshes_total", "In-band token refreshes", ["outcome"])
CLIENT_CLOSES = Counter(
    "pulse_ws_closes_total", "Connections closed by the gateway, by reason", ["reason"]
)

for _outcome in ("filled", "epoch_changed"):
    GAP_FILLS.labels(_outcome)
for _outcome in ("recovered", "refused", "failed"):
    DURABLE_RECOVERIES.labels(_outcome)
for _reason in RESUBSCRIBE_REASONS:
    REDIS_RESUBSCRIPTIONS.labels(_reason)
for _outcome in ("ok", "refused"):
    TOKEN_REFRESHES.labels(_outcome)
for _reason in AUTH_REASONS:
    AUTH_FAILURES.labels(_reason)
for _reason in ("capacity", "per_user"):
    CONNECTIONS_REFUSED.labels(_reason)

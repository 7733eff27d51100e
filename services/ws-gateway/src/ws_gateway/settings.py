"""The gateway's settings: the credential settings plus the limits of one WebSocket connection."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from pulse.settings import CredentialSettings, load_settings

__all__ = ["GatewaySettings", "load_gateway_settings"]


class GatewaySettings(CredentialSettings):
    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    service_name: str = "ws-gateway"
    http_port: int = Field(default=8090, ge=0, le=65535)

    # Largest client frame accepted; a bigger one closes the connection with 1009.
    max_message_bytes: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024)
    # Frames waiting to be written to one client; a full queue closes it with 4008.
    send_queue_size: int = Field(default=1024, ge=1, le=1_000_000)
    max_subscriptions: int = Field(default=100, ge=1, le=10_000)
    # Connections (WebSocket and SSE) this process holds: beyond it a new one gets 503 with
    # Retry-After, so a load balancer or the client's backoff moves it to another process.
    max_connections: int = Field(default=20_000, ge=1, le=1_000_000)
    # Connections one token subject (user or account) may hold on this process: beyond it
    # 429. One user's runaway tabs or a leaked token cannot take the process's capacity.
    max_connections_per_user: int = Field(default=50, ge=1, le=1_000_000)
    # History entries read per XRANGE call while replaying after ``since``.
    replay_batch_size: int = Field(default=500, ge=1, le=10_000)
    # An account channel's events older than its Redis history are read from the audit
    # table, at most this many per subscribe (beyond: recovered:false); 0 turns it off.
    durable_recovery_limit: int = Field(default=1000, ge=0, le=100_000)
    # How old the epoch after an earlier one must be before that earlier epoch's audit rows
    # are counted on as complete (an audit row is written just after its Redis append).
    durable_settle_seconds: float = Field(default=5.0, ge=0, le=300)
    # A quiet connection gets a protocol ping; one that stays silent for another interval
    # after it is dropped.
    ping_interval_seconds: float = Field(default=20.0, gt=0, le=600)
    close_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Threads writing a big fan-out's frames (the event loop's among them): 0 is one per CPU
    # the process may use (its affinity and cgroup CPU limit), at most 8; 1 writes them all
    # from the event loop.
    fanout_threads: int = Field(default=0, ge=0, le=64)
    # permessage-deflate costs CPU per client per message; off by default for fan-out.
    ws_compression: bool = False

    # Client operations (subscribe, ping, refresh, …) per connection: a token bucket.
    client_ops_per_second: float = Field(default=20.0, gt=0, le=10_000)
    client_ops_burst: int = Field(default=50, ge=1, le=100_000)

    # Ephemeral client publishes (typing indicators…) per connection: a token bucket.
    publish_per_second: float = Field(default=5.0, gt=0, le=10_000)
    publish_burst: int = Field(default=10, ge=1, le=100_000)

    # An open connection whose token expired gets this long to send {"op":"refresh"}.
    token_grace_seconds: float = Field(default=10.0, ge=0, le=3600)

    # A connection's presence entry lives this long unless its gateway renews it (every
    # third of it); a dead gateway's users leave within about this time.
    presence_lease_seconds: float = Field(default=30.0, ge=0.5, le=3600)

    # Every this many seconds what survived a garbage collection is frozen out of later ones
    # (so a full collection walks what is new, not every connection: ~150 ms at 10,000
    # connections otherwise); 0 leaves the collector as CPython runs it.
    gc_freeze_interval_seconds: float = Field(default=1.0, ge=0, le=3600)

    # The ingest base URL the console's review desk calls from the browser (ingest must
    # allow the gateway's origin in PULSE_CORS_ORIGINS); empty: the desk is not configured.
    console_ingest_url: str = ""

    @field_validator("console_ingest_url")
    @classmethod
    def _an_http_base_url(cls, url: str) -> str:
        url = url.strip().rstrip("/")
        if not url:
            return ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL (or empty)")
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL without a query or fragment")
        return url


def load_gateway_settings() -> GatewaySettings:
    return load_settings(GatewaySettings)

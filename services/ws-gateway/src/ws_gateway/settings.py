"""The gateway's settings: PulseSettings plus the limits of one WebSocket connection."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pulse.settings import PulseSettings, load_settings

__all__ = ["GatewaySettings", "load_gateway_settings"]


class GatewaySettings(PulseSettings):
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
    # History entries read per XRANGE call while replaying after ``since``.
    replay_batch_size: int = Field(default=500, ge=1, le=10_000)
    ping_interval_seconds: float = Field(default=20.0, gt=0, le=600)
    ping_timeout_seconds: float = Field(default=20.0, gt=0, le=600)
    close_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # permessage-deflate costs CPU per client per message; off by default for fan-out.
    ws_compression: bool = False


def load_gateway_settings() -> GatewaySettings:
    return load_settings(GatewaySettings)

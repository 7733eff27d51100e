"""Typed settings, parsed once from the environment at start-up.

Every service subclasses :class:`PulseSettings`. Service settings are prefixed ``PULSE_``;
the AWS endpoint is the standard ``AWS_ENDPOINT_URL`` and Redis is ``REDIS_URL``. A bad
value stops the process at once with a message naming the variable (:func:`load_settings`).
"""

from __future__ import annotations

from typing import Literal, Self, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pulse.errors import ConfigurationError

__all__ = [
    "DEV_JWT_SECRET",
    "CredentialSettings",
    "PulseSettings",
    "ResourceNames",
    "load_settings",
]

DEV_JWT_SECRET = "pulse-dev-secret-not-for-production-use"  # noqa: S105 - the documented development default


class ResourceNames:
    """AWS resource names derived from one prefix, so two stacks can share an account."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.payments_table = f"{prefix}payments"
        self.events_table = f"{prefix}events"
        self.leases_table = f"{prefix}leases"
        self.topic = f"{prefix}payment-events"
        self.fraud_queue = f"{prefix}fraud"
        self.fraud_dlq = f"{prefix}fraud-dlq"
        self.notify_queue = f"{prefix}notify"
        self.notify_dlq = f"{prefix}notify-dlq"
        self.api_keys_table = f"{prefix}api-keys"


class PulseSettings(BaseSettings):
    """Settings every Pulse process shares."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    service_name: str = "pulse"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "PULSE_REDIS_URL"),
    )
    # No braces: keys put their hash tag right after the prefix (``pulse:{ch:payments}:…``),
    # and Redis Cluster hashes the first ``{…}`` of a key.
    redis_prefix: str = Field(default="pulse:", min_length=1, max_length=64, pattern=r"^[^{}]*$")
    # PULSE_REDIS_WAIT_REPLICAS: after the writes that must survive a failover (channel
    # appends and their guards, counters, idempotency completions, fraud activity), WAIT
    # until this many replicas acknowledged them (1 with a replica per master: cluster,
    # sentinel). 0: no WAIT. Fewer in PULSE_REDIS_WAIT_TIMEOUT_MS: a retryable failure.
    redis_wait_replicas: int = Field(default=0, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)

    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "PULSE_AWS_ENDPOINT_URL")
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "PULSE_AWS_REGION"),
    )
    resource_prefix: str = Field(default="pulse-", pattern=r"^[A-Za-z0-9_.-]{0,40}$")

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # PULSE_OPS_PORT: an internal port for /metrics, /healthz and /readyz, apart from the
    # public API (a Kubernetes NetworkPolicy can then open it to Prometheus and the kubelet
    # only). Unset: the ops routes share PULSE_HTTP_PORT.
    ops_port: int | None = Field(default=None, ge=1, le=65535)
    shutdown_grace_seconds: float = Field(default=20.0, gt=0, le=600)

    # HS256 secret for connection tokens (gateway verifies, ``pulse token`` issues).
    jwt_secret: SecretStr = Field(default=SecretStr(DEV_JWT_SECRET), min_length=32)

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(self.resource_prefix)

    @property
    def separate_ops_port(self) -> int | None:
        """The ops port when it is set and is not the API's own port; else None."""
        if self.ops_port is None or self.ops_port == self.http_port:
            return None
        return self.ops_port


class CredentialSettings(PulseSettings):
    """How a service verifies credentials: the settings ingest and the gateway share."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    # JWT: the one accepted algorithm; RS256/ES256 take their keys from a JWKS URL.
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwks_url: str | None = None
    jwks_cache_seconds: int = Field(default=300, ge=1, le=86_400)
    # When set, a token must carry this "iss" / have this "aud" (an identity provider signs
    # tokens for many applications: these keep another's tokens out).
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    @model_validator(mode="after")
    def _jwks_for_asymmetric(self) -> Self:
        if self.jwt_algorithm != "HS256" and not self.jwks_url:
            raise ValueError(f"PULSE_JWKS_URL is required with {self.jwt_algorithm}")
        return self


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Build ``cls`` from the environment; raise :class:`ConfigurationError` naming bad vars."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = "; ".join(
            f"{prefix}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from exc

"""Typed settings, parsed once from the environment at start-up.

Every service subclasses :class:`PulseSettings`. Service settings are prefixed ``PULSE_``;
the AWS endpoint is the standard ``AWS_ENDPOINT_URL`` and Redis is ``REDIS_URL``. A bad
value stops the process at once with a message naming the variable (:func:`load_settings`).

Redis runs in one of three modes (``PULSE_REDIS_MODE``), each with TLS (``rediss://``) and
AUTH or an ACL user in the URLs:

- ``standalone``: ``REDIS_URL`` is the server.
- ``cluster``: ``REDIS_URL`` is any node of the cluster; the client learns the rest.
- ``sentinel``: the sentinels of ``PULSE_REDIS_SENTINELS`` name the master of
  ``PULSE_REDIS_MASTER_NAME``; ``REDIS_URL`` gives the master's scheme (``rediss://`` for
  TLS), user, password and database, and its host is not used.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AliasChoices,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pulse.errors import ConfigurationError
from pulse.history_limits import HistoryLimits

__all__ = [
    "DEV_JWT_SECRET",
    "CredentialSettings",
    "PulseSettings",
    "ResourceNames",
    "SettingsT",
    "comma_separated",
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


def comma_separated(value: Any) -> Any:
    """A setting's comma-separated text as a tuple, blank parts dropped (a ``before``
    validator of a ``NoDecode`` tuple field); other values as they are."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


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
    redis_prefix: str = Field(default="pulse:", min_length=1, max_length=64)
    # PULSE_REDIS_WAIT_REPLICAS: after the writes that must survive a failover (channel
    # appends and their guards, counters, idempotency completions, fraud activity), WAIT
    # until this many replicas acknowledged them (1 with a replica per master: cluster,
    # sentinel). 0: no WAIT. Fewer in PULSE_REDIS_WAIT_TIMEOUT_MS: a retryable failure.
    redis_wait_replicas: int = Field(default=0, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    # PULSE_CHANNEL_GUARD_TTL_SECONDS: how long a channel append's once-per-event guards
    # live. A replay of an event older than this (a dead-letter queue redriven later, a stream
    # replayed from an old checkpoint) would append it again. The guards are most of Redis's
    # memory at high rates: see docs/scaling.md.
    channel_guard_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # PULSE_HISTORY: per kind of channel, how many entries its history keeps and how long
    # an idle channel's keys live (a JSON object; pulse.history_limits). A channel's guards
    # live no longer than the channel: the shorter of this lifetime and the guard TTL.
    history: Annotated[HistoryLimits, NoDecode] = Field(default_factory=HistoryLimits)
    redis_mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    # Comma-separated redis:// or rediss:// URLs (port 26379 unless given), all one scheme.
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = ()
    redis_master_name: str | None = Field(default=None, min_length=1)
    # AUTH to the sentinels (the master's password is in REDIS_URL).
    redis_sentinel_password: SecretStr | None = None
    # The CA that signed the Redis servers' (and sentinels') certificates, for rediss://;
    # unset: the system's trusted CAs (enough for ElastiCache's in-transit encryption).
    redis_tls_ca_file: FilePath | None = None

    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "PULSE_AWS_ENDPOINT_URL")
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "PULSE_AWS_REGION"),
    )
    resource_prefix: str = Field(default="pulse-", max_length=40)

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # PULSE_OPS_PORT: an internal port for /metrics, /healthz and /readyz, apart from the
    # public API (a Kubernetes NetworkPolicy can then open it to Prometheus and the kubelet
    # only). Unset: the ops routes share PULSE_HTTP_PORT.
    ops_port: int | None = Field(default=None, ge=1, le=65535)
    shutdown_grace_seconds: float = Field(default=20.0, gt=0, le=600)
    # PULSE_HEALTH_INTERVAL_SECONDS: how often a service that measures the pipeline (stream
    # processor, workers, gateway) appends its ``pulse.health`` event to channel ``health``
    # and logs its one-line summary (pulse.health). 0 turns the reports off.
    health_interval_seconds: float = Field(default=5.0, ge=0, le=3600)

    # HS256 secret for connection tokens (gateway verifies, ``pulse token`` issues).
    jwt_secret: SecretStr = Field(default=SecretStr(DEV_JWT_SECRET), min_length=32)

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in _REDIS_SCHEMES or not (urlsplit(url).hostname or scheme == "unix"):
            # The URL may hold a password: only its scheme goes into the message.
            raise ValueError(
                f"must be a redis://, rediss:// or unix:// URL (got {scheme or '?'}://…)"
            )
        return url

    @field_validator("redis_prefix")
    @classmethod
    def _no_braces(cls, prefix: str) -> str:
        if "{" in prefix or "}" in prefix:
            raise ValueError("must not contain { or } (keys put their hash tag after it)")
        return prefix

    @field_validator("resource_prefix")
    @classmethod
    def _a_resource_name_part(cls, prefix: str) -> str:
        if not all(c.isascii() and (c.isalnum() or c in "_.-") for c in prefix):
            raise ValueError("may contain only letters, digits, '_', '.' and '-'")
        return prefix

    _sentinel_list = field_validator("redis_sentinels", mode="before")(comma_separated)

    @field_validator("history", mode="before")
    @classmethod
    def _history_json(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not JSON ({exc})") from None
            if not isinstance(value, dict):
                # A ValueError: pydantic reports it as this variable's error (not a TypeError).
                raise ValueError('must be a JSON object, e.g. {"account": {"size": 100, …}}')  # noqa: TRY004
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            _sentinel_address(url)
        if len({urlsplit(url).scheme for url in urls}) > 1:
            raise ValueError("mixes redis:// and rediss:// URLs: the sentinels share one scheme")
        return urls

    @model_validator(mode="after")
    def _redis_topology(self) -> Self:
        mode = self.redis_mode
        if mode == "sentinel" and not self.redis_sentinels:
            raise ValueError("PULSE_REDIS_SENTINELS is required with PULSE_REDIS_MODE=sentinel")
        if mode == "sentinel" and not self.redis_master_name:
            raise ValueError("PULSE_REDIS_MASTER_NAME is required with PULSE_REDIS_MODE=sentinel")
        url = urlsplit(self.redis_url)
        if mode != "standalone" and url.scheme == "unix":
            raise ValueError(f"REDIS_URL must be redis:// or rediss:// in {mode} mode")
        if mode == "cluster" and url.path.strip("/") not in {"", "0"}:
            raise ValueError("REDIS_URL cannot name a database in cluster mode (only 0)")
        return self

    @property
    def redis_tls(self) -> bool:
        """Whether the connections to Redis (the master, in sentinel mode) use TLS."""
        return urlsplit(self.redis_url).scheme == "rediss"

    @property
    def redis_sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels' hosts and ports."""
        return [_sentinel_address(url) for url in self.redis_sentinels]

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(self.resource_prefix)

    @property
    def separate_ops_port(self) -> int | None:
        """The ops port when it is set and is not the API's own port; else None."""
        if self.ops_port is None or self.ops_port == self.http_port:
            return None
        return self.ops_port


_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def _sentinel_address(url: str) -> tuple[str, int]:
    """The host and port of a sentinel's ``redis://`` or ``rediss://`` URL (port 26379 if not
    given); ValueError if it is not one."""
    parts = urlsplit(url)
    try:
        port = parts.port or 26379
    except ValueError:
        port = 0
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname or not port:
        where = parts.hostname or "?"
        raise ValueError(
            f"{parts.scheme or '?'}://{where}… is not a sentinel's redis://host:port "
            "or rediss://host:port URL"
        )
    return parts.hostname, port


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


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build ``cls`` from the environment, ``overrides`` (field names) taking precedence;
    raise :class:`ConfigurationError` naming bad vars."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_problem(cls, err["loc"], err["msg"]) for err in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from exc


def _problem(cls: type[BaseSettings], loc: tuple[int | str, ...], message: str) -> str:
    """One error, led by the variable it is about (a check across variables names its own)."""
    message = message.removeprefix("Value error, ")
    if not loc:
        return message
    if str(loc[0]) in cls.model_fields:
        prefix = str(cls.model_config.get("env_prefix", ""))
        variable = f"{prefix}{'.'.join(str(p) for p in loc).upper()}"
    else:  # a field read under an alias (REDIS_URL, AWS_ENDPOINT_URL): the alias as given
        variable = str(loc[0]).upper()
    return f"{variable}: {message}"

"""Which Pulse stack an operator command acts on, and its clients.

Every ``pulse`` command that changes or reads a stack's AWS resources or Redis gets its
settings and clients here, so they all find the same stack the same way.
"""

from __future__ import annotations

from typing import Any

import click

from pulse.errors import ConfigurationError
from pulse.settings import PulseSettings, load_settings

__all__ = ["aws", "settings", "sync_redis"]


def settings() -> PulseSettings:
    """The target stack's settings; a bad setting is one line naming it, not a traceback."""
    try:
        return load_settings(PulseSettings)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


def aws(service: str) -> Any:
    """A boto3 client for ``service`` of the target stack."""
    from pulse.clients import aws_client  # noqa: PLC0415 - boto3 only for these commands

    return aws_client(service, settings())


def sync_redis() -> tuple[Any, str]:
    """A blocking Redis client for the target stack, and its key prefix."""
    from pulse.clients import blocking_redis_client  # noqa: PLC0415

    target = settings()
    return blocking_redis_client(target), target.redis_prefix

"""Who may subscribe to which channel (DESIGN.md "Channels"). Pure: claims in, verdict out."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from pulse.channels import ALERTS, PAYMENTS, STATS, is_valid_channel

if TYPE_CHECKING:
    from pulse.auth import Claims

__all__ = ["Access", "authorize_channel"]

_ACCOUNT_PREFIX = "account:"


class Access(enum.Enum):
    ALLOWED = "allowed"
    FORBIDDEN = "forbidden"
    UNKNOWN_CHANNEL = "unknown_channel"


def authorize_channel(claims: Claims, channel: str) -> Access:
    """May the holder of ``claims`` subscribe to ``channel``?

    ``payments`` and ``alerts`` need role ``ops``; ``stats`` is open to any authenticated
    user; ``account:{id}`` needs ``sub == id`` or role ``ops``. Any other name is unknown.
    """
    if not is_valid_channel(channel):
        return Access.UNKNOWN_CHANNEL
    if channel == STATS:
        return Access.ALLOWED
    if claims.is_ops:
        return Access.ALLOWED
    if channel in (PAYMENTS, ALERTS):
        return Access.FORBIDDEN
    account_id = channel.removeprefix(_ACCOUNT_PREFIX)
    return Access.ALLOWED if account_id == claims.sub else Access.FORBIDDEN

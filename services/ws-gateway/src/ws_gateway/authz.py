"""Who may do what on which channel (docs/design.md, "Channels"). Pure: claims in, verdict out.

:func:`authorize` is the one answer to "may this principal do this operation on this
channel", for every door of the gateway: a WebSocket or SSE subscription, a history or
presence read, an ephemeral publish. Its :class:`Access` is what the doors turn into their
refusals: an error frame (:func:`require`, codes ``unknown_channel`` / ``forbidden``) or an
HTTP problem (``ws_gateway.http_auth``: 404 / 403).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from pulse.channels import ALERTS, HEALTH, PAYMENTS, STATS, is_valid_channel
from ws_gateway.protocol import ErrorCode, FrameError

if TYPE_CHECKING:
    from pulse.auth import Claims

__all__ = ["Access", "Operation", "authorize", "require"]

_ACCOUNT_PREFIX = "account:"


class Access(enum.Enum):
    ALLOWED = "allowed"
    FORBIDDEN = "forbidden"
    UNKNOWN_CHANNEL = "unknown_channel"


class Operation(enum.Enum):
    """What a client asks to do with a channel; the value is the verb its refusal names."""

    SUBSCRIBE = "subscribe"
    READ_HISTORY = "read history"
    READ_PRESENCE = "read presence"
    PUBLISH = "publish"


def authorize(claims: Claims, op: Operation, channel: str) -> Access:
    """May the holder of ``claims`` do ``op`` on ``channel``?

    Reading (subscribing, history, presence): ``payments``, ``alerts`` and ``health`` need
    role ``ops``;
    ``stats`` is open to any authenticated user; ``account:{id}`` needs ``sub == id`` or
    role ``ops``. Publishing: only to ``account:`` channels the token may read (the system
    feeds carry only what the pipeline appends). Any other name is unknown.
    """
    if not is_valid_channel(channel):
        return Access.UNKNOWN_CHANNEL
    if op is Operation.PUBLISH and not channel.startswith(_ACCOUNT_PREFIX):
        return Access.FORBIDDEN
    if channel == STATS or claims.is_ops:
        return Access.ALLOWED
    if channel in (PAYMENTS, ALERTS, HEALTH):
        return Access.FORBIDDEN
    account_id = channel.removeprefix(_ACCOUNT_PREFIX)
    return Access.ALLOWED if account_id == claims.sub else Access.FORBIDDEN


def require(claims: Claims, op: Operation, channel: str) -> None:
    """:func:`authorize`, as a client frame's refusal: raises :class:`FrameError`
    (``unknown_channel``: "no such channel"; ``forbidden``: "not allowed to {verb}")."""
    access = authorize(claims, op, channel)
    if access is Access.UNKNOWN_CHANNEL:
        raise FrameError(ErrorCode.UNKNOWN_CHANNEL, "no such channel", channel)
    if access is Access.FORBIDDEN:
        raise FrameError(ErrorCode.FORBIDDEN, f"not allowed to {op.value}", channel)

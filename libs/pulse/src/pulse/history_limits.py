"""How much history each kind of channel keeps, and for how long (``PULSE_HISTORY``).

A channel's *kind* is its name up to the first ``:`` (``account:42`` is of kind
``account``; ``payments`` of kind ``payments``). Each kind has a :class:`HistoryLimit`:

- ``size``: the most entries its stream keeps (``XADD MAXLEN ~``: Redis trims whole
  nodes, so a stream may hold up to about a hundred more);
- ``ttl_seconds``: its lifetime. Every append gives each key of the channel (stream,
  epoch, once-per-event guards) this lifetime again and drops the entries older than it
  (``XTRIM MINID ~``), so a channel idle for its lifetime leaves nothing in Redis, and a
  channel in use keeps every entry younger than its lifetime — within ``size``: the size
  bound wins, since it is what bounds Redis's memory.

``PULSE_HISTORY`` is a JSON object of the kinds to change, each with both numbers, e.g.
``{"account": {"size": 50, "ttl_seconds": 3600}}``; the kinds it leaves out keep their
defaults (:data:`DEFAULT_LIMITS`). ``default`` is the limit of a channel whose kind has no
entry of its own (a kind added later). An unknown kind, a missing number or one out of
range stops the process at start-up (:func:`pulse.settings.load_settings`).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_LIMITS", "HistoryLimit", "HistoryLimits", "channel_kind"]

_DAY: Final = 86_400


class HistoryLimit(BaseModel):
    """One kind's history: at most ``size`` entries, none older than ``ttl_seconds``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(ge=1, le=1_000_000)
    ttl_seconds: int = Field(ge=1, le=366 * _DAY)


# One million account channels at 100 entries each would be ~100 GB if all were kept
# forever; with a one-day lifetime only the accounts active that day hold anything
# (docs/scaling.md gives the figures).
DEFAULT_LIMITS: Final = {
    "payments": HistoryLimit(size=10_000, ttl_seconds=_DAY),
    "alerts": HistoryLimit(size=10_000, ttl_seconds=_DAY),
    "stats": HistoryLimit(size=1_000, ttl_seconds=_DAY),
    "health": HistoryLimit(size=1_000, ttl_seconds=3_600),
    "account": HistoryLimit(size=100, ttl_seconds=_DAY),
    "default": HistoryLimit(size=1_000, ttl_seconds=_DAY),
}


def channel_kind(channel: str) -> str:
    """The kind of ``channel``: its name up to the first ``:``."""
    return channel.partition(":")[0]


class HistoryLimits(BaseModel):
    """The :class:`HistoryLimit` of every kind of channel (module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payments: HistoryLimit = DEFAULT_LIMITS["payments"]
    alerts: HistoryLimit = DEFAULT_LIMITS["alerts"]
    stats: HistoryLimit = DEFAULT_LIMITS["stats"]
    health: HistoryLimit = DEFAULT_LIMITS["health"]
    account: HistoryLimit = DEFAULT_LIMITS["account"]
    default: HistoryLimit = DEFAULT_LIMITS["default"]

    @model_validator(mode="before")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = sorted(str(kind) for kind in value if kind not in cls.model_fields)
            if unknown:
                known = ", ".join(cls.model_fields)
                raise ValueError(
                    f"unknown kind of channel {', '.join(unknown)} (the kinds are {known})"
                )
        return value

    def of(self, channel: str) -> HistoryLimit:
        """The limit of ``channel``'s kind, or ``default`` for a kind without one."""
        kind = channel_kind(channel)
        if kind in HistoryLimits.model_fields:
            limit: HistoryLimit = getattr(self, kind)
            return limit
        return self.default

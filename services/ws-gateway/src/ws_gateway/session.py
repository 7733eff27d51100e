"""The state of one client connection: its claims and its channels. Pure, no I/O.

A subscription goes through two states. While *pending* (the gateway is subscribing to
Redis and replaying history) live frames for the channel are buffered. When the gateway
completes it with a *floor* offset (the newest entry it read from history), the buffered
frames newer than the floor are released, and later live frames at or below the floor are
dropped, so history and live join with no gap and no duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ws_gateway.authz import Operation, require
from ws_gateway.offsets import StreamId, frame_offset
from ws_gateway.protocol import (
    PRESENCE_FRAME_PREFIX,
    SUBSCRIBED_FRAME_PREFIX,
    ErrorCode,
    FrameError,
    Subscribe,
)

if TYPE_CHECKING:
    from pulse.auth import Claims

__all__ = ["BufferOverflowError", "Session"]


class BufferOverflowError(Exception):
    """More live frames arrived during a replay than the connection may buffer."""


@dataclass(slots=True)
class _ChannelState:
    pending: bool = True
    # Live frames held while pending; made by the first one, None once live.
    buffer: list[str] | None = None
    # Live frames at or below this offset were already sent from history; None once passed.
    floor: StreamId | None = None
    presence: bool = False


class Session:
    __slots__ = ("_buffer_limit", "_channels", "_max_subscriptions", "claims")

    def __init__(self, claims: Claims, *, max_subscriptions: int, buffer_limit: int) -> None:
        self.claims = claims
        self._max_subscriptions = max_subscriptions
        self._buffer_limit = buffer_limit
        self._channels: dict[str, _ChannelState] = {}

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    def is_subscribed(self, channel: str) -> bool:
        return channel in self._channels

    def begin_subscribe(self, frame: Subscribe) -> None:
        """Authorise ``frame`` and mark its channel pending; raises :class:`FrameError`."""
        channel = frame.channel
        require(self.claims, Operation.SUBSCRIBE, channel)
        if channel in self._channels:
            raise FrameError(ErrorCode.BAD_REQUEST, "already subscribed", channel)
        if len(self._channels) >= self._max_subscriptions:
            raise FrameError(
                ErrorCode.LIMIT_EXCEEDED,
                f"at most {self._max_subscriptions} subscriptions per connection",
                channel,
            )
        self._channels[channel] = _ChannelState(presence=frame.presence)

    def complete_subscribe(self, channel: str, floor: StreamId) -> list[str]:
        """Make ``channel`` live; returns the buffered frames newer than ``floor``."""
        state = self._channels[channel]
        state.pending = False
        state.floor = floor
        buffered, state.buffer = state.buffer, None
        return [f for f in buffered or () if self._passes_floor(state, f)]

    def is_live(self, channel: str, delivered: StreamId | None = None) -> bool:
        """Subscribed, past the replay, and past its floor: every live frame goes out.

        ``delivered`` is the newest offset the channel's fan-out has handed over, if the
        caller knows it: the fan-out hands over only newer ones, so a floor at or below it
        can hold nothing back any more (the connection needs no live frame to pass it)."""
        state = self._channels.get(channel)
        if state is None or state.pending:
            return False
        floor = state.floor
        return floor is None or (delivered is not None and floor <= delivered)

    def unsubscribe(self, channel: str) -> bool:
        """Forget ``channel``; False if it was not subscribed."""
        return self._channels.pop(channel, None) is not None

    def on_live(self, channel: str, frame: str) -> str | None:
        """The frame to send for a live message, or None (not subscribed, buffered, duplicate).

        Raises :class:`BufferOverflowError` when a pending channel's buffer is full.
        """
        state = self._channels.get(channel)
        if state is None:
            return None
        if not state.presence and frame.startswith(PRESENCE_FRAME_PREFIX):
            return None
        if state.pending:
            buffer = state.buffer
            if buffer is None:
                buffer = state.buffer = []
            if len(buffer) >= self._buffer_limit:
                raise BufferOverflowError(channel)
            buffer.append(frame)
            return None
        if state.floor is None or self._passes_floor(state, frame):
            return frame
        return None

    @staticmethod
    def _passes_floor(state: _ChannelState, frame: str) -> bool:
        if state.floor is None:
            return True
        if frame.startswith(SUBSCRIBED_FRAME_PREFIX):
            # The hub's notice that the channel's history was lost (a new epoch): offsets
            # start again, so the floor from the old history no longer means anything.
            state.floor = None
            return True
        offset = frame_offset(frame)
        if offset is None:
            return True  # presence and ephemeral messages: not in the history, no order
        if offset > state.floor:
            # Offsets only grow on a channel: once one passes, every later one does too.
            state.floor = None
            return True
        return False

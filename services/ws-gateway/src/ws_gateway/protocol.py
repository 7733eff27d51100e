"""The gateway's WebSocket protocol (docs/design.md, "ws-gateway"): text frames, JSON. No I/O.

Client frames::

    {"op":"subscribe","channel":C,"since":OFFSET?,"epoch":EPOCH?,"presence":bool?}
    {"op":"unsubscribe","channel":C}
    {"op":"refresh","token":JWT}
    {"op":"publish","channel":C,"data":OBJECT}   (ephemeral: delivered live, never stored)
    {"op":"ping"}

Server frames::

    {"op":"subscribed","channel":C,"offset":O,"epoch":E,"recovered":bool}
    {"op":"refreshed","exp":EXP}
    {"op":"published","channel":C}
    {"op":"message","channel":C,"from":SUB,"data":OBJECT}
    {"op":"unsubscribed","channel":C}
    {"op":"event","channel":C,"offset":O,"event":CLOUDEVENT}   (built by pulse.channels)
    {"op":"error","code":CODE,"message":TEXT,"channel":C?}
    {"op":"pong"}
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from ws_gateway.offsets import EVENT_FRAME_PREFIX, SUBSCRIBED_FRAME_PREFIX, StreamId

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "EVENT_FRAME_PREFIX",
    "PRESENCE_FRAME_PREFIX",
    "SUBSCRIBED_FRAME_PREFIX",
    "ClientFrame",
    "ErrorCode",
    "FrameError",
    "Ping",
    "Publish",
    "Refresh",
    "Subscribe",
    "Unsubscribe",
    "error_frame",
    "event_frame",
    "message_frame",
    "parse_client_frame",
    "pong_frame",
    "published_frame",
    "refreshed_frame",
    "resume_subscribe",
    "subscribed_epoch",
    "subscribed_frame",
    "unsubscribed_frame",
]

_MAX_CHANNEL_CHARS: Final = 256
_MAX_EPOCH_CHARS: Final = 64
_MAX_TOKEN_CHARS: Final = 16 * 1024
MAX_PUBLISH_BYTES: Final = 4096


class ErrorCode(enum.StrEnum):
    FORBIDDEN = "forbidden"
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_CHANNEL = "unknown_channel"
    NOT_SUBSCRIBED = "not_subscribed"
    TOO_LARGE = "too_large"
    LIMIT_EXCEEDED = "limit_exceeded"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"


class FrameError(Exception):
    """A client frame the gateway refuses; answered with an error frame, never a close."""

    def __init__(self, code: ErrorCode, message: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.channel = channel


@dataclass(frozen=True)
class Subscribe:
    channel: str
    since: StreamId | None = None
    # The epoch the client's ``since`` belongs to; another epoch means the offset is void.
    epoch: str | None = None
    # Whether the client wants the channel's join/leave frames.
    presence: bool = False


@dataclass(frozen=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True)
class Refresh:
    token: str


@dataclass(frozen=True)
class Publish:
    channel: str
    data: str  # the client's JSON object, re-serialised compactly


@dataclass(frozen=True)
class Ping:
    pass


ClientFrame = Subscribe | Unsubscribe | Refresh | Publish | Ping


def parse_client_frame(text: str | bytes) -> ClientFrame:
    """Parse one client frame; raises :class:`FrameError` (bad_request / unknown_op)."""
    if isinstance(text, bytes):
        raise FrameError(ErrorCode.BAD_REQUEST, "binary frames are not supported; send JSON text")
    try:
        data: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError(ErrorCode.BAD_REQUEST, "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError(ErrorCode.BAD_REQUEST, "frame must be a JSON object")
    op = data.get("op")
    if not isinstance(op, str):
        raise FrameError(ErrorCode.BAD_REQUEST, '"op" must be a string')
    parse = _PARSERS.get(op)
    if parse is None:
        raise FrameError(ErrorCode.UNKNOWN_OP, f"unknown op {op[:40]!r}")
    return parse(data)


def _ping(_data: dict[str, Any]) -> Ping:
    return Ping()


def _unsubscribe(data: dict[str, Any]) -> Unsubscribe:
    return Unsubscribe(_channel(data))


def _refresh(data: dict[str, Any]) -> Refresh:
    token = data.get("token")
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
        raise FrameError(ErrorCode.BAD_REQUEST, '"token" must be a JWT string')
    return Refresh(token)


def _publish(data: dict[str, Any]) -> Publish:
    channel = _channel(data)
    payload = data.get("data")
    if not isinstance(payload, dict):
        raise FrameError(ErrorCode.BAD_REQUEST, '"data" must be a JSON object', channel)
    encoded = orjson.dumps(payload).decode()
    if len(encoded) > MAX_PUBLISH_BYTES:
        raise FrameError(
            ErrorCode.TOO_LARGE, f'"data" is larger than {MAX_PUBLISH_BYTES} bytes', channel
        )
    return Publish(channel, encoded)


def _subscribe(data: dict[str, Any]) -> Subscribe:
    channel = _channel(data)
    presence = data.get("presence", False)
    if not isinstance(presence, bool):
        raise FrameError(ErrorCode.BAD_REQUEST, '"presence" must be a boolean', channel)
    return Subscribe(channel, _since(data, channel), _epoch(data, channel), presence)


_PARSERS: Final[dict[str, Callable[[dict[str, Any]], ClientFrame]]] = {
    "ping": _ping,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "publish": _publish,
    "refresh": _refresh,
}


def _channel(data: dict[str, Any]) -> str:
    channel = data.get("channel")
    if not isinstance(channel, str) or not channel:
        raise FrameError(ErrorCode.BAD_REQUEST, '"channel" must be a non-empty string')
    if len(channel) > _MAX_CHANNEL_CHARS:
        raise FrameError(ErrorCode.BAD_REQUEST, '"channel" is too long')
    return channel


def _since(data: dict[str, Any], channel: str) -> StreamId | None:
    since = data.get("since")
    if since is None:
        return None
    if not isinstance(since, str):
        raise FrameError(ErrorCode.BAD_REQUEST, '"since" must be an offset string', channel)
    try:
        return StreamId.parse(since)
    except ValueError:
        raise FrameError(
            ErrorCode.BAD_REQUEST, '"since" is not a channel offset', channel
        ) from None


def _epoch(data: dict[str, Any], channel: str) -> str | None:
    epoch = data.get("epoch")
    if epoch is None:
        return None
    if not isinstance(epoch, str) or not epoch or len(epoch) > _MAX_EPOCH_CHARS:
        raise FrameError(ErrorCode.BAD_REQUEST, '"epoch" must be a short string', channel)
    return epoch


def resume_subscribe(channel: str, since: StreamId | None, epoch: str | None) -> Subscribe:
    """A subscribe the gateway makes for a client (an SSE stream resuming from its cursor),
    checked as the same frame from the client would be; raises :class:`FrameError`."""
    data = {"channel": channel, "epoch": epoch}
    return Subscribe(_channel(data), since, _epoch(data, channel))


def _dump(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def subscribed_frame(
    channel: str, offset: StreamId, *, recovered: bool, epoch: str | None = None
) -> str:
    frame: dict[str, Any] = {"op": "subscribed", "channel": channel, "offset": str(offset)}
    if epoch is not None:
        frame["epoch"] = epoch
    frame["recovered"] = recovered
    return _dump(frame)


def refreshed_frame(exp: int) -> str:
    return _dump({"op": "refreshed", "exp": exp})


def unsubscribed_frame(channel: str) -> str:
    return _dump({"op": "unsubscribed", "channel": channel})


def error_frame(code: ErrorCode, message: str, channel: str | None = None) -> str:
    frame: dict[str, Any] = {"op": "error", "code": str(code), "message": message}
    if channel is not None:
        frame["channel"] = channel
    return _dump(frame)


def published_frame(channel: str) -> str:
    return _dump({"op": "published", "channel": channel})


def message_frame(channel: str, sender: str, data_json: str) -> str:
    """An ephemeral message as subscribers get it (``data_json`` is already JSON)."""
    return (
        '{"op":"message","channel":'
        + orjson.dumps(channel).decode()
        + ',"from":'
        + orjson.dumps(sender).decode()
        + ',"data":'
        + data_json
        + "}"
    )


PRESENCE_FRAME_PREFIX: Final = '{"op":"presence"'
_EPOCH_KEY: Final = '"epoch":"'


def subscribed_epoch(frame: str) -> str | None:
    """The epoch of a frame made by :func:`subscribed_frame`, without parsing its JSON, or
    None. Its channel and offset hold no quote, so the first ``"epoch":"`` is its own (an
    epoch is a token of pulse.channels, without quotes or escapes)."""
    start = frame.find(_EPOCH_KEY)
    if start < 0:
        return None
    start += len(_EPOCH_KEY)
    end = frame.find('"', start)
    return frame[start:end] if end > start else None


def pong_frame() -> str:
    return '{"op":"pong"}'


def event_frame(channel: str, offset: str, event_json: str) -> str:
    """The event frame for a history entry, byte-identical to the one pulse.channels publishes."""
    return (
        '{"op":"event","channel":'
        + orjson.dumps(channel).decode()
        + ',"offset":"'
        + offset
        + '","event":'
        + event_json
        + "}"
    )

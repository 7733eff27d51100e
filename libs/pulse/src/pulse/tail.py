"""``pulse tail``: follow channels of a gateway, one readable line per event.

Each event is printed as one line (:func:`event_line`: local time, type, payment, account,
amount and currency, status), or with ``raw`` as the gateway's JSON frame. A dropped
connection is opened again (after 0.5 s, doubling up to 5 s) and every channel subscribed
again from the offset of the last event printed (``since`` with the channel's ``epoch``), so
nothing is missed or printed twice while the channel's history reaches back; when it does
not, a line on stderr says so.

Refusals end the tail with exit code 1 and the server's reason on stderr: the handshake's
problem (401 for a missing, bad or expired token, 429, 503), an error frame for a channel
(``forbidden``, ``unknown_channel``), the close codes 4001 (token expired) and 4003
(forbidden). A first connection that fails is "cannot connect", not a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = ["TailRefusedError", "event_line", "tail_channels"]

_FIRST_DELAY: Final = 0.5
_MAX_DELAY: Final = 5.0
# Close codes after which reconnecting cannot help (docs/design.md, "ws-gateway").
_CLOSE_REASONS: Final = {4001: "the token expired", 4003: "forbidden"}
# Error frames that say "later", not "never".
_TRANSIENT_ERRORS: Final = frozenset({"unavailable", "rate_limited"})
_ZERO: Final = "0-0"


class TailRefusedError(Exception):
    """The gateway refused what the tail asked for; reconnecting would not help."""


class _Dropped(Exception):  # noqa: N818 - a signal inside this module, not an error to report
    """The connection is gone or must be replaced; reconnect."""


@dataclass
class _Position:
    """Where a channel's tail stands: the offset of the last event printed, and its epoch."""

    offset: str | None = None
    epoch: str | None = None


def _local_time(text: str | None) -> str:
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text).astimezone()
    except ValueError:
        return text
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d} {moment:%Z}"


def _status(kind: str, data: dict[str, Any]) -> str:
    if kind == "pulse.fraud.decision":
        reasons = ",".join(str(r) for r in data.get("reasons") or []) or "no rule fired"
        return f"{data.get('decision', '-')} score {data.get('score', '-')} ({reasons})"
    status = str(data.get("status") or "-")
    old = data.get("old_status")
    return f"{status} (was {old})" if old and old != status else status


def event_line(frame: dict[str, Any], *, with_channel: bool = False) -> str:
    """One line for an event frame: local time, type, payment, account, amount, status."""
    event = frame.get("event") or {}
    found = event.get("data")
    data: dict[str, Any] = found if isinstance(found, dict) else {}
    kind = str(event.get("type", "?"))
    parts = [_local_time(event.get("time"))]
    if with_channel:
        parts.append(str(frame.get("channel", "?")))
    parts.append(kind)
    if "payment_id" in data or "account_id" in data:
        amount = f"{data['amount']} {data.get('currency', '')}".strip() if "amount" in data else "-"
        parts += [
            str(data.get("payment_id", "-")),
            str(data.get("account_id", "-")),
            amount,
            _status(kind, data),
        ]
    else:  # the pipeline's own reports (stats, health): who sent it
        parts.append(str(event.get("source", "-")))
    return "  ".join(parts)


def _handshake_reason(exc: InvalidStatus) -> str:
    """The refusal's status and the problem's detail (RFC 9457), if the body has one."""
    response = exc.response
    reason = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        detail = orjson.loads(response.body or b"").get("detail")
        if detail:
            return f"{reason}: {detail}"
    return reason


class _Tail:
    def __init__(
        self, channels: list[str], *, since: str | None, raw: bool, out: TextIO, err: TextIO
    ) -> None:
        self.positions = {channel: _Position(offset=since) for channel in channels}
        self.raw = raw
        self.out = out
        self.err = err
        self.with_channel = len(channels) > 1
        self.connected = False  # ever: a failed first connection ends the tail
        self.live = False  # this connection came up (the backoff starts again)

    def note(self, text: str) -> None:
        self.err.write(f"pulse tail: {text}\n")
        self.err.flush()

    async def subscribe(self, ws: ClientConnection) -> None:
        for channel, position in self.positions.items():
            op: dict[str, Any] = {"op": "subscribe", "channel": channel}
            if position.offset is not None:
                op["since"] = position.offset
                if position.epoch is not None:
                    op["epoch"] = position.epoch
            await ws.send(orjson.dumps(op).decode())

    def handle(self, text: str) -> None:
        frame = orjson.loads(text)
        op = frame.get("op")
        channel = str(frame.get("channel", ""))
        position = self.positions.get(channel)
        if op == "event" and position is not None:
            position.offset = str(frame.get("offset"))
            self.out.write(
                (text if self.raw else event_line(frame, with_channel=self.with_channel)) + "\n"
            )
            self.out.flush()
            return
        if self.raw:
            self.out.write(text + "\n")
            self.out.flush()
        if op == "subscribed" and position is not None:
            self._subscribed(channel, position, frame)
        elif op == "error":
            code, message = str(frame.get("code", "?")), str(frame.get("message", ""))
            where = f"{channel}: " if channel else ""
            if code in _TRANSIENT_ERRORS:
                self.note(f"{where}{message} ({code}); reconnecting")
                raise _Dropped
            raise TailRefusedError(f"{where}{message} ({code})")

    async def follow(self, url: str, token: str) -> int | str:
        """One connection: the exit code, or why it ended and a new one should follow."""
        sep = "&" if "?" in url else "?"
        try:
            # Ctrl-C closes the connection first: a gateway slow to answer the close holds the
            # exit up for close_timeout, not websockets' 10 s.
            async with connect(f"{url}{sep}token={token}", open_timeout=10, close_timeout=2) as ws:
                if self.connected:
                    self.note("reconnected")
                self.connected = self.live = True
                await self.subscribe(ws)
                async for text in ws:
                    self.handle(text if isinstance(text, str) else text.decode())
        except Exception as exc:  # each kind is judged by _ended_by
            return self._ended_by(exc, url)
        # The loop ends quietly on a close with 1000 (done) or 1001 (going away: a gateway
        # shutting down, its clients reconnect elsewhere).
        if ws.close_code == 1000:  # noqa: PLR2004 - a normal close
            return 0
        return f"connection closed ({ws.close_code}: {ws.close_reason or 'no reason'})"

    def _ended_by(self, exc: Exception, url: str) -> int | str:  # noqa: PLR0911 - one per kind
        """The exit code after ``exc``, or why to reconnect; re-raises what is not ours."""
        if isinstance(exc, TailRefusedError):
            self.note(str(exc))
            return 1
        if isinstance(exc, InvalidStatus):
            if not self.connected or exc.response.status_code < 500:  # noqa: PLR2004
                self.note(f"the gateway refused the connection: {_handshake_reason(exc)}")
                return 1
            return _handshake_reason(exc)
        if isinstance(exc, ConnectionClosed):
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code in _CLOSE_REASONS:
                self.note(f"the gateway closed the connection: {_CLOSE_REASONS[code]} ({code})")
                return 1
            return f"connection closed ({code or 'no close frame'})"
        if isinstance(exc, _Dropped):
            return "the gateway asked to retry"
        if isinstance(exc, OSError | TimeoutError | InvalidHandshake):
            if not self.connected:
                self.note(f"cannot connect to {url}: {exc or type(exc).__name__}")
                return 1
            return str(exc) or type(exc).__name__
        raise exc

    def _subscribed(self, channel: str, position: _Position, frame: dict[str, Any]) -> None:
        epoch = frame.get("epoch")
        if position.offset is None:  # a new tail: from now on
            position.offset = str(frame.get("offset", _ZERO))
        elif not frame.get("recovered"):
            self.note(
                f"{channel}: the history no longer reaches back to offset {position.offset}; "
                "events of the gap may be missing"
            )
            if epoch != position.epoch and position.epoch is not None:
                position.offset = _ZERO  # a new epoch: its events come from its start
        position.epoch = epoch if isinstance(epoch, str) else position.epoch


async def tail_channels(
    url: str,
    channels: list[str],
    token: str,
    *,
    since: str | None = None,
    raw: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print the channels' events until the gateway closes normally (0), or refuses (1)."""
    tail = _Tail(channels, since=since, raw=raw, out=out, err=err)
    delay = _FIRST_DELAY
    while True:
        outcome = await tail.follow(url, token)
        if isinstance(outcome, int):
            return outcome
        if tail.live:
            delay = _FIRST_DELAY
        tail.live = False
        tail.note(f"{outcome}; reconnecting in {delay:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)

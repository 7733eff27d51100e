"""The gateway's plain HTTP reads: a channel's history and presence, and the static files.

The handlers take the verified claims from :func:`ws_gateway.http_auth.authenticated`, which
has also authorised the route's ``{channel}`` by then.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

from ws_gateway.http_auth import problem
from ws_gateway.offsets import StreamId
from ws_gateway.presence import has_presence

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pulse.auth import Claims
    from ws_gateway.history import ChannelHistory
    from ws_gateway.presence import Presence

__all__ = ["ChannelReads", "static_handler"]

_HISTORY_LIMIT_DEFAULT: Final = 100
_HISTORY_LIMIT_MAX: Final = 1000


class ChannelReads:
    def __init__(self, history: ChannelHistory, presence: Presence) -> None:
        self._history = history
        self._presence = presence

    async def history(self, request: web.Request, _claims: Claims) -> web.Response:
        """``GET /v1/channels/{c}/history?since=&limit=&epoch=``: stored events, oldest first.

        With ``since``: the events after it (page on with the last offset returned). Without:
        the newest ``limit`` events."""
        channel = request.match_info["channel"]
        try:
            limit = int(request.query.get("limit", _HISTORY_LIMIT_DEFAULT))
            since_text = request.query.get("since")
            since = StreamId.parse(since_text) if since_text else None
        except ValueError:
            return problem(400, "bad-request", "since must be an offset, limit an integer")
        if not 1 <= limit <= _HISTORY_LIMIT_MAX:
            return problem(400, "bad-request", f"limit must be 1 to {_HISTORY_LIMIT_MAX}")
        snapshot = await self._history.snapshot(channel)
        epoch = request.query.get("epoch")
        body: dict[str, Any] = {
            "channel": channel,
            "epoch": snapshot.epoch,
            "offset": str(snapshot.latest),
        }
        if since is None:
            entries = await self._history.newest(channel, limit)
        elif epoch is not None and epoch != snapshot.epoch:
            entries = []
            body["recovered"] = False
        else:
            entries = await self._history.after(channel, since, limit)
            body["recovered"] = snapshot.recovers(since, epoch)
        body["events"] = [
            {"offset": offset, "event": orjson.Fragment(event)} for offset, event in entries
        ]
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def presence(self, request: web.Request, _claims: Claims) -> web.Response:
        """``GET /v1/channels/{c}/presence``: the users present and their session counts."""
        channel = request.match_info["channel"]
        if not has_presence(channel):
            return problem(404, "no-presence", f"{channel} has no presence")
        users = await self._presence.users(channel)
        return web.json_response(
            {
                "channel": channel,
                "count": len(users),
                "users": [{"user": u, "sessions": n} for u, n in sorted(users.items())],
            }
        )


def static_handler(
    name: str, content_type: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler serving one file shipped in the package (read once, at start-up)."""
    body = (resources.files("ws_gateway") / "static" / name).read_bytes()

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    return handler

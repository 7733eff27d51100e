"""The gateway's plain HTTP reads: a channel's history and presence, the console's files.

The handlers take the verified claims from :func:`ws_gateway.http_auth.authenticated`, which
has also authorised the route's ``{channel}`` by then.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from ws_gateway.http_auth import problem
from ws_gateway.offsets import StreamId
from ws_gateway.presence import has_presence

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from pulse.auth import Claims
    from ws_gateway.history import ChannelHistory
    from ws_gateway.presence import Presence

__all__ = ["ChannelReads", "StaticFiles"]

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
        epoch = request.query.get("epoch")
        snapshot = await self._history.snapshot(channel, since, epoch)
        body: dict[str, Any] = {
            "channel": channel,
            "epoch": snapshot.epoch,
            "offset": str(snapshot.latest),
        }
        if since is None:
            entries = await self._history.newest(channel, limit)
        elif not snapshot.continues(since, epoch):
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


_CONTENT_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".md": "text/plain",
    "": "text/plain",  # LICENSE
}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file shipped in the package's ``static`` folder: path below it → (bytes, type)."""
    files: dict[str, tuple[bytes, str]] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = PurePosixPath(entry.name).suffix
            if suffix in _CONTENT_TYPES:
                files[prefix + entry.name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])

    walk(resources.files("ws_gateway") / "static", "")
    return files


class StaticFiles:
    """The console page, its modules, styles and vendored library, read once at start-up,
    and the console's settings for the page (``/console/config.json``)."""

    def __init__(self, console_ingest_url: str) -> None:
        self._files = _static_files()
        self._config = orjson.dumps({"ingest_url": console_ingest_url})
        # The page talks to its own origin (HTTP and WebSocket) and to ingest, nothing else.
        ingest = urlsplit(console_ingest_url)
        ingest_origin = f" {ingest.scheme}://{ingest.netloc}" if console_ingest_url else ""
        self._policy = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'{ingest_origin}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'"
        )

    async def console(self, _request: web.Request) -> web.Response:
        """``GET /``: the operator's console."""
        response = self._response("console.html")
        response.headers["Content-Security-Policy"] = self._policy
        return response

    async def config(self, _request: web.Request) -> web.Response:
        """``GET /console/config.json``: what the page needs to know of the gateway's settings
        (no secret: the review desk calls ingest with the viewer's own token)."""
        return web.Response(
            body=self._config,
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    async def file(self, request: web.Request) -> web.Response:
        """``GET /static/{path}``: one shipped file, 404 for any other path."""
        path = request.match_info["path"]
        if path not in self._files:
            return problem(404, "not-found", "no such file")
        return self._response(path)

    def _response(self, path: str) -> web.Response:
        body, content_type = self._files[path]
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

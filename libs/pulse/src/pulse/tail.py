"""``pulse tail``: subscribe to channels on the gateway and print each frame as a JSON line."""

from __future__ import annotations

import sys

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

__all__ = ["tail_channels"]


async def tail_channels(url: str, channels: list[str], token: str, *, since: str | None) -> int:
    """Print frames until the connection closes; 0 on a normal close, 1 otherwise."""
    sep = "&" if "?" in url else "?"
    try:
        async with connect(f"{url}{sep}token={token}") as ws:
            for channel in channels:
                op: dict[str, str] = {"op": "subscribe", "channel": channel}
                if since:
                    op["since"] = since
                await ws.send(orjson.dumps(op).decode())
            async for frame in ws:
                sys.stdout.write((frame if isinstance(frame, str) else frame.decode()) + "\n")
                sys.stdout.flush()
    except InvalidStatus as exc:
        sys.stderr.write(f"pulse tail: refused with HTTP {exc.response.status_code}\n")
        return 1
    except ConnectionClosed as exc:
        sys.stderr.write(f"pulse tail: connection closed ({exc.rcvd})\n")
        return 0 if exc.rcvd is not None and exc.rcvd.code == 1000 else 1  # noqa: PLR2004
    except OSError as exc:
        sys.stderr.write(f"pulse tail: cannot connect to {url}: {exc}\n")
        return 1
    return 0

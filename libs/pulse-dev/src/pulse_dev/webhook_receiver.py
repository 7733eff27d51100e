"""A webhook receiver for tests and the reliability suites: real HTTP, checked signatures.

:func:`verify_signature` is the Standard Webhooks check written from the spec (not from
Pulse's signer). :class:`ScriptedReceiver` serves ``POST /hooks/{name}`` on 127.0.0.1,
answers each request as its ``answer`` function says (200 unless told otherwise), and
records every request as a :class:`Hit`. It can be stopped and started again on the same
port: a receiver that is down refuses connections. :func:`register_endpoint` registers an
endpoint with ``pulse webhooks add``, as an operator does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from click.testing import CliRunner

from pulse_dev.emulators import free_port

__all__ = ["Answer", "Hit", "ScriptedReceiver", "register_endpoint", "verify_signature"]

Answer = Callable[[str, str, int], int]
"""``(endpoint name, webhook-id, how many times that id came to that name before)`` → status."""


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether one of the ``webhook-signature`` values is the HMAC-SHA256 of
    ``"{webhook-id}.{webhook-timestamp}.{body}"`` keyed by the base64-decoded secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split()]
    return any(hmac.compare_digest(expected, s) for s in offered)


@dataclass(frozen=True)
class Hit:
    """One request: to which endpoint, its ``webhook-id``, the answer, whether the
    signature held and the body's id matched, when it came (``time.monotonic()``), and the
    payment it is about."""

    name: str
    webhook_id: str
    status: int
    verified: bool
    at: float
    payment_id: str | None = None  # the event's data.payment_id


def _ok(_name: str, _webhook_id: str, _before: int) -> int:
    return 200


class ScriptedReceiver:
    """``POST /hooks/{name}``: answered by ``answer``, recorded in ``hits`` (module doc)."""

    def __init__(self, answer: Answer = _ok) -> None:
        self.answer = answer
        self.secrets: dict[str, str] = {}
        self.hits: list[Hit] = []
        self.port = free_port()
        self._seen: Counter[tuple[str, str]] = Counter()
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{name}"

    async def start(self) -> None:
        """Listen (again) on the receiver's port."""
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        secret = self.secrets.get(name)
        event: dict[str, Any] = {}
        verified = secret is not None and verify_signature(secret, request.headers, body)
        if verified:
            event = orjson.loads(body)
            verified = event.get("id") == webhook_id
        before = self._seen[name, webhook_id]
        self._seen[name, webhook_id] += 1
        status = self.answer(name, webhook_id, before) if verified else 401
        payment = (event.get("data") or {}).get("payment_id")
        self.hits.append(Hit(name, webhook_id, status, verified, time.monotonic(), payment))
        return web.Response(status=status)

    def of(self, name: str) -> list[Hit]:
        return [h for h in self.hits if h.name == name]

    def delivered(self, name: str) -> list[str]:
        """The ids answered with a 2xx, in arrival order."""
        return [h.webhook_id for h in self.of(name) if 200 <= h.status < 300]  # noqa: PLR2004

    def first_tries(self, name: str) -> list[str]:
        """Each id once, in the order of its first request."""
        return list(dict.fromkeys(h.webhook_id for h in self.of(name)))

    def tries(self, name: str) -> Counter[str]:
        """Requests per id."""
        return Counter(h.webhook_id for h in self.of(name))


def register_endpoint(
    env: dict[str, str], account: str, url: str, *options: str
) -> tuple[str, str]:
    """``pulse webhooks add --account A --url U [options]`` in ``env``: the endpoint id and
    secret."""
    from pulse.cli import main  # noqa: PLC0415 - the command, as an operator runs it

    result = CliRunner().invoke(
        main, ["webhooks", "add", "--account", account, "--url", url, *options], env=env
    )
    if result.exit_code != 0:
        raise RuntimeError(f"pulse webhooks add failed: {result.output}")
    lines: dict[str, Any] = dict(line.split(": ", 1) for line in result.output.splitlines())
    return str(lines["endpoint"]), str(lines["secret"])

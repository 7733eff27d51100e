"""pulse.webhook_targets on real sockets: the guarded connector and post_webhook against
receivers on loopback (127.0.0.1 stands for an internal service, 127.0.0.2 — let through by
the policy — for a public receiver), with names answered by an injected resolver."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections import Counter
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from pulse.webhook_targets import (
    ALLOW_HTTP_SETTING,
    ALLOWED_NETWORKS_SETTING,
    SsrfPolicy,
    TargetRefused,
    guarded_connector,
    post_webhook,
)
from pulse_dev.emulators import free_port
from pulse_dev.redis_nodes import make_tls_files

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

LOOPBACK = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
# 127.0.0.2 plays a public receiver: allowed, while the rest of loopback stays refused.
PUBLIC_STAND_IN = (ip_network("127.0.0.2/32"),)
BODY = b'{"id":"evt_1"}'


class ScriptedResolver(AbstractResolver):
    """A DNS server under the test's control: each lookup of a name takes its next answer
    (the last one repeats), of whatever address family."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: Counter[str] = Counter()

    async def resolve(
        self,
        host: str,
        port: int = 0,
        family: socket.AddressFamily = socket.AF_INET,  # noqa: ARG002 - any family is answered
    ) -> list[ResolveResult]:
        self.lookups[host] += 1
        addresses = (
            self.answers[host].pop(0) if len(self.answers[host]) > 1 else self.answers[host][0]
        )
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


class Receiver:
    """An aiohttp receiver on one address: counts hits, answers per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)
        self.app.router.add_post("/moved", self.moved)
        self.app.router.add_post("/large", self.large)
        self.app.router.add_route("*", "/elsewhere", self.elsewhere)

    async def hook(self, request: web.Request) -> web.Response:
        self.hits["hook"] += 1
        self.hosts.append(request.host)
        assert await request.read() == BODY
        response = web.Response(text="ok")
        response.force_close()  # each delivery opens a connection of its own
        return response

    async def moved(self, _request: web.Request) -> web.Response:
        self.hits["moved"] += 1
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(self, _request: web.Request) -> web.Response:
        self.hits["elsewhere"] += 1
        return web.Response(text="followed")

    async def large(self, request: web.Request) -> web.StreamResponse:
        self.hits["large"] += 1
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(64):  # 4 MiB, unless the client stops reading
                await response.write(b"x" * 65536)
        return response


@contextlib.asynccontextmanager
async def listening(
    receiver: Receiver, host: str, port: int, tls: ssl.SSLContext | None = None
) -> AsyncIterator[None]:
    runner = web.AppRunner(receiver.app)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    try:
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def guarded_session(
    policy: SsrfPolicy, resolver: AbstractResolver | None = None, tls: Any = True
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = guarded_connector(policy, resolver=resolver, ssl=tls)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def test_a_name_resolving_to_an_internal_address_is_refused_at_delivery() -> None:
    receiver, port = Receiver(), free_port()
    resolver = ScriptedResolver(
        {
            "hooks.example.com": [["127.0.0.1"]],
            "mixed.example.com": [["127.0.0.2", "127.0.0.1"]],
            "meta.example.com": [["169.254.169.254"]],
        }
    )
    policy = SsrfPolicy(allow_http=True, allowed_networks=PUBLIC_STAND_IN)
    async with listening(receiver, "127.0.0.1", port), guarded_session(policy, resolver) as s:
        for name, what in (
            ("hooks.example.com", "127.0.0.1 is loopback"),
            ("mixed.example.com", "127.0.0.1 is loopback"),  # one refused address is enough
            ("meta.example.com", "cloud metadata"),
        ):
            with pytest.raises(TargetRefused) as refused:
                await post_webhook(s, f"http://{name}:{port}/hook", BODY, {}, timeout=5)
            assert refused.value.reason.startswith(f"{name} resolves to a refused address")
            assert what in refused.value.reason
            assert refused.value.setting == ALLOWED_NETWORKS_SETTING
    assert receiver.hits["hook"] == 0


async def test_a_rebinding_name_cannot_swap_the_checked_address_for_another() -> None:
    """The first lookup answers the public receiver, every later one the internal service:
    the first delivery reaches the address its lookup checked (no second lookup between
    the check and the connection), the next lookup's internal answer is refused."""
    public, internal, port = Receiver(), Receiver(), free_port()
    resolver = ScriptedResolver({"rebind.example.com": [["127.0.0.2"], ["127.0.0.1"]]})
    policy = SsrfPolicy(allow_http=True, allowed_networks=PUBLIC_STAND_IN)
    url = f"http://rebind.example.com:{port}/hook"
    async with (
        listening(public, "127.0.0.2", port),
        listening(internal, "127.0.0.1", port),
        guarded_session(policy, resolver) as session,
    ):
        first = await post_webhook(session, url, BODY, {}, timeout=5)
        assert (first.status, first.excerpt) == (200, "ok")
        with pytest.raises(TargetRefused, match=r"127\.0\.0\.1 is loopback"):
            await post_webhook(session, url, BODY, {}, timeout=5)
    assert public.hits["hook"] == 1
    assert public.hosts == [f"rebind.example.com:{port}"]
    assert internal.hits["hook"] == 0
    assert resolver.lookups["rebind.example.com"] == 2  # one per delivery, none in between


async def test_literal_addresses_are_refused_by_the_connector_itself() -> None:
    """A literal address never reaches a resolver: the connector judges it, so even a
    request made on the session directly (not through post_webhook) cannot reach it."""
    receiver, port = Receiver(), free_port()
    policy = SsrfPolicy(allow_http=True, allowed_networks=PUBLIC_STAND_IN)
    async with listening(receiver, "127.0.0.1", port), guarded_session(policy) as session:
        for url in (f"http://127.0.0.1:{port}/hook", f"http://2130706433:{port}/hook"):
            with pytest.raises(TargetRefused, match="loopback"):
                await session.post(url, data=BODY)
    assert receiver.hits["hook"] == 0


async def test_http_is_refused_unless_allowed() -> None:
    receiver, port = Receiver(), free_port()
    url = f"http://127.0.0.2:{port}/hook"
    async with listening(receiver, "127.0.0.2", port):
        async with guarded_session(SsrfPolicy(allowed_networks=PUBLIC_STAND_IN)) as session:
            with pytest.raises(TargetRefused) as refused:
                await post_webhook(session, url, BODY, {}, timeout=5)
            assert refused.value.setting == ALLOW_HTTP_SETTING
            with pytest.raises(TargetRefused, match=ALLOW_HTTP_SETTING):
                await session.post(url, data=BODY)
        assert receiver.hits["hook"] == 0
        allowed = SsrfPolicy(allow_http=True, allowed_networks=PUBLIC_STAND_IN)
        async with guarded_session(allowed) as session:
            assert (await post_webhook(session, url, BODY, {}, timeout=5)).status == 200
    assert receiver.hits["hook"] == 1


async def test_redirects_are_answers_not_followed() -> None:
    receiver, port = Receiver(), free_port()
    policy = SsrfPolicy(allow_http=True, allowed_networks=PUBLIC_STAND_IN)
    async with listening(receiver, "127.0.0.2", port), guarded_session(policy) as session:
        answer = await post_webhook(session, f"http://127.0.0.2:{port}/moved", BODY, {}, timeout=5)
    assert answer.status == 302
    assert (receiver.hits["moved"], receiver.hits["elsewhere"]) == (1, 0)


async def test_a_large_answer_is_read_up_to_the_cap_and_kept_as_a_short_excerpt() -> None:
    receiver, port = Receiver(), free_port()
    policy = SsrfPolicy(allow_http=True, allowed_networks=PUBLIC_STAND_IN)
    async with listening(receiver, "127.0.0.2", port), guarded_session(policy) as session:
        large = await post_webhook(session, f"http://127.0.0.2:{port}/large", BODY, {}, timeout=10)
        small = await post_webhook(session, f"http://127.0.0.2:{port}/hook", BODY, {}, timeout=5)
    assert (large.status, large.truncated) == (200, True)
    assert large.excerpt == "x" * 1024
    assert (small.status, small.truncated, small.excerpt) == (200, False, "ok")
    assert small.latency_seconds > 0


async def test_tls_goes_to_the_checked_address_with_the_name_as_sni_and_host(
    tmp_path: Path,
) -> None:
    """A real TLS receiver on 127.0.0.1 whose certificate names localhost: the connection
    is made to the address the system resolver gave and the guard checked, while the
    handshake (SNI, certificate check) and the Host header use the URL's name."""
    files = make_tls_files(tmp_path / "tls")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(files.cert, files.key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: names.append(name)
    client_tls = ssl.create_default_context(cafile=str(files.ca))
    receiver, port = Receiver(), free_port()
    url = f"https://localhost:{port}/hook"
    async with listening(receiver, "127.0.0.1", port, tls=server_tls):
        async with guarded_session(SsrfPolicy(allowed_networks=LOOPBACK), tls=client_tls) as s:
            answer = await post_webhook(s, url, BODY, {}, timeout=5)
        async with guarded_session(SsrfPolicy(), tls=client_tls) as s:
            with pytest.raises(TargetRefused, match="loopback"):
                await post_webhook(s, url, BODY, {}, timeout=5)
    assert (answer.status, answer.excerpt) == (200, "ok")
    assert names == ["localhost"]
    assert receiver.hosts == [f"localhost:{port}"]


async def test_a_session_without_the_guard_is_not_used() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TypeError, match="guarded_connector"):
            await post_webhook(session, "https://hooks.example.com/", BODY, {}, timeout=5)

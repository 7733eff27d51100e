"""Where a webhook may be sent: the guard against server-side request forgery (SSRF).

A webhook URL is chosen by whoever registers the endpoint, and the notify worker POSTs to
it from inside the cluster. Unguarded, a URL could reach the cloud's metadata service
(``169.254.169.254``: the node's credentials), a service of the cluster or the worker's own
loopback. So:

- **scheme**: ``https`` only; ``http`` too where ``PULSE_WEBHOOK_ALLOW_HTTP`` is true (local
  development: ``make run``, tests).
- **addresses**: every address a target resolves to must be public. One refused address
  refuses the target (a name that answers with a public and an internal address is no safer
  than the internal one). :data:`REFUSED_NETWORKS` lists the refused ranges; behind it the
  standard library's verdict (``not is_global``, ``is_reserved``, ``is_multicast``) refuses
  whatever the list misses. IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) and the NAT64
  well-known prefix (``64:ff9b::a.b.c.d``, the form DNS64 gives IPv4-only names) are judged
  by the IPv4 address they carry. ``PULSE_WEBHOOK_ALLOWED_NETWORKS`` (CIDRs) lets chosen
  networks through anyway: ``make run`` allows loopback for receivers on the developer's
  machine.
- **literal URLs** are judged without resolving (:func:`check_url`): at registration
  (``pulse webhooks add``) and again before each request. Hosts that ``getaddrinfo`` would
  read as an IPv4 address (``2130706433``, ``127.1``, ``0x7f.1``) count as literal;
  ``localhost`` and ``*.localhost`` as loopback.
- **names** are resolved at delivery, by the connection itself (:func:`guarded_connector`):
  its resolver checks every address of the answer and the connection is made to those very
  addresses, so there is no second lookup for a rebinding DNS server to answer differently.
  No DNS cache: each new connection resolves again. TLS still verifies the certificate
  against the URL's host name (SNI and ``Host`` are the name, not the address).
- **the request** (:func:`post_webhook`): redirects are not followed (a 3xx is the answer);
  the response body is read up to :attr:`SsrfPolicy.max_response_bytes` (64 KiB) and an
  excerpt of :attr:`SsrfPolicy.excerpt_bytes` (1 KiB) kept; no compressed answers are asked
  for or inflated; proxies from the environment are not used.

A refused target raises :class:`TargetRefused` (a :class:`~pulse.errors.PermanentError`:
retrying cannot help), whose message names the reason and the setting that would allow it.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pulse.errors import PermanentError
from pulse.settings import comma_separated

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aiohttp.abc import ResolveResult
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

__all__ = [
    "ALLOWED_NETWORKS_SETTING",
    "ALLOW_HTTP_SETTING",
    "REFUSED_NETWORKS",
    "GuardedConnector",
    "SsrfPolicy",
    "TargetRefused",
    "WebhookResponse",
    "WebhookTargetSettings",
    "check_url",
    "guarded_connector",
    "post_webhook",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ALLOW_HTTP_SETTING: Final = "PULSE_WEBHOOK_ALLOW_HTTP"
ALLOWED_NETWORKS_SETTING: Final = "PULSE_WEBHOOK_ALLOWED_NETWORKS"


def _ranges(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), what) for net, what in pairs)


# The refused ranges, most specific first (the first match names the reason). Where the
# standard library falls short on Python 3.11 (192.0.0.0/24, 2002::/16, fec0::/10,
# 64:ff9b:1::/48 and 3fff::/20 count as global there), this list decides.
REFUSED_NETWORKS: Final = _ranges(
    ("0.0.0.0/8", "unspecified ('this network': 0.0.0.0 reaches the host itself)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT, RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.169.254/32", "the cloud metadata service (link-local)"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated (SIIT)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/23", "IETF protocol assignments (Teredo, ORCHID, …)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4 (deprecated; carries an IPv4 address)"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique local (private, fd00:ec2::254 is AWS's metadata service)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
# Forms of IPv6 that carry an IPv4 address and reach it: judged by that address.
_IPV4_MAPPED: Final = IPv6Network("::ffff:0:0/96")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_LOCALHOST: Final = (IPv4Address("127.0.0.1"), IPv6Address("::1"))

MAX_RESPONSE_BYTES: Final = 64 * 1024
EXCERPT_BYTES: Final = 1024


class TargetRefused(PermanentError):  # noqa: N818 - the interface's name: a refusal, not a bug
    """A webhook target the policy refuses: ``reason`` says why, ``setting`` (if any) is the
    setting that would allow it."""

    def __init__(self, reason: str, setting: str | None = None) -> None:
        self.reason = reason
        self.setting = setting
        super().__init__(f"{reason}; {_advice(setting)}" if setting else reason)


def _advice(setting: str) -> str:
    if setting == ALLOW_HTTP_SETTING:
        return f"{ALLOW_HTTP_SETTING}=true would allow it (for development only)"
    return f"listing its network in {setting} would allow it"


class WebhookTargetSettings(BaseSettings):
    """The guard's settings (``PULSE_WEBHOOK_*``): read by the notify worker and by
    ``pulse webhooks add``."""

    model_config = SettingsConfigDict(
        env_prefix="PULSE_", frozen=True, extra="ignore", populate_by_name=True
    )

    # PULSE_WEBHOOK_ALLOW_HTTP: also plain http:// targets (development only).
    webhook_allow_http: bool = False
    # PULSE_WEBHOOK_ALLOWED_NETWORKS: comma-separated CIDRs let through although refused
    # (e.g. 127.0.0.0/8,::1/128 for receivers on this machine, 10.1.2.0/24 for one inside).
    webhook_allowed_networks: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        parts = comma_separated(value)
        if not isinstance(parts, tuple):
            return parts
        networks = []
        for part in parts:
            try:
                networks.append(ipaddress.ip_network(part))
            except ValueError as exc:
                raise ValueError(f"{part!r} is not a network such as 10.1.2.0/24: {exc}") from exc
        return tuple(networks)


@dataclass(frozen=True)
class SsrfPolicy:
    """What may be reached: http or not, networks let through, and how much of an answer is
    read."""

    allow_http: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    max_response_bytes: int = MAX_RESPONSE_BYTES
    excerpt_bytes: int = EXCERPT_BYTES

    @classmethod
    def from_settings(cls, settings: WebhookTargetSettings) -> SsrfPolicy:
        return cls(settings.webhook_allow_http, settings.webhook_allowed_networks)

    @property
    def schemes(self) -> frozenset[str]:
        return frozenset({"https", "http"} if self.allow_http else {"https"})

    def _allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allowed_networks)

    def refusal(self, address: IPAddress | str) -> str | None:
        """Why ``address`` may not be reached ("127.0.0.1 is loopback, in 127.0.0.0/8"), or
        None if it may."""
        ip = _address(address) if isinstance(address, str) else address
        if self._allowed(ip):
            return None
        if isinstance(ip, IPv6Address) and (ip in _IPV4_MAPPED or ip in _NAT64):
            inner = IPv4Address(int(ip) & 0xFFFFFFFF)
            why = self.refusal(inner)
            return None if why is None else f"{ip} carries an IPv4 address: {why}"
        for network, what in REFUSED_NETWORKS:
            if ip in network:
                return f"{ip} is {what}, in {network}"
        if not ip.is_global or ip.is_reserved or ip.is_multicast:
            return f"{ip} is not a public address"
        return None


def _address(text: str) -> IPAddress:
    """An address as a resolver gives it (an IPv6 zone, ``fe80::1%eth0``, is dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def _literal(host: str) -> tuple[IPAddress, ...] | None:
    """The addresses a host stands for without DNS: an IP literal (also the IPv4 forms
    ``getaddrinfo`` accepts), or loopback for ``localhost``; None for a name to resolve."""
    bare = host.rstrip(".").lower()
    if bare == "localhost" or bare.endswith(".localhost"):
        return _LOCALHOST
    try:
        return (_address(bare),)
    except ValueError:
        pass
    if ":" in bare or not bare:
        return None
    try:  # 2130706433, 127.1, 0x7f.1: what inet_aton (and getaddrinfo) read as IPv4
        return (IPv4Address(socket.inet_aton(bare)),)
    except OSError:
        return None


def check_url(url: str, policy: SsrfPolicy) -> None:
    """Raise :class:`TargetRefused` if ``url`` is refused without resolving it: its scheme,
    a missing host, or a literal address (or ``localhost``) in a refused range."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a port that is not a number is a ValueError
    except ValueError as exc:
        raise TargetRefused(f"not a URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        if scheme == "http":
            raise TargetRefused("http:// is refused (https only)", ALLOW_HTTP_SETTING)
        raise TargetRefused(f"{scheme or 'no'} scheme: webhooks go to https:// URLs only")
    if not host:
        raise TargetRefused("the URL names no host")
    for address in _literal(host) or ():
        why = policy.refusal(address)
        if why is not None:
            raise TargetRefused(why, ALLOWED_NETWORKS_SETTING)


class _GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and refuses the answer if any address in it is refused."""

    def __init__(self, policy: SsrfPolicy, inner: AbstractResolver) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = await self._inner.resolve(host, port, family)
        for result in answer:
            why = self._policy.refusal(result["host"])
            if why is not None:
                raise TargetRefused(
                    f"{host} resolves to a refused address: {why}", ALLOWED_NETWORKS_SETTING
                )
        return answer

    async def close(self) -> None:
        await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector that reaches only what its policy allows (:func:`guarded_connector`)."""

    def __init__(
        self, policy: SsrfPolicy, *, resolver: AbstractResolver | None = None, ssl: Any = True
    ) -> None:
        super().__init__(
            resolver=_GuardedResolver(policy, resolver or ThreadedResolver()),
            use_dns_cache=False,
            ssl=ssl,
        )
        self.policy = policy

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> Connection:
        # A literal address never reaches the resolver: it is judged here, with the scheme.
        check_url(str(req.url), self.policy)
        return await super().connect(req, traces, timeout)


def guarded_connector(
    policy: SsrfPolicy, *, resolver: AbstractResolver | None = None, ssl: Any = True
) -> GuardedConnector:
    """The connector of a webhook session: names resolved at connect time (``resolver``,
    the system's by default), each address checked, the connection made to the checked
    address. ``ssl`` as aiohttp's (tests pass a context trusting their own CA)."""
    return GuardedConnector(policy, resolver=resolver, ssl=ssl)


@dataclass(frozen=True)
class WebhookResponse:
    """A receiver's answer: its status, the time from request to the end of what was read,
    the first bytes of its body (decoded, capped) and whether the body went on past the
    read cap."""

    status: int
    latency_seconds: float
    excerpt: str
    truncated: bool


async def post_webhook(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: aiohttp.ClientTimeout | float,  # noqa: ASYNC109 - aiohttp's, per request
    policy: SsrfPolicy | None = None,
) -> WebhookResponse:
    """POST ``body`` to ``url`` through ``session`` (built on :func:`guarded_connector`;
    ``policy`` defaults to its connector's): no redirects followed, the answer read up to
    the policy's cap. Raises :class:`TargetRefused`, or aiohttp's errors and TimeoutError."""
    connector = session.connector
    if not isinstance(connector, GuardedConnector):
        raise TypeError("webhooks are sent through a session on guarded_connector()")
    if policy is None:
        policy = connector.policy
    check_url(url, policy)
    if not isinstance(timeout, aiohttp.ClientTimeout):
        timeout = aiohttp.ClientTimeout(total=timeout)
    start = time.perf_counter()
    async with session.post(
        url,
        data=body,
        headers={**headers, "accept-encoding": "identity"},
        timeout=timeout,
        allow_redirects=False,
        auto_decompress=False,
    ) as response:
        read = await _read_at_most(response.content, policy.max_response_bytes + 1)
        truncated = len(read) > policy.max_response_bytes
        if truncated:
            response.close()  # the rest is not read: the connection is not reused
    return WebhookResponse(
        status=response.status,
        latency_seconds=time.perf_counter() - start,
        excerpt=read[: policy.excerpt_bytes].decode("utf-8", errors="replace"),
        truncated=truncated,
    )


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    got = bytearray()
    while len(got) < limit:
        chunk = await content.read(limit - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)

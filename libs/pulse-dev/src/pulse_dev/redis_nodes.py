"""Real ``redis-server`` processes for tests: one node (:class:`RedisNode`) and its TLS files.

A node runs Debian's ``redis-server`` 7 on 127.0.0.1 and a port picked at run time, from a
config file in a directory of its own; it keeps nothing on disk but what cluster and
sentinel state need. Every node still running when the interpreter exits is killed.
:mod:`pulse_dev.redis_servers` builds clusters and sentinel groups out of them.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import quote

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pulse_dev.emulators import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

__all__ = [
    "CLUSTER_NODE_TIMEOUT_MS",
    "RedisNode",
    "TlsFiles",
    "make_tls_files",
    "redis_server_path",
    "start_node",
    "wait_until",
]

HOST: Final = "127.0.0.1"
# Short enough that a killed master is failed over within a few seconds.
CLUSTER_NODE_TIMEOUT_MS: Final = 1500
_START_ATTEMPTS: Final = 3  # a free port can be taken by someone else before the node binds

_running: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_running):
        with contextlib.suppress(OSError):
            process.kill()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """``predicate()``'s first truthy value, polled; a Redis error counts as not yet.

    Raises TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if value := predicate():
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout}s")
        time.sleep(0.1)


def redis_server_path() -> str:
    """The ``redis-server`` binary; raises RuntimeError saying how to install it."""
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "redis-server (Redis 7) is not installed: run 'apt-get install redis-server' "
            "(or 'make unit', which installs it) to run the Redis cluster and sentinel tests"
        )
    return found


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and of a server certificate it signed, and its key."""

    ca: Path
    cert: Path
    key: Path

    def config_lines(self) -> list[str]:
        """Redis config naming these files; clients need no certificate of their own."""
        return [
            f"tls-cert-file {self.cert}",
            f"tls-key-file {self.key}",
            f"tls-ca-cert-file {self.ca}",
            "tls-auth-clients no",
            "tls-replication yes",
        ]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_tls_files(directory: Path) -> TlsFiles:
    """A new CA and a server certificate for 127.0.0.1 and localhost, valid for a week,
    written to ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Pulse test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(HOST))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.crt", directory / "redis.crt", directory / "redis.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(_pem_key(key))
    files.key.chmod(0o600)
    return files


@dataclass(eq=False)
class RedisNode:
    """One ``redis-server`` process (a data node or, with ``sentinel``, a sentinel).

    ``password`` is what clients of this node must send (``requirepass``); ``tls`` makes it
    listen on TLS only. :meth:`kill` is a crash (SIGKILL); :meth:`restart` starts it again
    on the same port from the config and state it left in its directory."""

    host: str
    port: int
    process: subprocess.Popen[bytes] | None
    directory: Path
    password: str | None = None
    tls: TlsFiles | None = None
    sentinel: bool = False
    bus_port: int | None = None  # the cluster bus, for cluster nodes
    _clients: list[redis.Redis] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        """``redis://`` (``rediss://`` with TLS), with the password when there is one."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **options: Any) -> redis.Redis:
        """A synchronous client of this node (TLS with the CA, the password, replies
        decoded), closed when the node stops; the same one unless ``options`` override
        redis-py's."""
        if not options and self._clients:
            return self._clients[0]
        settings: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "password": self.password,
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
            "decode_responses": True,
        }
        if self.tls:
            settings |= {"ssl": True, "ssl_ca_certs": str(self.tls.ca)}
        client = redis.Redis(**(settings | options))
        if options:
            self._clients.append(client)
        else:
            self._clients.insert(0, client)
        return client

    def start(self, timeout: float = 15.0, options: Sequence[str] = ()) -> Self:
        """Run the process (``options`` added to its config, as ``--name value`` arguments)
        and wait until it answers PING; raises RuntimeError with the end of its log if it
        exits first."""
        argv = [redis_server_path(), str(self.directory / "redis.conf"), *options]
        if self.sentinel:
            argv.append("--sentinel")
        self.process = subprocess.Popen(  # noqa: S603 - the redis-server binary we located
            argv,
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _running.add(self.process)
        probe = self.client(socket_timeout=0.5, socket_connect_timeout=0.5)

        def answers() -> bool:
            if not self.alive:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server on port {self.port} exited:\n{log[-2000:]}")
            return bool(probe.ping())

        try:
            wait_until(answers, timeout, f"redis-server on port {self.port} answering")
        except (RuntimeError, TimeoutError):
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits for the process to be gone."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            _running.discard(self.process)

    def restart(self, timeout: float = 15.0) -> Self:
        """Kill the process if it still runs, then start it again on the same port."""
        self.kill()
        return self.start(timeout)


def _config(node: RedisNode, lines: Sequence[str]) -> str:
    listen = (
        [f"tls-port {node.port}", "port 0", *node.tls.config_lines()]
        if node.tls
        else [f"port {node.port}"]
    )
    auth = [f'requirepass "{node.password}"', f'masterauth "{node.password}"']
    cluster = [
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}",
        f"cluster-port {node.bus_port}",
    ]
    return "\n".join(
        [
            f"bind {node.host}",
            *listen,
            f"dir {node.directory}",
            "logfile redis.log",
            'save ""',
            "appendonly no",
            # a replica's sync starts at once (not after Redis's 5 s wait for others): the
            # window in which a restarted replica holds nothing stays short
            "repl-diskless-sync-delay 0",
            *(auth if node.password else []),
            *(cluster if node.bus_port else []),
            *(["tls-cluster yes"] if node.bus_port and node.tls else []),
            *lines,
            "",
        ]
    )


def start_node(
    directory: Path,
    lines: Sequence[str] = (),
    *,
    password: str | None = None,
    tls: TlsFiles | None = None,
    sentinel: bool = False,
    cluster: bool = False,
) -> RedisNode:
    """A node on free ports with its config (the common settings, then ``lines``) in
    ``directory``, up and answering. ``password`` is ``requirepass`` and ``masterauth``;
    ``cluster`` makes it a cluster node with a bus port of its own."""
    redis_server_path()
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(_START_ATTEMPTS):
        node = RedisNode(
            HOST,
            free_port(),
            None,
            directory,
            password=password,
            tls=tls,
            sentinel=sentinel,
            bus_port=free_port() if cluster else None,
        )
        (directory / "redis.conf").write_text(_config(node, lines))
        try:
            return node.start()
        except RuntimeError:
            if attempt == _START_ATTEMPTS - 1:
                raise
    raise AssertionError  # unreachable: the last attempt returns or raises

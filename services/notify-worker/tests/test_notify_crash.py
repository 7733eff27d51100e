"""kill -9 of a notify worker inside its handler: the message comes back, one notification.

The worker talks to Redis through a TCP proxy run by the test. The proxy relays every
connection untouched until a client sends the command that appends the notification to the
account's channel (the command names the channel's history key); then it stalls that one
connection, either before the command reaches Redis or after Redis ran it but before the
reply gets back. The worker is then paused at a known point of the handler, its heartbeat
still running on its other connections, and is killed there with SIGKILL. A second worker,
talking to Redis directly, gets the message again once its visibility and the idempotency
lease run out, and the account channel ends with the notification exactly once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from yarl import URL

from pulse.channels import ChannelKeys, account_channel
from pulse.clients import aws_client
from pulse.events import NOTIFICATION, stable_event_id
from pulse.idempotency import idempotency_record_key
from pulse.settings import PulseSettings
from pulse.topology import TopologyOutputs
from pulse_dev.testing import (
    FAST_REDELIVERY_ENV,
    channel_history,
    free_port,
    payment_updated,
    queue_depth,
    until,
    updated_payment,
)

pytestmark = pytest.mark.timeout(90)


class StallingRedisProxy:
    """Relays TCP to Redis; stalls the connection whose command contains ``marker``.

    ``forward``: whether the stalled command reaches Redis (its reply never comes back) or
    not (it never runs). Only the first command with the marker is stalled.
    """

    def __init__(self, upstream: tuple[str, int], marker: bytes, *, forward: bool) -> None:
        self.upstream = upstream
        self.marker = marker
        self.forward = forward
        self.stalled = threading.Event()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            replies_held = threading.Event()
            threading.Thread(
                target=self._commands, args=(client, server, replies_held), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(server, client, replies_held), daemon=True
            ).start()

    def _commands(
        self, src: socket.socket, dst: socket.socket, replies_held: threading.Event
    ) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if not self.stalled.is_set() and self.marker in tail + chunk:
                    if self.forward:
                        replies_held.set()
                        dst.sendall(chunk)
                    self.stalled.set()
                    self._closing.wait()  # this connection says nothing more
                    return
                dst.sendall(chunk)
                tail = chunk[-len(self.marker) :]
        self._shut(dst)

    def _replies(
        self, src: socket.socket, dst: socket.socket, replies_held: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if replies_held.is_set():
                    self._closing.wait()
                    return
                dst.sendall(chunk)
        self._shut(dst)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        for sock in self._sockets:
            self._shut(sock)
            sock.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.parametrize("forward", [False, True], ids=["before-the-append", "after-the-append"])
def test_a_worker_killed_inside_the_handler_is_replaced_and_notifies_once(
    forward: bool,
    topology: TopologyOutputs,
    stack_settings: PulseSettings,
    service_process: Any,
    redis_client: redis.Redis,
) -> None:
    account = f"acct-crash-{forward}"
    channel = account_channel(account)
    keys = ChannelKeys(stack_settings.redis_prefix)
    history_key = keys.history(channel)
    event = payment_updated(
        updated_payment(account_id=account, payment_id="p-crash"), event_id=f"ev-crash-{forward}"
    )
    guard_key = idempotency_record_key(stack_settings.redis_prefix, "notify", event.id)
    sqs = aws_client("sqs", stack_settings)
    queue_url = topology.queue_urls[stack_settings.names.notify_queue]

    upstream = URL(stack_settings.redis_url)
    proxy = StallingRedisProxy(
        (upstream.host or "127.0.0.1", upstream.port or 6379), history_key.encode(), forward=forward
    )
    try:
        port = free_port()
        first = service_process(
            "notify_worker",
            REDIS_URL=str(upstream.with_port(proxy.port)),
            PULSE_HTTP_PORT=str(port),
            **FAST_REDELIVERY_ENV,
        ).start(wait_port=port)
        sqs.send_message(QueueUrl=queue_url, MessageBody=event.to_json().decode())
        assert proxy.stalled.wait(30), first.logs()[-3000:]
        # Paused inside the handler: the guard is held, the append ran or not as chosen.
        until(lambda: redis_client.xlen(history_key) == (1 if forward else 0))
        assert redis_client.hget(guard_key, "state") == b"in_progress"
        first.kill()
    finally:
        proxy.close()

    port = free_port()
    second = service_process("notify_worker", PULSE_HTTP_PORT=str(port), **FAST_REDELIVERY_ENV)
    second.log_path = second.log_path.with_name("notify_worker-2.log")
    second.start(wait_port=port)
    until(lambda: redis_client.hget(guard_key, "state") == b"completed")

    until(lambda: queue_depth(sqs, queue_url) == 0)
    time.sleep(2.5)  # longer than the visibility timeout: no late redelivery adds anything
    entries = channel_history(redis_client, stack_settings.redis_prefix, channel)
    assert [(e["type"], e["id"]) for e in entries] == [
        (NOTIFICATION, stable_event_id(event.id, "notification"))
    ]
    lines = [orjson.loads(line) for line in second.logs().splitlines() if line[:1] == "{"]
    channel_sends = [
        line["event"]
        for line in lines
        if line.get("notifier") == "AccountChannelNotifier" and line.get("event_id") == event.id
    ]
    # Before the append the second worker appends; after it, it finds the append done.
    assert channel_sends == [
        "notification not sent (sent before or no destination)" if forward else "notification sent"
    ]
    assert second.stop() == 0

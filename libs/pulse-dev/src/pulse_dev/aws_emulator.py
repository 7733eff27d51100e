"""The local AWS emulator: moto's server application behind waitress.

``python -m pulse_dev.aws_emulator --port 4566`` serves the same moto application as
``moto_server``, but through waitress instead of werkzeug's development server. Werkzeug closes
the connection after every response and starts a thread per connection, so each SDK call pays
a TCP handshake and a thread start inside the emulator's one interpreter; waitress keeps
connections alive and serves them from a fixed thread pool. Measured on the end-to-end benchmark,
that is the difference between the emulator saturating at about 30 payments/s and keeping up
with 50. All state stays in this one process, as moto requires.

The tables' streams are not moto's one shard that never closes: they have shards that close
and split, iterators that expire and records trimmed after the retention window, as DynamoDB
Streams has (:mod:`pulse_dev.stream_emulation`; flags ``--stream-shards``,
``--stream-split-seconds``, ``--stream-iterator-seconds``, ``--stream-retention-seconds``
and the route ``POST /_pulse/streams/split``). The defaults keep one shard that never splits.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from pulse.collector import BATCH_YOUNG_THRESHOLD, settle_collector
from pulse_dev.stream_emulation import (
    StreamAdmin,
    add_stream_arguments,
    install_sharded_streams,
    shape_from_arguments,
    start_split_schedule,
)

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["QueueAttributesView", "has_params_under", "main", "read_attribute_values_directly"]


def _stop(_signum: int, _frame: FrameType | None) -> None:
    # At once: everything is in memory, nothing to flush; a clean waitress shutdown would
    # wait up to 5 s for the request threads that SQS long polls hold.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _read_retention_directly() -> None:
    """Make moto's ReceiveMessage linear in queue depth instead of quadratic.

    For every message it hands out, moto checks the retention period through
    ``get_queue_attributes``, which computes every attribute of the queue — including the
    approximate message counts, each a pass over all messages. Reading the one attribute
    directly gives the same answer.
    """
    from moto.core.utils import unix_time  # noqa: PLC0415
    from moto.sqs.models import Message, SQSBackend  # noqa: PLC0415

    def retained(self: SQSBackend, queue_name: str, message: Message) -> bool:
        queue = self.get_queue(queue_name)
        retention = int(queue.message_retention_period)  # type: ignore[attr-defined]
        return bool(retention + (message.sent_timestamp or 0) / 1000 > unix_time())

    SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]


_sending = threading.local()


def _send_without_counting_messages() -> None:
    """Make moto's SendMessage (and so SNS's fan-out to SQS) constant-time in queue depth.

    Sending reads ``queue.attributes`` only for ``ContentBasedDeduplication``, but that
    property computes every attribute, including the three approximate message counts, each
    a pass over all messages with a clock read per message: publishing to a topic whose
    subscribed queue held 4,000 messages ran at under 20 messages/s. While a send is in
    progress on a thread, ``attributes`` is a view that computes only the values read (the
    same values); every other caller (GetQueueAttributes) gets moto's dict as before.
    """
    from moto.sqs.models import Queue, SQSBackend  # noqa: PLC0415

    full_attributes = Queue.attributes
    send_message = SQSBackend.send_message

    def attributes(self: Queue) -> Mapping[str, Any]:
        if getattr(_sending, "active", False):
            return QueueAttributesView(self)
        return full_attributes.fget(self)  # type: ignore[attr-defined,no-any-return]

    def send(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        _sending.active = True
        try:
            return send_message(self, *args, **kwargs)
        finally:
            _sending.active = False

    Queue.attributes = property(attributes)  # type: ignore[method-assign,assignment]
    SQSBackend.send_message = send  # type: ignore[method-assign]


class QueueAttributesView(Mapping[str, Any]):
    """moto's ``Queue.attributes`` with each value computed when it is read.

    The same names and values as the property's dict: the base attributes, the FIFO ones
    for a FIFO queue, the KMS ones for an encrypted queue; booleans as ``"true"`` /
    ``"false"``, the redrive policy as JSON.
    """

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def _names(self) -> list[str]:
        queue = self._queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        return names

    def __getitem__(self, name: str) -> Any:
        from moto.core.utils import camelcase_to_underscores  # noqa: PLC0415

        if name not in self._names():
            raise KeyError(name)
        queue = self._queue
        if name == "RedrivePolicy" and queue.redrive_policy:
            return json.dumps(queue.redrive_policy)
        value = getattr(queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def _fetch_backends_without_locking() -> None:
    """Look up an existing account's backends without taking moto's global lock.

    ``BackendDict[account]`` takes the process-wide ``backend_lock`` on every call just to
    see whether the account's backends exist; SNS's fan-out does that several times per
    message, and with the emulator's request threads publishing at once they queue on that
    lock. An account that is already there is returned directly (the lock still guards the
    creation of a new one, as in moto).
    """
    from moto.core.base_backend import BackendDict  # noqa: PLC0415

    create = BackendDict.__getitem__

    def getitem(self: BackendDict[Any], account_id: str) -> Any:
        try:
            return dict.__getitem__(self, account_id)
        except KeyError:
            return create(self, account_id)

    BackendDict.__getitem__ = getitem  # type: ignore[method-assign]


def _lock_sqs_receives() -> None:
    """Hand a visible SQS message to one receiver only, as SQS does.

    moto's ``receive_message`` checks a message's visibility and marks it received without a
    lock, and the emulator serves requests from a pool of threads: two receives on one queue
    at once can both take the same message, so a FIFO message reaches two consumers at once
    (seen: 1 in 2,000 receives with eight threads). Each scan of the queue runs under a lock;
    the long-poll wait happens outside it, so waiting consumers do not block each other.
    """
    from moto.sqs.models import SQSBackend  # noqa: PLC0415

    lock = threading.Lock()
    receive = SQSBackend.receive_message

    def receive_message(  # noqa: PLR0917 - moto's signature, called positionally
        self: SQSBackend,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        queue = self.get_queue(queue_name)
        while True:
            with lock:
                got = receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                return got
            queue.wait_for_messages(min(1.0, remaining))  # type: ignore[arg-type]

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def _answer_missing_actions_as_not_implemented() -> None:
    """Answer an action moto does not implement with ``501 NotImplemented``, not a crash.

    moto raises ``NotImplementedError``, which its server turns into a bare 500 — what a
    client must take for a transient fault and retry. 501 with the error code
    ``NotImplemented`` (an AWS error document in the request's protocol) says what it is:
    a client can tell "this endpoint lacks the action" (``pulse dlq redrive`` then moves the
    messages itself, as it would for another emulator answering ``InvalidAction``) from a
    failure, and botocore does not retry it.
    """
    from moto.core.responses import BaseResponse  # noqa: PLC0415

    call_action = BaseResponse.call_action

    def answered(self: BaseResponse) -> Any:
        try:
            return call_action(self)
        except NotImplementedError as exc:
            return _not_implemented(self, str(exc))

    BaseResponse.call_action = answered  # type: ignore[method-assign]


def _not_implemented(response: Any, message: str) -> tuple[int, dict[str, str], str]:
    """A 501 ``NotImplemented`` error in the protocol of ``response``'s request."""
    content_type = str(response.headers.get("Content-Type", ""))
    if "json" in content_type:
        headers = {
            "Content-Type": content_type,
            "x-amzn-query-error": "NotImplemented;Sender",  # SQS's JSON protocol reads it
        }
        return 501, headers, json.dumps({"__type": "NotImplemented", "message": message})
    body = (
        "<ErrorResponse><Error><Type>Sender</Type><Code>NotImplemented</Code>"
        f"<Message>{escape(message)}</Message></Error></ErrorResponse>"
    )
    return 501, {"Content-Type": "text/xml"}, body


def _serialise_dynamodb_writes() -> None:
    """Make each DynamoDB write atomic, as DynamoDB's are.

    moto evaluates a write's condition and then writes the item, without a lock: two
    conditional writes to one item from two request threads can both pass their condition
    (two ``PutItem``s with ``attribute_not_exists``, two decisions from ``PENDING``). Writes
    run one at a time; reads are not locked.
    """
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415

    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        @functools.wraps(original)
        def locked(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(*args, **kwargs)

        setattr(DynamoDBBackend, name, locked)


def has_params_under(sorted_keys: list[str], prefix: str) -> bool:
    """Does any key of ``sorted_keys`` (sorted) start with ``prefix``? One bisection."""
    at = bisect.bisect_left(sorted_keys, prefix)
    return at < len(sorted_keys) and sorted_keys[at].startswith(prefix)


def _parse_query_forms_by_bisection() -> None:
    """Make moto's Query-protocol parser (SNS, SQS's query form) linear in the form's size.

    For every structure it parses (each batch entry, each message attribute), moto asks
    whether any form key starts with the structure's prefix by walking every key of the
    request — through werkzeug's ``CombinedMultiDict``, which builds a set of its keys per
    walk. A ``PublishBatch`` of ten messages with five attributes each has some 170 keys
    and parses about 70 structures: a quadratic share of the emulator's time per message.
    The keys are sorted once per request and each question is one bisection (the same
    answer: a plain string prefix test, as moto's).
    """
    from moto.core.parse import QueryParser  # noqa: PLC0415

    def gonna_recurse(self: QueryParser, query_params: Any, prefix: str) -> bool:
        if prefix == "":
            return False
        cached = self.__dict__.get("_pulse_sorted_keys")
        if cached is None or cached[0] is not query_params:
            cached = self.__dict__["_pulse_sorted_keys"] = (query_params, sorted(query_params))
        return not has_params_under(cached[1], prefix)

    QueryParser._gonna_recurse = gonna_recurse  # type: ignore[method-assign]  # noqa: SLF001


_PLAIN_ATTRIBUTE_TYPES = frozenset({"S", "N", "BOOL", "NULL"})
_SET_ATTRIBUTE_TYPES = frozenset({"SS", "NS"})
# Where read_attribute_values_directly keeps moto's own methods, for what it leaves to them.
_MOTO_PARSE_STRUCTURE = "_pulse_moto_parse_structure"
_MOTO_PARSE_MAP = "_pulse_moto_parse_map"


def _attribute_value(parser: Any, shape: Any, value: Any) -> Any:
    """What moto's walk makes of one ``AttributeValue``, read directly where it can be."""
    if type(value) is not dict or len(value) != 1:
        return getattr(type(parser), _MOTO_PARSE_STRUCTURE)(parser, shape, value)
    ((kind, raw),) = value.items()
    if raw is None:
        content = None
    elif kind in _PLAIN_ATTRIBUTE_TYPES:
        content = raw
    elif kind == "M" and type(raw) is dict:
        content = _attribute_map(parser, shape, raw)
    elif kind == "L" and type(raw) is list:
        content = [_attribute_value(parser, shape, member) for member in raw]
    elif kind in _SET_ATTRIBUTE_TYPES and type(raw) is list:
        content = list(raw)
    else:
        content = None
    if content is None:
        return getattr(type(parser), _MOTO_PARSE_STRUCTURE)(parser, shape, value)
    parsed = parser.MAP_TYPE()
    parsed[kind] = content
    return parsed


def _attribute_map(parser: Any, shape: Any, value: dict[str, Any]) -> Any:
    parsed = parser.MAP_TYPE()
    for name, member in value.items():
        parsed[name] = _attribute_value(parser, shape, member)
    return parsed


def _parse_structure(parser: Any, shape: Any, value: Any) -> Any:
    if shape.name == "AttributeValue":
        return _attribute_value(parser, shape, value)
    return getattr(type(parser), _MOTO_PARSE_STRUCTURE)(parser, shape, value)


def _parse_map(parser: Any, shape: Any, value: Any) -> Any:
    if (
        shape.value.name == "AttributeValue"
        and shape.key.type_name == "string"
        and type(value) is dict
    ):
        return _attribute_map(parser, shape.value, value)
    return getattr(type(parser), _MOTO_PARSE_MAP)(parser, shape, value)


def read_attribute_values_directly(parser_class: Any) -> None:
    """Make moto's JSON request parser ``parser_class`` read DynamoDB items without walking
    the service model for each attribute.

    moto parses every JSON request by walking the model, and an ``AttributeValue`` is a
    structure of ten members: for each attribute of each item written, a handler lookup
    per map key and value and ten member lookups — a quarter of the emulator's time for a
    ``BatchWriteItem`` of 25 rows. Strings, numbers, booleans and nulls pass through that
    walk unchanged (the JSON parser has no string handler) and maps, lists and sets are
    only copied, so they are copied the same way here; binary values (which moto
    base64-decodes) and anything unusual still take the model walk.
    """
    if _MOTO_PARSE_STRUCTURE in vars(parser_class):
        return
    setattr(parser_class, _MOTO_PARSE_STRUCTURE, parser_class._parse_structure)  # noqa: SLF001
    setattr(parser_class, _MOTO_PARSE_MAP, parser_class._parse_map)  # noqa: SLF001
    parser_class._parse_structure = _parse_structure  # noqa: SLF001
    parser_class._parse_map = _parse_map  # noqa: SLF001


def _parse_attribute_values_directly() -> None:
    from moto.core.parse import JSONParser  # noqa: PLC0415

    read_attribute_values_directly(JSONParser)


# moto's item size limit (LimitedSizeDict): DynamoDB's 400 KB, measured the way moto does.
_ITEM_SIZE_LIMIT = 405_000


def _check_item_size_once() -> None:
    """Make building a DynamoDB item linear in its attributes instead of quadratic.

    moto checks the 400 KB limit as each attribute goes into a new item, summing the
    sizes of every attribute already there each time (the audit row's seven attributes
    are sized 28 times, every string encoded to UTF-8 to be measured). Sizes only add
    up, so one check of the whole item raises exactly when one of those checks would.
    Later writes to an item's attributes keep moto's check.
    """
    from moto.dynamodb.exceptions import ItemSizeTooLarge  # noqa: PLC0415
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict  # noqa: PLC0415
    from moto.dynamodb.models.utilities import bytesize  # noqa: PLC0415

    def init(self: Item, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        values = {key: DynamoType(value) for key, value in attrs.items()}
        if sum(bytesize(key) + value.size() for key, value in values.items()) > _ITEM_SIZE_LIMIT:
            raise ItemSizeTooLarge
        self.attrs = LimitedSizeDict(values)  # its constructor does not check sizes

    Item.__init__ = init  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pulse_dev.aws_emulator",
        description="Serve moto (DynamoDB, Streams, SNS, SQS, SSM …) on one port.",
    )
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("-p", "--port", type=int, default=4566, help="port to bind")
    parser.add_argument(
        "--threads",
        type=int,
        default=32,
        help="request threads; SQS long polls hold one each while they wait",
    )
    add_stream_arguments(parser)
    args = parser.parse_args(argv)
    try:
        shape = shape_from_arguments(args)
    except ValueError as exc:
        parser.error(str(exc))
    os.environ.setdefault("MOTO_PORT", str(args.port))

    # Imported late: moto is large and only this process needs it.
    from moto.moto_server.werkzeug_app import (  # noqa: PLC0415
        DomainDispatcherApplication,
        create_backend_app,
    )
    from waitress import serve  # noqa: PLC0415

    _read_retention_directly()
    install_sharded_streams(shape)
    _send_without_counting_messages()
    _fetch_backends_without_locking()
    _lock_sqs_receives()
    _answer_missing_actions_as_not_implemented()
    _serialise_dynamodb_writes()
    _parse_query_forms_by_bisection()
    _parse_attribute_values_directly()
    _check_item_size_once()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _stop)

    class _Dispatcher(DomainDispatcherApplication):
        """Remembers which backend serves a host: moto works it out again on every request
        by listing its own package directory and trying every URL pattern."""

        def __init__(self) -> None:
            super().__init__(create_backend_app)
            self._backends: dict[str | None, object] = {}

        def get_backend_for_host(self, host: str | None) -> object:
            try:
                return self._backends[host]
            except KeyError:
                backend = self._backends[host] = super().get_backend_for_host(host)
                return backend

    app = StreamAdmin(_Dispatcher())
    start_split_schedule(shape)
    # moto keeps every item, record and message as Python objects; rescanning them was about
    # a tenth of the emulator's CPU while a backlog drained, work AWS never costs a client.
    settle_collector(BATCH_YOUNG_THRESHOLD)
    sys.stdout.write(f"AWS emulator (moto) listening on http://{args.host}:{args.port}\n")
    sys.stdout.flush()
    serve(
        app,
        host=args.host,
        port=args.port,
        threads=args.threads,
        connection_limit=1000,
        channel_timeout=300,
        asyncore_use_poll=True,
        ident="moto",
    )


if __name__ == "__main__":
    main()

"""The emulator's DynamoDB Streams: several shards that close and split, as AWS keeps them.

moto's stream has one shard that never closes and iterators that never expire. The AWS
emulator (:mod:`pulse_dev.aws_emulator`) replaces it: every table with a stream keeps a
:class:`~pulse_dev.stream_store.ShardedStream` fed by moto's item writes, and DescribeStream
(pages, ``ParentShardId``, ``EndingSequenceNumber`` on closed shards), GetShardIterator (all
four iterator types) and GetRecords answer from it, with AWS's error codes
(``ExpiredIteratorException``, ``TrimmedDataAccessException``, ``ResourceNotFoundException``,
``ValidationException``). Records are served as plain JSON: they are already held in wire
format, and moto's serializer walks the model for every attribute (~1 ms per record).

Configuration — flags of ``python -m pulse_dev.aws_emulator``, each defaulting to an
environment variable; the defaults keep one shard that never splits:

====================================  ==========================================  ========
flag                                  environment variable                        default
====================================  ==========================================  ========
``--stream-shards N``                 ``PULSE_EMULATOR_STREAM_SHARDS``            1
``--stream-split-seconds S``          ``PULSE_EMULATOR_STREAM_SPLIT_SECONDS``     0 (never)
``--stream-iterator-seconds S``       ``PULSE_EMULATOR_STREAM_ITERATOR_SECONDS``  900
``--stream-retention-seconds S``      ``PULSE_EMULATOR_STREAM_RETENTION_SECONDS`` 86400
====================================  ==========================================  ========

Every new stream starts with N open shards of equal partition-key hash ranges; every S
seconds each stream's widest open shard splits in two. A test splits now with
``POST /_pulse/streams/split`` (:func:`split_shards`), a JSON body of optional ``table``
(a table name: only its stream), ``shard_id`` (that open shard rather than the widest) and
``children`` (2, or 1 for a roll-over); the answer is ``{"splits": [{"table", "stream_arn",
"parent", "children"}]}``, 404 when no stream matches, 400 for a bad request.

Limits: moto's Lambda event source mappings no longer see stream records, and a failed
``TransactWriteItems`` keeps the records of the writes it made before failing (moto rolls
the table back, not the stream).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import threading
import time
import urllib.request
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from pulse_dev.emulators import emulator_argv, free_port, stop_process, wait_for_port
from pulse_dev.stream_store import (
    ResourceNotFoundError,
    ShardedStream,
    StreamError,
    StreamShape,
    ValidationError,
    partition_hash,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

__all__ = [
    "SPLIT_PATH",
    "StreamAdmin",
    "add_stream_arguments",
    "emulator_fixture",
    "install_sharded_streams",
    "running_emulator",
    "shape_argv",
    "shape_from_arguments",
    "split_shards",
    "start_emulator",
    "start_split_schedule",
]

SPLIT_PATH: Final = "/_pulse/streams/split"
_FLAGS: Final = (
    ("shards", "--stream-shards", "PULSE_EMULATOR_STREAM_SHARDS", int),
    ("split_seconds", "--stream-split-seconds", "PULSE_EMULATOR_STREAM_SPLIT_SECONDS", float),
    (
        "iterator_seconds",
        "--stream-iterator-seconds",
        "PULSE_EMULATOR_STREAM_ITERATOR_SECONDS",
        float,
    ),
    (
        "retention_seconds",
        "--stream-retention-seconds",
        "PULSE_EMULATOR_STREAM_RETENTION_SECONDS",
        float,
    ),
)


# -- configuration ------------------------------------------------------------------------
def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--stream-*`` flags, each defaulting to its environment variable."""
    defaults = StreamShape()
    for name, flag, variable, kind in _FLAGS:
        parser.add_argument(
            flag,
            dest=f"stream_{name}",
            type=kind,
            default=kind(os.environ.get(variable, getattr(defaults, name))),
            help=f"streams: {name.replace('_', ' ')} (env {variable})",
        )


def shape_from_arguments(args: argparse.Namespace) -> StreamShape:
    return StreamShape(**{name: getattr(args, f"stream_{name}") for name, *_ in _FLAGS})


def shape_argv(shape: StreamShape) -> list[str]:
    """The flags that give the emulator's streams ``shape``."""
    return [part for name, flag, *_ in _FLAGS for part in (flag, str(getattr(shape, name)))]


@contextlib.contextmanager
def running_emulator(log_dir: Path, shape: StreamShape) -> Iterator[str]:
    """An emulator with streams of ``shape`` on a free port while the block runs; its
    endpoint URL (the log is ``log_dir/moto.log``)."""
    port = free_port()
    proc = start_emulator(port, log_dir / "moto.log", shape)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def emulator_fixture(shape: StreamShape, *, scope: str = "module") -> Any:
    """A pytest fixture of an emulator with streams of ``shape`` (its endpoint URL), for a
    test module to take as its ``aws_endpoint``:
    ``aws_endpoint = emulator_fixture(StreamShape(shards=4))``."""
    import pytest  # noqa: PLC0415 - only tests call this

    def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        with running_emulator(tmp_path_factory.mktemp("moto"), shape) as url:
            yield url

    return pytest.fixture(scope=scope)(endpoint)  # type: ignore[call-overload]


def start_emulator(port: int, log_path: Path, shape: StreamShape) -> subprocess.Popen[bytes]:
    """The AWS emulator on 127.0.0.1:``port`` with streams of ``shape``, answering."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*emulator_argv(port), *shape_argv(shape)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port)
    return proc


# -- the streams of moto's tables ---------------------------------------------------------
class _TableStream:
    """What moto's table holds as its ``stream_shard``: its writes go to the store."""

    def __init__(self, table: Any, store: ShardedStream) -> None:
        self.table = table
        self.store = store

    def add(self, old: Any, new: Any) -> None:
        """moto's hook, called under its write lock for every item written or deleted."""
        from moto.dynamodb.models.table import StreamRecord  # noqa: PLC0415

        table = self.table
        view = table.stream_specification["StreamViewType"]
        event = "INSERT" if old is None else ("REMOVE" if new is None else "MODIFY")
        key = (old if old is not None else new).hash_key.to_json()

        def record(sequence_number: int) -> dict[str, Any]:
            made: dict[str, Any] = StreamRecord(
                table, view, event, old, new, sequence_number
            ).record
            return made

        self.store.append(partition_hash(key), record)

    def __deepcopy__(self, _memo: dict[int, Any]) -> _TableStream:
        # TransactWriteItems copies each table to roll back to; the stream is shared.
        return self


_STREAMS: weakref.WeakSet[_TableStream] = weakref.WeakSet()
_STREAMS_LOCK = threading.Lock()


def _streams() -> list[_TableStream]:
    with _STREAMS_LOCK:
        return list(_STREAMS)


def _epoch_seconds(value: object) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _json(answer: dict[str, Any]) -> str:
    return json.dumps(answer, default=_epoch_seconds)


def _stream_of(handler: Any, arn: str) -> _TableStream:
    table = handler.backend._get_table_from_arn(arn)  # noqa: SLF001 - moto's own lookup
    stream = table.stream_shard
    if not isinstance(stream, _TableStream) or stream.store.arn != arn:
        raise ResourceNotFoundError(f"Requested resource not found: Stream: {arn} not found")
    return stream


def _answers_stream_errors(method: Callable[[Any], str]) -> Callable[[Any], str]:
    @functools.wraps(method)
    def answer(handler: Any) -> str:
        from moto.core.exceptions import JsonRESTError  # noqa: PLC0415

        try:
            return method(handler)
        except StreamError as exc:
            raise JsonRESTError(exc.code, str(exc)) from exc

    return answer


@_answers_stream_errors
def _describe_stream(handler: Any) -> str:
    arn = handler._get_param("StreamArn")  # noqa: SLF001
    stream = _stream_of(handler, arn)
    table = stream.table
    shards, last = stream.store.describe(
        handler._get_param("Limit"),  # noqa: SLF001
        handler._get_param("ExclusiveStartShardId"),  # noqa: SLF001
    )
    description: dict[str, Any] = {
        "StreamArn": arn,
        "StreamLabel": table.latest_stream_label,
        "StreamStatus": "ENABLED",
        "StreamViewType": table.stream_specification["StreamViewType"],
        "CreationRequestDateTime": stream.store.created_at,
        "TableName": table.name,
        "KeySchema": table.schema,
        "Shards": shards,
    }
    if last is not None:
        description["LastEvaluatedShardId"] = last
    return _json({"StreamDescription": description})


@_answers_stream_errors
def _get_shard_iterator(handler: Any) -> str:
    stream = _stream_of(handler, handler._get_param("StreamArn"))  # noqa: SLF001
    sequence_number = handler._get_param("SequenceNumber")  # noqa: SLF001
    token = stream.store.iterator(
        handler._get_param("ShardId"),  # noqa: SLF001
        handler._get_param("ShardIteratorType"),  # noqa: SLF001
        None if sequence_number is None else str(sequence_number),
    )
    return _json({"ShardIterator": token})


@_answers_stream_errors
def _get_records(handler: Any) -> str:
    token = str(handler._get_param("ShardIterator"))  # noqa: SLF001
    arn, separator, _ = token.partition("|")
    if not separator or not arn.startswith("arn:"):
        raise ValidationError("Invalid ShardIterator")
    stream = _stream_of(handler, arn)
    return _json(stream.store.records(token, handler._get_param("Limit")))  # noqa: SLF001


def install_sharded_streams(shape: StreamShape) -> None:
    """Give every table stream created from now on the shards of ``shape``, and answer the
    Streams API from them."""
    from moto.dynamodb.models.table import Table  # noqa: PLC0415
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler  # noqa: PLC0415

    set_specification = Table.set_stream_specification

    def set_stream_specification(self: Any, streams: dict[str, Any] | None) -> None:
        set_specification(self, streams)
        if self.stream_shard is not None and not isinstance(self.stream_shard, _TableStream):
            arn = f"{self.table_arn}/stream/{self.latest_stream_label}"
            stream = _TableStream(self, ShardedStream(arn, shape))
            self.stream_shard = stream
            with _STREAMS_LOCK:
                _STREAMS.add(stream)

    Table.set_stream_specification = set_stream_specification  # type: ignore[method-assign]
    DynamoDBStreamsHandler.describe_stream = _describe_stream  # type: ignore[method-assign,assignment]
    DynamoDBStreamsHandler.get_shard_iterator = _get_shard_iterator  # type: ignore[method-assign,assignment]
    DynamoDBStreamsHandler.get_records = _get_records  # type: ignore[method-assign,assignment]


# -- splitting: on a schedule, and on request ---------------------------------------------
def start_split_schedule(shape: StreamShape) -> threading.Thread | None:
    """A daemon thread that splits each stream's widest open shard every
    ``shape.split_seconds``; None when the shape never splits."""
    if not shape.split_seconds:
        return None

    def run() -> None:
        while True:
            time.sleep(min(shape.split_seconds / 4, 1.0))
            for stream in _streams():
                stream.store.split_if_due()

    thread = threading.Thread(target=run, name="stream splits", daemon=True)
    thread.start()
    return thread


def _split(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Split what ``request`` names (see the module docstring); the splits made."""
    table = request.get("table")
    shard_id = request.get("shard_id")
    children = request.get("children", 2)
    if not isinstance(children, int):
        raise ValidationError("children is 1 or 2")
    chosen = [s for s in _streams() if table is None or s.table.name == table]
    if shard_id is not None:
        chosen = [s for s in chosen if any(x.shard_id == shard_id for x in s.store.shards())]
    if not chosen:
        raise ResourceNotFoundError(f"no stream of table {table} with shard {shard_id}")
    splits = []
    for stream in chosen:
        made = stream.store.split(shard_id, children=children)
        splits.append(
            {
                "table": stream.table.name,
                "stream_arn": stream.store.arn,
                "parent": made[0].parent_id,
                "children": [child.shard_id for child in made],
            }
        )
    return splits


_STATUS: Final = {
    ResourceNotFoundError.code: "404 Not Found",
    ValidationError.code: "400 Bad Request",
}


class StreamAdmin:
    """WSGI middleware: ``POST /_pulse/streams/split`` here, everything else to ``app``."""

    def __init__(self, app: Callable[[dict[str, Any], Any], Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != SPLIT_PATH:
            return self._app(environ, start_response)
        status, answer = self._answer(environ)
        body = json.dumps(answer).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    @staticmethod
    def _answer(environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", {"message": f"POST {SPLIT_PATH}"}
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            request = json.loads(environ["wsgi.input"].read(length) or b"{}")
            if not isinstance(request, dict):
                raise ValidationError("the body is a JSON object")
            return "200 OK", {"splits": _split(request)}
        except json.JSONDecodeError as exc:
            return "400 Bad Request", {"message": f"the body is not JSON: {exc}"}
        except StreamError as exc:
            return _STATUS.get(exc.code, "500 Internal Server Error"), {"message": str(exc)}


def split_shards(
    endpoint: str,
    *,
    table: str | None = None,
    shard_id: str | None = None,
    children: int = 2,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Ask the emulator at ``endpoint`` to split now (see the module docstring); the splits
    made. :class:`urllib.error.HTTPError` when it refuses."""
    request: dict[str, Any] = {"children": children}
    if table is not None:
        request["table"] = table
    if shard_id is not None:
        request["shard_id"] = shard_id
    call = urllib.request.Request(  # noqa: S310 - the emulator's own http:// endpoint
        endpoint.rstrip("/") + SPLIT_PATH,
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(call, timeout=timeout) as response:  # noqa: S310
        splits: list[dict[str, Any]] = json.loads(response.read())["splits"]
    return splits

"""JSON logs via structlog, with the service, event id and trace id carried in contextvars.

Call :func:`configure_logging` once at start-up; bind per-event context with
:func:`event_context` so every line logged while handling an event carries its ids.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ClientErrorFilter", "configure_logging", "event_context", "get_logger"]


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


class ClientErrorFilter(logging.Filter):
    """aiohttp logs every unparsable request (a NUL in a header, a 64 KB header, a URL over
    the limit) as an error with a traceback, although the client's bytes are at fault and
    aiohttp already answered 400 / 413 / 431. Any client could fill the error logs and page
    someone: such records are kept, at info level, with the reason and without the trace.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = getattr(exc, "code", None)
        client_fault = isinstance(status, int) and status < HTTPStatus.INTERNAL_SERVER_ERROR
        if isinstance(exc, HttpProcessingError) and client_fault:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "bad request refused: %s (%s)", (exc.message, status)
            record.exc_info, record.exc_text = None, None
        return True


def configure_logging(service: str, *, level: str = "info", fmt: str = "json") -> None:
    """Route structlog and stdlib logging to stdout as JSON lines (or console for humans)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library end up in the same stream.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    for noisy in ("botocore", "boto3", "urllib3", "aiohttp.access", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


@contextmanager
def event_context(
    event_id: str | None, trace_id: str | None = None, **extra: Any
) -> Iterator[None]:
    """Bind ``event_id`` / ``trace_id`` (and extras) to every log line inside the block."""
    values = {"event_id": event_id, "trace_id": trace_id, **extra}
    tokens = structlog.contextvars.bind_contextvars(
        **{k: v for k, v in values.items() if v is not None}
    )
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; ``name`` becomes the ``logger_name`` field.

    The logger is a lazy proxy: it picks up the configuration on first use, so modules may
    create theirs at import time, before :func:`configure_logging` runs.
    """
    return structlog.get_logger() if name is None else structlog.get_logger(logger_name=name)

import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from pulse.logging import configure_logging, event_context, get_logger

module_logger = get_logger("created.at.import")  # before configure_logging, as modules do


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _lines(out: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def test_lines_are_json_with_service_and_event_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("ingest")
    with event_context("evt-1", "trace-1", payment_id="p-1"):
        module_logger.info("payment created", amount="1.00")
    module_logger.info("outside")
    first, second = _lines(capsys.readouterr().out)
    assert first["event"] == "payment created"
    assert first["service"] == "ingest"
    assert first["event_id"] == "evt-1"
    assert first["trace_id"] == "trace-1"
    assert first["payment_id"] == "p-1"
    assert first["logger_name"] == "created.at.import"
    assert "event_id" not in second


def test_standard_library_logging_is_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("svc")
    logging.getLogger("some.library").warning("careful")
    (line,) = _lines(capsys.readouterr().out)
    assert line["event"] == "careful"
    assert line["level"] == "warning"


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("svc", level="warning")
    log = get_logger("levels")
    log.info("hidden")
    log.warning("shown")
    assert [line["event"] for line in _lines(capsys.readouterr().out)] == ["shown"]

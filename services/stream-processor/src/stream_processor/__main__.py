"""``python -m stream_processor``: DynamoDB Streams to SNS, Redis channels and the audit trail."""

from __future__ import annotations

from pulse.service import run_service
from stream_processor.server import serve
from stream_processor.settings import load_stream_processor_settings


def main() -> None:
    raise SystemExit(
        run_service(load_stream_processor_settings, serve, package="pulse-stream-processor")
    )


if __name__ == "__main__":
    main()

"""``python -m ingest``: the payments HTTP API."""

from __future__ import annotations

from ingest.server import serve
from ingest.settings import load_ingest_settings
from pulse.service import run_service


def main() -> None:
    raise SystemExit(run_service(load_ingest_settings, serve, package="pulse-ingest"))


if __name__ == "__main__":
    main()

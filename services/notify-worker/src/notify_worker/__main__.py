"""``python -m notify_worker``: notifications to account channels on payment updates."""

from __future__ import annotations

from notify_worker.settings import load_notify_settings
from notify_worker.worker import serve
from pulse.service import run_service


def main() -> None:
    raise SystemExit(run_service(load_notify_settings, serve, package="pulse-notify-worker"))


if __name__ == "__main__":
    main()

"""``python -m fraud_worker``: risk rules on new payments, decisions written back."""

from __future__ import annotations

from fraud_worker.settings import load_fraud_settings
from fraud_worker.worker import serve
from pulse.service import run_service


def main() -> None:
    raise SystemExit(run_service(load_fraud_settings, serve, package="pulse-fraud-worker"))


if __name__ == "__main__":
    main()

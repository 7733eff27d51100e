"""``python -m pulse_operator``: run the EventPipeline operator (kopf, standalone, one replica)."""

from __future__ import annotations

import logging
import sys

import kopf

from pulse.errors import ConfigurationError
from pulse.logging import configure_logging
from pulse.settings import load_settings
from pulse_operator import handlers
from pulse_operator.settings import OperatorSettings


def keep_events_at_info() -> None:
    """kopf posts Kubernetes Events from its object logger: hold that logger at INFO whatever
    the log level, and the log stream to the chosen level at its handlers instead."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setLevel(root.level)
    logging.getLogger("kopf.objects").setLevel(logging.INFO)


def main() -> None:
    try:
        settings = load_settings(OperatorSettings)
    except ConfigurationError as exc:
        print(f"pulse-operator: {exc}", file=sys.stderr)  # noqa: T201 - before logging exists
        raise SystemExit(2) from exc
    configure_logging(settings.service_name, level=settings.log_level, fmt=settings.log_format)
    keep_events_at_info()
    handlers.configure(settings)
    # standalone: one replica (Recreate), so no peering objects and no cluster-wide RBAC for them.
    kopf.run(
        standalone=True,
        **handlers.kopf_scope(settings),
        liveness_endpoint=f"http://0.0.0.0:{settings.http_port}/healthz",
    )


if __name__ == "__main__":
    main()

"""``python -m pulse_dev.k8s_check``: static checks of Pulse's Kubernetes packaging (no Docker
engine, no cluster): the Dockerfiles, the three charts linted, rendered and validated against
the Kubernetes schemas, the chart's rules, the CRD and operator RBAC, monitoring and metrics,
the values schema, skaffold.yaml, NOTES.txt and the deploy docs.

Prints one PASS/FAIL line per check and ``k8s-check: all passed``; exits 1 when a check fails
(its last output lines go to stderr as it fails).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pulse_dev.k8s_check.catalogue import every_check
from pulse_dev.k8s_check.repository import Repository, repository_root
from pulse_dev.k8s_check.suite import all_passed, run_checks, select, summary
from pulse_dev.k8s_check.tools import ToolsUnavailableError


def elapsed(since: float) -> float:
    return time.monotonic() - since


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pulse_dev.k8s_check",
        description="Static checks of Pulse's charts, Skaffold config, Dockerfiles, deploy docs.",
    )
    p.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="NAME",
        help="run only the checks whose name contains NAME (repeatable)",
    )
    p.add_argument("--list", action="store_true", help="print the checks' names and exit")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=bool(os.environ.get("VERBOSE")),
        help="print what passing checks say too (also VERBOSE=1)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    checks = every_check()
    if args.list:
        sys.stdout.write("".join(f"{c.name}\n" for c in checks))
        return 0
    try:
        chosen = select(checks, args.check)
    except ValueError as exc:
        sys.stderr.write(f"k8s-check: {exc} (--list names them)\n")
        return 2
    started = time.monotonic()
    try:
        repository = Repository.open(repository_root(Path.cwd()))
    except (ToolsUnavailableError, FileNotFoundError) as exc:
        sys.stderr.write(f"k8s-check: tools unavailable: {exc}\n")
        return 1
    headline = f"tools: {repository.tools.versions()}"
    outcomes = run_checks(chosen, repository, verbose=args.verbose, out=sys.stdout, err=sys.stderr)
    sys.stdout.write("".join(f"{line}\n" for line in summary(headline, outcomes, elapsed(started))))
    if not all_passed(outcomes):
        sys.stdout.flush()
        sys.stderr.write("k8s-check: FAILED\n")
        return 1
    sys.stdout.write("k8s-check: all passed\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Static checks of the Kubernetes packaging (no Docker engine, no cluster needed): the checks
# live in libs/pulse-dev/src/pulse_dev/k8s_check/; this syncs the venv and runs them.
#   scripts/k8s-check.sh                 every check; one PASS/FAIL line each, exit 1 on a failure
#   scripts/k8s-check.sh --list          the checks' names
#   scripts/k8s-check.sh --check NAME    only the checks whose name contains NAME
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
make --no-print-directory -s sync >&2
exec .venv/bin/python -m pulse_dev.k8s_check "$@"

# Pulse — the commands the README names. Everything bootstraps from uv.lock.
#   make run            the whole system locally (DEMO=1 adds demo traffic)
#   make test           lint, type-check, the whole test suite, chart checks
#   make bench          benchmarks (ONLY=<group> for one group)
#   make chaos | soak   faults: nothing lost or doubled (REDIS_MODE=standalone|cluster|sentinel); SOAK_MINUTES (30) of traffic: memory

PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
VENV := .venv
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
PYTEST_ARGS ?=
# Test processes: most tests wait on real servers, so two share two cores well.
PYTEST_WORKERS ?= 2
SOAK_MINUTES ?= 30
REDIS_MODE ?= standalone

export UV_PYTHON_DOWNLOADS := never

.PHONY: run test lint fmt typecheck unit k8s-check browser-tools redis-tools peer-tools bench chaos soak clean help sync

help:
	@sed -n '2,5p' Makefile

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

sync: $(VENV)/.synced

run: sync
	$(VENV)/bin/pulse dev $(if $(DEMO),--demo) $(ARGS)

lint: sync
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: sync
	$(VENV)/bin/mypy libs/*/src services/*/src libs/*/tests services/*/tests tests bench $(wildcard scripts/*.py)

browser-tools:
	bash scripts/browser-tools.sh

redis-tools:
	bash scripts/redis-tools.sh

peer-tools:
	bash scripts/peer-tools.sh

unit: sync browser-tools redis-tools
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

k8s-check: sync
	bash scripts/k8s-check.sh

test: lint typecheck k8s-check unit

fmt: sync
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# nginx with Nchan only for the groups that measure against it (all, or ONLY naming peer).
bench: sync $(if $(ONLY),$(if $(filter peer,$(ONLY)),peer-tools),peer-tools)
	$(VENV)/bin/python bench/run.py $(ONLY)

chaos: sync
	$(VENV)/bin/python tests/chaos/faults.py --redis-mode $(REDIS_MODE)

soak: sync
	$(VENV)/bin/python tests/soak/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) $(TOOLS) .run .pytest_cache .mypy_cache .ruff_cache

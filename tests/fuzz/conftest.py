"""The fuzz suite's figures: each test records its own, the session prints them last.

``fuzz.http_5xx`` (schemathesis against ingest) and ``fuzz.ws_crashes`` (generated frames
against the gateway) are printed as ``name: value`` lines after pytest's own summary line,
so they are the last lines of ``pytest tests/fuzz`` (and of the whole suite's pytest run).
A figure whose test did not run is not printed.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

FIGURES = pytest.StashKey[dict[str, int]]()
# The figures come last, after the supporting ones (request counts and the like).
HEADLINE = ("fuzz.http_5xx", "fuzz.ws_crashes")


@pytest.fixture(scope="session")
def fuzz_figures(pytestconfig: pytest.Config) -> dict[str, int]:
    """Where fuzz tests record their figures (name -> value)."""
    return pytestconfig.stash.setdefault(FIGURES, {})


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None]:
    # tryfirst makes this the outermost wrapper: it prints after the terminal reporter's.
    result = yield
    figures = session.config.stash.get(FIGURES, {})
    reporter = session.config.pluginmanager.getplugin("terminalreporter")
    if figures and reporter is not None:
        supporting = sorted(name for name in figures if name not in HEADLINE)
        order = supporting + [name for name in HEADLINE if name in figures]
        for name in order:
            reporter.write_line(f"{name}: {figures[name]}")
    return result

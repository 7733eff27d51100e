"""pytest plugin: figures a test records, printed as the last lines of the whole run.

A test asks for ``fuzz_figures`` and sets ``name -> value`` in it. The figures travel in the
test's report (its user properties), so the process that prints them sees them also when the
test ran in a worker process (``pytest -n``). They are printed as ``name: value`` lines after
pytest's own summary line: ``fuzz.http_5xx`` (schemathesis against ingest) and
``fuzz.ws_crashes`` (generated frames against the gateway) last, after the supporting ones.
A figure whose test did not run is not printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

__all__ = ["fuzz_figures"]

FIGURES = pytest.StashKey[dict[str, int]]()
HEADLINE = ("fuzz.http_5xx", "fuzz.ws_crashes")
PREFIX = "fuzz."
_session_config: list[pytest.Config] = []


@pytest.fixture
def fuzz_figures(request: pytest.FixtureRequest) -> Iterator[dict[str, int]]:
    """Where a fuzz test records its figures (name -> value)."""
    figures: dict[str, int] = {}
    yield figures
    request.node.user_properties.extend(
        (name, value) for name, value in figures.items() if name.startswith(PREFIX)
    )


def pytest_configure(config: pytest.Config) -> None:
    _session_config[:] = [config]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown" or not _session_config:
        return
    figures = _session_config[0].stash.setdefault(FIGURES, {})
    for name, value in report.user_properties:
        if isinstance(name, str) and name.startswith(PREFIX):
            figures[name] = int(str(value))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None]:
    # tryfirst makes this the outermost wrapper: it prints after the terminal reporter's.
    result = yield
    figures = session.config.stash.get(FIGURES, {})
    reporter = session.config.pluginmanager.getplugin("terminalreporter")
    if figures and reporter is not None and not hasattr(session.config, "workerinput"):
        supporting = sorted(name for name in figures if name not in HEADLINE)
        order = supporting + [name for name in HEADLINE if name in figures]
        for name in order:
            reporter.write_line(f"{name}: {figures[name]}")
    return result

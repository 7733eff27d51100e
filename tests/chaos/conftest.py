"""The chaos suite runs only when asked for (``pytest -m chaos`` or ``make chaos``).

It restarts its own Redis and AWS emulator, so it brings its own instead of the session's
fixtures, and it takes minutes: a default ``pytest`` run (``make test``) skips it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# faults.py and the soak import the harness as a top-level module, as their scripts do.
sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the chaos suite (slow; run with -m chaos)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the chaos suite runs with `pytest -m chaos` / `make chaos`")
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(skip)

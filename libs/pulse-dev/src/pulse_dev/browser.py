"""Headless Chromium for the browser tests (Playwright driving Debian's ``/usr/bin/chromium``,
installed by ``scripts/browser-tools.sh``; never a browser download of Playwright's own), and
the folder their screenshots are kept in. A pytest plugin (the root ``conftest.py``): the
``browser`` fixture is a Chromium of the test's own.

Screenshots go to ``.artifacts/<suite>/`` under the directory the tests run from (the
repository root; ``PULSE_TEST_ARTIFACTS`` moves it). The folder is git-ignored: open the
PNGs after a run to see what the tests saw.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
from playwright.async_api import async_playwright

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from playwright.async_api import Browser

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "artefacts", "browser", "chromium"]

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless system Chromium, closed on exit."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            await browser.close()


def artefacts(suite: str) -> Path:
    """The folder for ``suite``'s screenshots (made if missing)."""
    folder = Path(os.environ.get("PULSE_TEST_ARTIFACTS", ".artifacts")) / suite
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched

"""Headless Chromium for the browser tests (Playwright driving Debian's ``/usr/bin/chromium``,
installed by ``scripts/browser-tools.sh``; never a browser download of Playwright's own), and
the folder their screenshots are kept in. A pytest plugin (the root ``conftest.py``): the
``browser`` fixture is a Chromium of the test's own.

:data:`BLOCK_WEBSOCKETS` is an init script (``page.add_init_script``) for a network that
blocks WebSockets: every one the page opens fails its handshake, as behind a proxy that
refuses the upgrade, while plain HTTP (and Server-Sent Events) still goes through.

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

__all__ = ["BLOCK_WEBSOCKETS", "CHROMIUM", "CHROMIUM_ARGS", "artefacts", "browser", "chromium"]

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

BLOCK_WEBSOCKETS: Final = """
window.WebSocket = class BlockedWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      if (this.onerror) this.onerror(new Event("error"));
      if (this.onclose) this.onclose(new CloseEvent("close", { code: 1006 }));
    }, 20);
  }
  send() {
    throw new DOMException("the WebSocket is not open", "InvalidStateError");
  }
  close() {}
};
"""


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

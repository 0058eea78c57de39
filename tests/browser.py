"""A real browser for the UI tests: Playwright for Python driving the system Chromium (``apt-get install chromium``;
no browser download), headless, with a screenshot of each step kept under ``test-output/screenshots/<test>/``
(git-ignored; CI keeps the folder with the rest of the test output).

``MLOPS_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns a missing Chromium into a failure instead of a skip.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_MS = 30_000


def chromium_path() -> str:
    """The system Chromium, or a skip (a failure under ``MLOPS_REQUIRE_BROWSER=1``) naming how to install it."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = "no system Chromium: `apt-get install chromium` (the browser tests never download one)"
    if os.environ.get("MLOPS_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Steps:
    """Numbered screenshots of one test's steps."""

    folder: Path
    taken: list[Path] = field(default_factory=list)

    def shot(self, page: Page, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@contextmanager
def browser_page(test_name: str) -> Iterator[tuple[Page, Steps]]:
    """A fresh headless Chromium page (1400x1000) and the screenshot folder of ``test_name`` (emptied first)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    folder = SCREENSHOTS / test_name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-background-networking"]
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page, Steps(folder)
        finally:
            browser.close()


def log_in_to_airflow(page: Page, airflow_url: str, user: str, password: str) -> None:
    """Sign in through Airflow's own login form, as a person does."""
    page.goto(f"{airflow_url}/auth/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.press("input[name=password]", "Enter")
    page.wait_for_url(lambda url: "/auth/login" not in url)

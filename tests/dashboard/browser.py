"""A real headless Chromium for the dashboard tests, driven by Playwright.

Debian's /usr/bin/chromium (or $RECSITE_CHROMIUM): Playwright's own browser download
does not work here. Without a browser the tests skip and say how to install one,
except in CI, where they fail. Each test saves screenshots under
``var/test-artifacts/screenshots/`` (not committed).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = os.environ.get("RECSITE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# One folder per database, so the PostgreSQL pass doesn't overwrite the SQLite pass's.
ARTIFACTS = (
    Path(settings.BASE_DIR) / "var" / "test-artifacts" / "screenshots"
    / settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
)
# The flags the machine's notes give for a closed network: no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
HOW_TO_INSTALL = "Install Chromium: apt-get install chromium (or set RECSITE_CHROMIUM to a Chromium binary)."


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"No Chromium at {CHROMIUM}. {HOW_TO_INSTALL}", pytrace=False)
        pytest.skip(f"No Chromium at {CHROMIUM}. {HOW_TO_INSTALL}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an asyncio loop in this thread; the tests' own ORM calls
    # (seeding, checking rows) are plain synchronous code, which Django would refuse
    # there. Allowed only while the browser runs (module scope), never in other tests.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()


@pytest.fixture
def browser_page(chromium, request):
    """A fresh browser context (no cookies) and page; its console errors fail the test.

    When the test fails, what the browser showed is saved as ``FAILED-<test>.png``.
    """
    context = chromium.new_context(viewport={"width": 1200, "height": 860})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        screenshot(page, f"FAILED-{request.node.name}")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture can see whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def screenshot(page, name: str) -> Path:
    """Save a full-page PNG of what the browser shows now, as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/dashboard/")
    # Anonymous: the dashboard sends the browser to the login page.
    page.wait_for_url(re.compile(r"/accounts/login/"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/dashboard/$"))

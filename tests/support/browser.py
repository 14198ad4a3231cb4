"""Playwright driving Debian's Chromium for the admin's browser tests; a screenshot on failure;
the login through the admin's form (``console``: an operator holding every permission).

Loaded by the browser test module (``pytest_plugins``), so the rest of the suite never
starts a browser. Playwright's own browser download does not work here, hence
``executable_path``. Its sync API runs an event loop in the test thread, which Django
would take for async code calling the ORM: the tests are synchronous, so while the
browser runs that check is off.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


REPORTS = pytest.StashKey[dict]()


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module. Module-scoped so that Playwright's event loop, and the
    switched-off async check, end with the browser tests instead of lasting the whole session."""
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser context per test; on failure its page is saved to test-artifacts/."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    call = request.node.stash.get(REPORTS, {}).get("call")
    if call is not None and call.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    context.close()


OPERATOR_PASSWORD = "operator-password"


def log_in(page, base_url: str, username: str, password: str) -> None:
    """Through the admin's login form, as a person would; ``page.base`` is the site's root after."""
    page.goto(f"{base_url}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.base = base_url


@pytest.fixture
def log_in_as(browser, live_server):
    """``log_in_as(username, password)``: a page of its own browser context (its own cookies),
    logged in as that user, beside the ``console`` one."""
    contexts = []

    def open_page(username: str, password: str):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(10_000)
        contexts.append(context)
        tab = context.new_page()
        log_in(tab, live_server.url, username, password)
        return tab

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def console(live_server, page):
    """The browser, logged in as an operator holding every permission (a superuser)."""
    User.objects.create_superuser("operator", "", OPERATOR_PASSWORD)
    log_in(page, live_server.url, "operator", OPERATOR_PASSWORD)
    expect(page.locator("#mqic-overview")).to_be_visible()
    return page

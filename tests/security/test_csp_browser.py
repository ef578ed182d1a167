"""The Content-Security-Policy in a real browser: every page loads and works with no violation (issue 17 row 11).

Chromium reports each blocked script, style or image as a ``securitypolicyviolation``
event (and a console error). The test listens from before the page's first script, then
uses each page as a person would: htmx search and lazy panels on the dashboard, a
changelist and a change form in the admin, the operations list in the API docs.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from engagement.models import Customer, Product
from tests.dashboard.browser import log_in, screenshot
from tests.dashboard.conftest import PASSWORD, merchandiser_user  # noqa: F401
from tests.training.conftest import seed_small_shop

# Before any of the page's own scripts: keep every violation the browser reports.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || 'inline'} in ${event.sourceFile || document.URL}:${event.lineNumber}`);
});
"""


@pytest.fixture
def csp_page(browser_page):
    """The browser page, recording CSP violations from both the DOM event and the console."""
    browser_page.add_init_script(RECORD_VIOLATIONS)
    console: list[str] = []
    browser_page.on(
        "console", lambda message: console.append(message.text) if "Content Security Policy" in message.text else None
    )
    browser_page.csp_console = console
    return browser_page


def violations(page) -> list[str]:
    return page.evaluate("() => window.__cspViolations") + page.csp_console


@pytest.mark.usefixtures("transactional_db")
def test_the_dashboard_loads_and_htmx_works_with_no_csp_violation(csp_page, live_server, merchandiser_user):  # noqa: F811
    page, base = csp_page, live_server.url
    seed_small_shop(n_customers=30, n_products=20, n_events=1500)
    wanted = Customer.objects.order_by("external_id")[25].external_id

    log_in(page, base, merchandiser_user.username, PASSWORD)  # the login page, then the overview
    header = page.request.get(f"{base}/dashboard/").headers["content-security-policy"]
    page.click("nav >> text=Customers")
    page.evaluate("() => { window.__notReloaded = true }")
    page.type("#customer-search", wanted, delay=20)  # htmx asks as the text changes
    page.locator(f"#customer-results a:text-is('{wanted}')").wait_for()
    assert page.evaluate("() => window.__notReloaded === true")  # swapped in place by htmx
    page.goto(f"{base}/dashboard/products/{Product.objects.order_by('external_id').first().external_id}/")
    page.wait_for_selector("#product-similar:not([hx-trigger])", state="attached")  # the lazy panel arrived
    page.click("nav >> text=Training runs")
    page.wait_for_url(re.compile(r"/dashboard/runs/$"))
    screenshot(page, "csp-dashboard")

    assert "script-src 'self'" in header and "'unsafe-inline'" not in header
    assert violations(page) == []
    # htmx's indicator style would have been an inline <style> the policy blocks.
    assert page.evaluate("() => htmx.config.includeIndicatorStyles") is False


@pytest.mark.usefixtures("transactional_db")
def test_the_admin_loads_with_no_csp_violation(csp_page, live_server):
    page, base = csp_page, live_server.url
    User.objects.create_superuser("root", password=PASSWORD)

    page.goto(f"{base}/admin/login/")
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    for path in ("/admin/auth/user/", "/admin/auth/user/add/", "/admin/engagement/product/add/",
                 "/admin/engagement/shopapikey/add/", "/admin/training/trainingrun/"):  # fmt: skip
        answer = page.goto(f"{base}{path}")
        assert answer.status == 200, path
    page.goto(f"{base}/admin/auth/user/")
    page.click("#changelist-filter a:text-is('Yes')")  # the filter sidebar's script
    screenshot(page, "csp-admin")

    assert violations(page) == []


@pytest.mark.usefixtures("transactional_db")
def test_the_api_docs_render_their_operations_with_no_csp_violation(csp_page, live_server):
    page, base = csp_page, live_server.url

    answer = page.goto(f"{base}/api/docs/")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)  # Swagger UI rendered the schema
    operations = page.locator(".opblock-summary-path").count()
    page.locator(".opblock-summary").first.click()  # expand one operation
    page.wait_for_selector(".opblock-body")
    screenshot(page, "csp-api-docs")

    assert "'nonce-" in answer.headers["content-security-policy"]
    assert operations >= 10
    assert violations(page) == []

"""The dashboard in a real browser: log in, retrain and watch it live, read as a merchandiser, search customers."""

from __future__ import annotations

import re

import pytest
from django.conf import settings as django_settings

from engagement.models import Customer
from tests.dashboard.browser import log_in, screenshot
from tests.dashboard.conftest import PASSWORD
from tests.training.conftest import seed_small_shop
from training.models import ModelVersion, TrainingRun

RUN_TIMEOUT_MS = 240_000

# Records every fraction the progress bar shows, however the page swaps it in: the test
# reads what a person watching would have seen, without polling the page itself.
WATCH_PROGRESS = """
() => {
  window.__progressSeen = [];
  window.__notReloaded = true;
  const record = () => {
    const bar = document.querySelector('#run-progress');
    if (bar && bar.hasAttribute('value')) {
      const value = Number(bar.getAttribute('value')) / Number(bar.getAttribute('max') || 1);
      const seen = window.__progressSeen;
      if (seen[seen.length - 1] !== value) seen.push(value);
    }
  };
  record();
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, attributes: true});
}
"""


@pytest.fixture
def live_model_dir(settings):
    """The worker writes artifacts to the configured directory; the live server must read the same."""
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "MODEL_DIR": django_settings.VAR_DIR / "models"}


@pytest.mark.worker
@pytest.mark.usefixtures("transactional_db", "celery_worker_process", "live_model_dir")
def test_an_admin_retrains_and_watches_the_run_succeed_and_the_new_version_serve(browser_page, live_server, admin_user):
    page, base = browser_page, live_server.url
    seed_small_shop()
    page.goto(f"{base}/dashboard/")
    screenshot(page, "login")
    log_in(page, base, admin_user.username, PASSWORD)
    assert page.locator("#serving-model").inner_text().count("No model is promoted yet") == 1
    screenshot(page, "overview-before")

    page.click("nav >> text=Training runs")
    page.click("#retrain")
    page.wait_for_url(re.compile(r"/dashboard/runs/retrain/$"))
    screenshot(page, "retrain-confirm")
    # A double click on the confirm button still starts one run.
    page.dblclick("#retrain-confirm")
    page.wait_for_url(re.compile(r"/dashboard/runs/\d+/$"))
    page.evaluate(WATCH_PROGRESS)

    page.wait_for_function("() => document.querySelector('#run-status')?.textContent.trim() === 'running'",
                           timeout=RUN_TIMEOUT_MS)  # fmt: skip
    screenshot(page, "run-running")
    ended = "() => ['succeeded', 'failed', 'rejected', 'cancelled'].includes(document.querySelector('#run-status')?.textContent.trim())"
    page.wait_for_function(ended, timeout=RUN_TIMEOUT_MS)
    screenshot(page, "run-ended")

    assert TrainingRun.objects.count() == 1
    run = TrainingRun.objects.get()
    assert page.locator("#run-status").inner_text().strip() == "succeeded", (run.status, run.error)
    # htmx swapped the panel in place: the page was never reloaded.
    assert page.evaluate("() => window.__notReloaded === true")
    # ...and the poll took away the "Training run N is queued." flash once the run had left the queue.
    assert page.locator("#flashes .flash").count() == 0
    seen = page.evaluate("() => window.__progressSeen")
    # It moved forward, never back, and ended full.
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 1, seen
    version = ModelVersion.objects.get(training_run=run)
    assert version.status == ModelVersion.Status.PROMOTED

    page.click("nav >> text=Overview")
    page.wait_for_url(re.compile(r"/dashboard/$"))
    assert page.locator(f"#serving-model [data-version='{version.pk}']").count() == 1
    screenshot(page, "overview-after")


@pytest.mark.usefixtures("transactional_db")
def test_a_merchandiser_sees_no_retrain_button_and_a_forged_post_is_refused(browser_page, live_server, merchandiser_user):
    page, base = browser_page, live_server.url
    log_in(page, base, merchandiser_user.username, PASSWORD)
    page.goto(f"{base}/dashboard/runs/")
    assert page.locator("#retrain").count() == 0
    screenshot(page, "runs-as-merchandiser")

    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(f"{base}/dashboard/runs/retrain/", headers={"X-CSRFToken": csrf, "Referer": base})
    assert forged.status == 403
    without_token = page.request.post(f"{base}/dashboard/runs/retrain/")
    assert without_token.status == 403
    assert TrainingRun.objects.count() == 0


@pytest.mark.usefixtures("transactional_db")
def test_customer_search_finds_a_customer_whose_page_lists_recommendations(browser_page, live_server, merchandiser_user):
    page, base = browser_page, live_server.url
    seed_small_shop(n_customers=60, n_products=40, n_events=3000)
    # Past the first 20 ids, which the page lists before anything is typed.
    wanted = Customer.objects.order_by("external_id")[47].external_id
    log_in(page, base, merchandiser_user.username, PASSWORD)

    page.click("nav >> text=Customers")
    link = page.locator(f"#customer-results a:text-is('{wanted}')")
    assert link.count() == 0
    page.evaluate("() => { window.__notReloaded = true }")
    page.type("#customer-search", wanted, delay=20)  # typed: htmx asks as the text changes, debounced
    link.wait_for()
    assert page.locator("#customer-results a").count() == 1
    assert page.evaluate("() => window.__notReloaded === true")  # found in place, not by submitting the form
    screenshot(page, "customer-search")
    link.click()
    page.wait_for_url(re.compile(rf"/dashboard/customers/{re.escape(wanted)}/$"))
    rows = page.locator("#recommendations tbody tr[data-product]")
    assert rows.count() == 10
    assert "popular" in page.locator("#recommendation-strategy").inner_text()
    assert page.locator("#engagement-history tbody tr[data-product]").count() >= 1
    screenshot(page, "customer-page")

    page.click("nav >> text=Products")
    page.wait_for_selector("#product-ranking tbody tr[data-product]")
    screenshot(page, "products")
    page.locator("#product-ranking tbody tr[data-product] a").first.click()
    page.wait_for_selector("#top-customers")
    screenshot(page, "product-page")


@pytest.mark.usefixtures("transactional_db")
@pytest.mark.parametrize("width", [1366, 390])
def test_the_not_found_page_has_the_layout_and_no_sideways_scroll(browser_page, live_server, merchandiser_user, width):
    """An unknown customer's page (issue 16): the dashboard's 404, readable on a desktop and a phone."""
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": width, "height": 800})
    log_in(page, base, merchandiser_user.username, PASSWORD)
    response = page.goto(f"{base}/dashboard/customers/nobody-at-all/")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Not found"
    assert page.locator("nav a", has_text="Training runs").count() == 1
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    screenshot(page, f"not-found-{width}")
    assert overflow <= 0, f"{overflow} px of sideways scrolling at {width} px"

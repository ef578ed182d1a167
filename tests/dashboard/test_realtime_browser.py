"""The refit line of the run page and the folded customer's strategy line, in a real browser at two widths."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from tests.dashboard.browser import log_in, screenshot
from tests.dashboard.conftest import PASSWORD
from training.models import TrainingRun
from training.services.versions import model_version_promote


def _fits(page, selector: str, width: int) -> None:
    right = page.evaluate(f"() => document.querySelector('{selector}').getBoundingClientRect().right")
    inner = page.evaluate(
        f"() => {{ const e = document.querySelector('{selector}'); return e.scrollWidth - e.clientWidth; }}"
    )
    assert right <= width and inner <= 0, (selector, right, inner)


@pytest.mark.usefixtures("transactional_db")
@pytest.mark.parametrize("width", [1366, 390])
def test_the_refit_line_reads_without_sideways_scrolling(browser_page, live_server, admin_user, width):
    training = {"seconds": 151.3, "best_epoch": 8, "epochs_run": 11, "stopped_early": True, "device": "cpu",
                "examples_per_second": 32900, "refit": {"epochs": 8, "rows": 99057, "seconds": 61.4}}  # fmt: skip
    run = TrainingRun.objects.create(triggered_by="test", status=TrainingRun.Status.SUCCEEDED,
                                     metrics={"training": training})  # fmt: skip
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": width, "height": 860})
    log_in(page, base, admin_user.username, PASSWORD)
    page.goto(f"{base}/dashboard/runs/{run.pk}/")

    text = page.locator("#run-live").inner_text()
    assert "then refit on 99057 rows (validation items included) for 8 epochs in 61.4 s" in text
    screenshot(page, f"run-refit-{width}")
    _fits(page, "#run-live", width)


@pytest.mark.usefixtures("transactional_db")
@pytest.mark.parametrize("width", [1366, 390])
def test_a_folded_customers_strategy_line_reads_without_sideways_scrolling(
    browser_page, live_server, admin_user, make_version, width
):
    products = [Product.objects.create(external_id=f"p-{i}", category="books") for i in range(20)]
    visitor = Customer.objects.create(external_id="visitor-1")
    for product in products[:3]:
        Engagement.objects.create(customer=visitor, product=product, dwell_decayed=0.5,
                                  last_event_at=timezone.now() - timedelta(minutes=5))  # fmt: skip
    version = make_version(customer_ids=["someone-else"], product_ids=[p.external_id for p in products],
                           customer_vector="items")  # fmt: skip
    model_version_promote(version_id=version.pk, actor="test")
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": width, "height": 860})
    log_in(page, base, admin_user.username, PASSWORD)
    page.goto(f"{base}/dashboard/customers/visitor-1/")

    assert "folded at this request" in page.locator("#recommendation-strategy").inner_text()
    screenshot(page, f"customer-folded-{width}")
    _fits(page, "#recommendation-strategy", width)  # the line this change wrote; the table below is as before

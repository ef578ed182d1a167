"""In a real browser, the list pages' links open the page of that exact customer or product (issue 17 row 7).

Chromium applies the URL standard's dot-segment rules itself, so this is what a person
clicking sees; tests/dashboard/test_id_links.py checks the same hrefs without a browser.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from tests.dashboard.browser import log_in, screenshot
from tests.dashboard.conftest import PASSWORD

CLICKED_IDS = ["..", ".", "../x", "a/b", "x/..", "x/reach", "~t"]


@pytest.fixture
def odd_ids_engaged(transactional_db):
    """A customer and a product per id, each customer engaged with each product, within the ranking's window."""
    customers = Customer.objects.bulk_create(Customer(external_id=i) for i in CLICKED_IDS)
    products = Product.objects.bulk_create(Product(external_id=i, name=f"Product {i}") for i in CLICKED_IDS)
    last_seen = timezone.now() - timedelta(hours=1)
    Engagement.objects.bulk_create(
        Engagement(customer=c, product=p, score=1, clicks=1, event_count=1, last_event_at=last_seen)
        for c in customers
        for p in products
    )


def _row_link(page, table: str, attribute: str, external_id: str):
    # json.dumps quotes as a CSS string does ("\\" and '"' escaped).
    return page.locator(f"{table} tr[data-{attribute}={json.dumps(external_id)}] a").first


@pytest.mark.usefixtures("odd_ids_engaged")
def test_clicking_a_customer_in_the_list_opens_that_customers_page(browser_page, live_server, merchandiser_user):
    page, base = browser_page, live_server.url
    log_in(page, base, merchandiser_user.username, PASSWORD)
    for external_id in CLICKED_IDS:
        page.goto(f"{base}/dashboard/customers/")
        with page.expect_navigation():
            _row_link(page, "#customer-results", "customer", external_id).click()

        assert page.locator("h1").inner_text() == f"Customer {external_id}", (external_id, page.url)
        assert page.locator("#engagement-history tbody tr[data-product]").count() == len(CLICKED_IDS)
    screenshot(page, "customer-page-of-an-odd-id")


@pytest.mark.usefixtures("odd_ids_engaged")
def test_clicking_a_product_in_the_ranking_opens_that_products_page_and_its_panels(
    browser_page, live_server, merchandiser_user
):
    page, base = browser_page, live_server.url
    log_in(page, base, merchandiser_user.username, PASSWORD)
    for external_id in CLICKED_IDS:
        page.goto(f"{base}/dashboard/products/")
        with page.expect_navigation():
            _row_link(page, "#product-ranking", "product", external_id).click()

        assert page.locator("#product-facts .muted").first.inner_text() == external_id, (external_id, page.url)
        # The lazy panels were fetched from this product's own URLs (htmx swaps in only a 200).
        page.locator("#product-similar[data-reason='no_model']").wait_for()
        page.locator("#product-reach:not([hx-get])", has_text="No model is serving").wait_for()
        # And its customers link back to their own pages.
        with page.expect_navigation():
            _row_link(page, "#top-customers", "customer", external_id).click()
        assert page.locator("h1").inner_text() == f"Customer {external_id}", (external_id, page.url)
    screenshot(page, "customer-page-from-a-product")

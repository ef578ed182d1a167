"""A merchandiser pins a product from the Rules page and ends the rule, in a real browser, at 1366 and 390 px."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from tests.dashboard.browser import log_in, screenshot
from tests.dashboard.conftest import PASSWORD

OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.mark.parametrize("width", [1366, 390])
def test_a_merchandiser_pins_a_product_sees_it_on_a_customer_page_then_ends_the_rule(
    browser_page, live_server, merchandiser_user, width
):
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": width, "height": 860})
    for i in range(8):
        Product.objects.create(external_id=f"p-{i}", name=f"Product {i}", category="boots" if i % 2 else "coats")
    customer = Customer.objects.create(external_id="c-1")
    Engagement.objects.create(customer=customer, product=Product.objects.get(external_id="p-0"),
                              last_event_at=timezone.now() - timedelta(hours=1), score="0.9", dwell_decayed=0.5)  # fmt: skip
    log_in(page, base, merchandiser_user.username, PASSWORD)

    page.click("nav >> text=Rules")
    page.wait_for_url(re.compile(r"/dashboard/rules/$"))
    page.fill("#id_name", "Winter boots first")
    page.select_option("#id_action", "pin")
    page.select_option("#id_target_type", "product")
    page.fill("#id_target", "p-7")
    page.fill("#id_rank", "1")
    page.click("#rule-save")
    page.locator("#rules-in-force td.name:text-is('Winter boots first')").wait_for()
    assert page.evaluate(OVERFLOW) <= 0
    screenshot(page, f"rules-{width}")

    page.goto(f"{base}/dashboard/customers/c-1/")
    first = page.locator("#recommendations tbody tr").first
    assert first.get_attribute("data-product") == "p-7"
    assert "Pinned by rule Winter boots first." in first.inner_text()
    assert page.evaluate(OVERFLOW) <= 0
    screenshot(page, f"rules-pinned-customer-{width}")

    page.click("#recommendations tbody tr >> nth=0 >> text=Winter boots first")  # the rule's link
    page.wait_for_url(re.compile(r"/dashboard/rules/#rule-\d+$"))
    page.locator("#rules-in-force button:text-is('End now')").click()
    page.locator("#rules-ended td.name:text-is('Winter boots first')").wait_for()
    assert page.locator("#rule-changes tbody tr").count() == 2  # created, ended

    page.goto(f"{base}/dashboard/customers/c-1/")
    assert page.locator("#recommendations tbody tr").first.get_attribute("data-product") != "p-7"
    assert page.locator("text=Pinned by rule").count() == 0

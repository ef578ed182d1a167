"""The Rules page: merchandisers write and end rules, every change is in the audit log; the customer page shows them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from training.models import MerchandisingRule, MerchandisingRuleChange

RULES = reverse("dashboard:rule_list")


@pytest.fixture
def shop(db):
    for i in range(6):
        Product.objects.create(external_id=f"p-{i}", name=f"Product {i}", category="even" if i % 2 == 0 else "odd")
    customer = Customer.objects.create(external_id="c-1")
    Engagement.objects.create(customer=customer, product=Product.objects.get(external_id="p-0"),
                              last_event_at=timezone.now() - timedelta(hours=1), score="0.9", dwell_decayed=0.5)  # fmt: skip


def _form(**fields) -> dict:
    ends = (timezone.localtime() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    return {"name": "Summer boots", "action": "pin", "target_type": "product", "target": "p-5", "rank": "1",
            "factor": "", "starts_at": "", "ends_at": ends, **fields}  # fmt: skip


def test_an_anonymous_visitor_is_sent_to_log_in(anonymous_web):
    response = anonymous_web.get(RULES)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert anonymous_web.post(RULES, _form()).status_code == 302 and not MerchandisingRule.objects.exists()


def test_a_merchandiser_saves_a_pin_and_the_customer_page_shows_it_pinned(merchandiser_web, merchandiser_user, shop):
    response = merchandiser_web.post(RULES, _form(), follow=True)

    rule = MerchandisingRule.objects.get()
    assert response.status_code == 200 and (rule.action, rule.target, rule.rank) == ("pin", "p-5", 1)
    assert f'id="rule-{rule.pk}"' in response.text and "Summer boots" in response.text
    assert MerchandisingRuleChange.objects.get().actor == f"user:{merchandiser_user.username}"
    page = merchandiser_web.get(reverse("dashboard:customer_detail", args=["c-1"])).text
    rows = re.findall(r'<tr data-product="([^"]+)"', page.split('id="recommendations"')[1])
    assert rows[0] == "p-5"
    assert f'data-rule="{rule.pk}">Pinned by rule <a href="{RULES}#rule-{rule.pk}">Summer boots</a>' in page


def test_ending_a_rule_takes_it_out_of_every_list_and_is_logged(merchandiser_web, shop):
    merchandiser_web.post(RULES, _form())
    rule = MerchandisingRule.objects.get()

    merchandiser_web.post(reverse("dashboard:rule_end", args=[rule.pk]))

    rule.refresh_from_db()
    assert rule.ends_at <= timezone.now()
    page = merchandiser_web.get(reverse("dashboard:customer_detail", args=["c-1"])).text
    assert "Pinned by rule" not in page
    assert list(MerchandisingRuleChange.objects.order_by("id").values_list("change", flat=True)) == ["created", "ended"]
    listing = merchandiser_web.get(RULES).text
    ended = listing.split('id="rules-ended"')[1]
    assert f'id="rule-{rule.pk}"' in ended and f'id="rule-end-{rule.pk}"' not in listing


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"target": "no-such-product"}, "There is no product"),
        ({"rank": ""}, "A pin needs a rank"),
        ({"action": "boost", "rank": "", "factor": "0.5"}, "Ensure this value is greater than or equal to 1.01"),
        ({"ends_at": "2001-01-01T00:00"}, "The rule must end after it starts"),
    ],
)
def test_a_rule_that_cannot_work_gets_a_400_saying_why_and_nothing_is_saved(merchandiser_web, shop, fields, message):
    response = merchandiser_web.post(RULES, _form(**fields))

    assert response.status_code == 400 and message in response.text
    assert not MerchandisingRule.objects.exists() and not MerchandisingRuleChange.objects.exists()


def test_the_end_action_refuses_a_get(merchandiser_web, shop):
    merchandiser_web.post(RULES, _form())
    rule = MerchandisingRule.objects.get()
    assert merchandiser_web.get(reverse("dashboard:rule_end", args=[rule.pk])).status_code == 405

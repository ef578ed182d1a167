"""Merchandising rules (training/services/rules.py): what each does to a list, on every path, and their audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.models import Product
from tests.training.test_api_recommendations import PRODUCTS, catalog, engage, promoted, url  # noqa: F401
from training.models import MerchandisingRule, MerchandisingRuleChange
from training.serving import RecommendedItem, Recommendations
from training.services.rules import RuleInForce, RuleInvalid, rule_create, rule_end, rules_apply, rules_in_force


def _rule(action, target, *, target_type="product", rank=None, factor=None, **fields):
    return rule_create(actor="user:ada", name=f"{action} {target}", action=action, target_type=target_type,
                       target=target, rank=rank, factor=factor, ends_at=timezone.now() + timedelta(days=1),
                       **fields)  # fmt: skip


def _products(body) -> list[str]:
    return [item["product"] for item in body["items"]]


def test_boost_and_bury_move_positions_and_ties_keep_the_rankings_order():
    items = [RecommendedItem(f"p{i}", 1.0 - i / 100, i) for i in range(1, 11)]
    rules = (RuleInForce(1, "up", "boost", "product", "p9", None, 4.0),  # position 9 -> 2.25
             RuleInForce(2, "down", "bury", "product", "p1", None, 3.0))  # position 1 -> 3, before p3 (a tie)
    steered = rules_apply(Recommendations("c", 1, "model", items), rules, k=5)

    assert [i.product for i in steered.items] == ["p2", "p9", "p1", "p3", "p4"]
    assert [i.rank for i in steered.items] == [1, 2, 3, 4, 5]
    assert [(i.product, i.rule.name if i.rule else None) for i in steered.items][:3] == [
        ("p2", None), ("p9", "up"), ("p1", "down")]
    assert steered.items[1].score == items[8].score  # the ranking's own score stays


def test_a_pin_puts_an_unranked_product_at_its_rank_with_no_score_and_names_the_rule(shop_client, catalog):
    rule = _rule("pin", "p-11", rank=1)

    body = shop_client.get(url("alice"), {"k": 4}).json()

    # Popular products: p-0 (alice's own, left out) and p-1; p-11 has no engagement at all.
    assert body["strategy"] == "popular" and _products(body) == ["p-11", "p-1"]
    assert body["items"][0]["rule"] == {"id": rule.pk, "name": "pin p-11", "action": "pin"}
    assert body["items"][0]["score"] is None and body["items"][1]["rule"] is None
    assert [i["rank"] for i in body["items"]] == [1, 2]


def test_a_pin_respects_seen_inactive_category_and_exclusions(shop_client, catalog):
    _rule("pin", "p-1", rank=1)  # bob engaged with p-1: left out for him, shown to alice
    _rule("pin", "p-3", rank=2)  # odd category
    Product.objects.filter(external_id="p-5").update(active=False)
    _rule("pin", "p-5", rank=3)  # inactive: never
    _rule("pin", "p-7", rank=1)
    _rule("exclude", "p-7")  # exclude wins over a pin

    assert "p-1" not in _products(shop_client.get(url("bob")).json())
    alice = _products(shop_client.get(url("alice")).json())
    assert alice[:2] == ["p-1", "p-3"] and "p-5" not in alice and "p-7" not in alice
    assert "p-3" not in _products(shop_client.get(url("alice"), {"category": "even"}).json())


def test_an_excluded_category_is_in_no_list_and_the_list_is_still_full(shop_client, promoted):
    _rule("exclude", "even", target_type="category")

    for customer in ("alice", "bob"):  # the model's lists: still k long, from deeper down
        products = _products(shop_client.get(url(customer), {"k": 5}).json())
        assert len(products) == 5 and all(int(p.split("-")[1]) % 2 == 1 for p in products), (customer, products)
    assert _products(shop_client.get(url("somebody-new")).json()) == ["p-1"]  # popular: p-0 is even


def test_a_boosted_product_of_the_model_moves_up_and_says_why(shop_client, promoted):
    natural = _products(shop_client.get(url("bob"), {"k": 8}).json())
    _rule("boost", natural[7], factor=9.0)  # position 8 -> 0.89, ahead of the first

    body = shop_client.get(url("bob"), {"k": 8}).json()

    assert _products(body) == [natural[7], *natural[:7]]
    assert body["items"][0]["rule"]["action"] == "boost" and body["items"][0]["score"] is not None


def test_an_ended_rule_stops_at_once_and_a_scheduled_one_waits_for_its_start(shop_client, catalog):
    rule = _rule("pin", "p-11", rank=1)
    assert _products(shop_client.get(url("alice")).json())[0] == "p-11"

    rule_end(rule_id=rule.pk, actor="user:bo")
    assert "p-11" not in _products(shop_client.get(url("alice")).json())[:1]

    later = _rule("pin", "p-9", rank=1, starts_at=timezone.now() + timedelta(hours=1))
    assert [r.id for r in rules_in_force()] == [] and later.pk
    MerchandisingRule.objects.filter(pk=later.pk).update(starts_at=timezone.now() - timedelta(seconds=1))
    # Another process's change (no rules_forget here): seen once the process reads the rules again.
    assert _products(shop_client.get(url("alice")).json())[0] != "p-9"
    from training.services.rules import rules_forget

    rules_forget()
    assert _products(shop_client.get(url("alice")).json())[0] == "p-9"


def test_a_rule_written_elsewhere_applies_within_the_refresh_interval(shop_client, catalog, settings):
    settings.RECSITE_RULES_REFRESH_SECONDS = 0.0  # read every request: the bound, made zero
    rules_in_force()
    MerchandisingRule.objects.create(name="elsewhere", action="pin", target_type="product", target="p-10", rank=1,
                                     starts_at=timezone.now(), ends_at=timezone.now() + timedelta(days=1),
                                     created_by="user:other")  # fmt: skip

    assert _products(shop_client.get(url("alice")).json())[0] == "p-10"


def test_creating_and_ending_a_rule_leave_an_audit_trail(db):
    Product.objects.create(external_id="p-x", category="shoes")
    rule = _rule("bury", "shoes", target_type="category", factor=2.0)
    rule_end(rule_id=rule.pk, actor="user:bo")
    rule_end(rule_id=rule.pk, actor="user:bo")  # ended already: no second row

    changes = list(MerchandisingRuleChange.objects.order_by("id").values_list("change", "actor"))
    assert changes == [("created", "user:ada"), ("ended", "user:bo")]
    assert MerchandisingRuleChange.objects.last().snapshot["target"] == "shoes"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"action": "pin", "target": "p-x", "target_type": "category"}, "Only a product can be pinned"),
        ({"action": "pin", "target": "p-x"}, "A pin needs a rank"),
        ({"action": "boost", "target": "p-x", "factor": 1.0}, "factor above 1"),
        ({"action": "exclude", "target": "nope"}, "There is no product"),
        ({"action": "exclude", "target": "nope", "target_type": "category"}, "No product is in the category"),
        ({"action": "exclude", "target": "p-x", "ends_at_offset": -1}, "must end after it starts"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_with_a_reason(db, fields, message):
    Product.objects.create(external_id="p-x", category="shoes")
    offset = fields.pop("ends_at_offset", 1)
    with pytest.raises(RuleInvalid, match=message):
        rule_create(actor="user:ada", name="r", target_type=fields.pop("target_type", "product"),
                    ends_at=timezone.now() + timedelta(days=offset), **fields)  # fmt: skip
    assert not MerchandisingRule.objects.exists()

"""Real-time personalisation: an accepted event changes the customer's next recommendations (issue 14).

A trained model that folds customers from their products ranks a new visitor, or a
customer with events since it was trained, from their products as they are at the
request: no fold, no retrain, no wait in between.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.demo import CATEGORIES, TASTE_GROUPS, demo_customer_id, demo_taste_categories
from engagement.models import Product
from tests.training.test_runs import run_now
from training.models import TrainingRun
from training.recommendation_cache import recommendations_cached
from training.services.precompute import recommendations_precompute_chunk

RECOMMENDATIONS = "/api/v1/recommendations/{}/?k=10"


@pytest.fixture
def trained(small_shop, settings) -> TrainingRun:
    settings.RECSITE_PRECOMPUTE = False
    run = run_now()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return run


def _click(client, customer: str, products: list[str]) -> None:
    now = timezone.now()
    events = [
        {"event_id": str(uuid.uuid4()), "customer": customer, "product": product, "hover_ms": 800,
         "dwell_ms": 20_000, "clicked": True, "occurred_at": (now - timedelta(seconds=len(products) - i)).isoformat()}
        for i, product in enumerate(products)
    ]  # fmt: skip
    response = client.post("/api/v1/events/", {"events": events}, format="json")
    assert response.status_code == 200 and response.json()["accepted"] == len(events), response.content


def _categories(items: list[dict]) -> Counter:
    category = dict(Product.objects.filter(external_id__in=[i["product"] for i in items]).values_list(
        "external_id", "category"))  # fmt: skip
    return Counter(category[i["product"]] for i in items)


def _in(category: str, count: int, skip: int = 0) -> list[str]:
    products = Product.objects.filter(category=category, active=True).order_by("pk")
    return list(products.values_list("external_id", flat=True)[skip : skip + count])


def test_a_new_visitors_clicks_in_one_taste_bring_that_taste_at_the_next_request(trained, shop_client):
    taste = TASTE_GROUPS["readers"]
    before = shop_client.get(RECOMMENDATIONS.format("visitor-1")).json()
    assert before["strategy"] == "popular" and before["customer_vector"] is None
    clicked = _in(taste[0], 3) + _in(taste[1], 3)

    _click(shop_client, "visitor-1", clicked)  # the periodic fold has not run: nothing folded
    after = shop_client.get(RECOMMENDATIONS.format("visitor-1")).json()

    assert after["strategy"] == "model" and after["customer_vector"] == "folded"
    assert after["model_version"] == trained.model_version.pk
    assert not {i["product"] for i in after["items"]} & set(clicked)  # seen at once, left out
    in_taste = sum(_categories(after["items"])[c] for c in taste)
    popular_in_taste = sum(_categories(before["items"])[c] for c in taste)
    # Planted: 2 of the 10 categories; popular products follow no taste.
    assert in_taste >= 6 and in_taste > popular_in_taste + 2, (after["items"], popular_in_taste)


def test_a_known_customer_who_changes_taste_is_ranked_by_the_new_one_at_once(trained, shop_client):
    customer = demo_customer_id(0)
    mine = demo_taste_categories(customer)
    new = next(group for group in TASTE_GROUPS.values() if not set(group) & mine)
    before = shop_client.get(RECOMMENDATIONS.format(customer)).json()
    assert before["strategy"] == "model" and before["customer_vector"] == "trained"
    before_new = sum(_categories(before["items"])[c] for c in new)

    clicked = _in(new[0], 15, skip=5) + _in(new[1], 15, skip=5)
    _click(shop_client, customer, clicked)
    after = shop_client.get(RECOMMENDATIONS.format(customer)).json()

    assert after["strategy"] == "model" and after["customer_vector"] == "folded"
    assert not {i["product"] for i in after["items"]} & set(clicked)
    after_new = sum(_categories(after["items"])[c] for c in new)
    assert after_new >= before_new + 3, (before["items"], after["items"])


def test_a_visitor_whose_products_the_model_does_not_know_gets_popular_products_without_them(trained, shop_client):
    Product.objects.create(external_id="brand-new", category=CATEGORIES[0])
    _click(shop_client, "visitor-2", ["brand-new"])

    body = shop_client.get(RECOMMENDATIONS.format("visitor-2")).json()

    assert body["strategy"] == "popular" and body["customer_vector"] is None
    assert "brand-new" not in {i["product"] for i in body["items"]}


def test_a_precomputed_list_stops_answering_once_the_customer_has_a_new_event(trained, shop_client, settings):
    settings.RECSITE_PRECOMPUTE, settings.RECSITE_PRECOMPUTE_K = True, 20
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    version = trained.model_version
    customer = demo_customer_id(3)
    recommendations_precompute_chunk(version_id=version.pk, customers=[version.customer_ids.index(customer)])
    cached = recommendations_cached(customer=customer, k=10)
    assert cached is not None and cached.customer_vector == "trained"
    assert shop_client.get(RECOMMENDATIONS.format(customer)).json()["items"][0]["product"] == cached.items[0].product

    _click(shop_client, customer, [cached.items[0].product])

    assert recommendations_cached(customer=customer, k=10) is None
    body = shop_client.get(RECOMMENDATIONS.format(customer)).json()
    assert body["customer_vector"] == "folded"
    assert cached.items[0].product not in {i["product"] for i in body["items"]}


def test_a_folded_visitors_recommendations_are_explained_by_the_products_they_just_clicked(trained, shop_client):
    clicked = _in(TASTE_GROUPS["readers"][0], 4)
    _click(shop_client, "visitor-3", clicked)

    body = shop_client.get(RECOMMENDATIONS.format("visitor-3") + "&explain=true").json()

    assert body["customer_vector"] == "folded"
    cited = [p for item in body["items"] for p in item["because"]["products"]]
    assert cited and {p["product"] for p in cited} <= set(clicked)
    assert all(p["clicks"] == 1 and p["events"] == 1 and p["dwell_s"] == 20 for p in cited)

"""GET /api/v1/products/popular/: the most engaged active products, for the shop."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from engagement.selectors import popular_cache_clear
from engagement.services import EventIn, engagement_fold, events_ingest

URL = "/api/v1/products/popular/"


@pytest.fixture(autouse=True)
def fresh_popular_cache():
    """The cache outlives each test's database transaction: start every test without it."""
    popular_cache_clear()
    yield
    popular_cache_clear()


def engage(customer: str, product: str, score: str, *, days_ago: float = 0, category: str = "") -> None:
    """Store one customer x product engagement as the fold would have left it."""
    Engagement.objects.create(
        customer=Customer.objects.get_or_create(external_id=customer)[0],
        product=Product.objects.get_or_create(external_id=product, defaults={"category": category})[0],
        score=Decimal(score),
        event_count=1,
        last_event_at=timezone.now() - timedelta(days=days_ago),
    )


def test_it_lists_popular_products_with_their_rank(shop_client):
    engage("c1", "p-a", "0.500")
    engage("c2", "p-a", "0.250")
    engage("c1", "p-b", "0.900")
    Product.objects.create(external_id="p-off", active=False)
    engage("c1", "p-off", "1.000")

    response = shop_client.get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "items": [
            {"product": "p-b", "score": 0.9, "customers": 1, "rank": 1},
            {"product": "p-a", "score": 0.75, "customers": 2, "rank": 2},
        ],
        "k": 10,
        "days": None,
        "category": None,
    }


def test_it_filters_by_window_and_category_and_returns_k(shop_client):
    engage("c1", "p-lamp", "0.500", days_ago=1, category="lighting")
    engage("c1", "p-bulb", "0.400", days_ago=2, category="lighting")
    engage("c1", "p-shade", "0.300", days_ago=3, category="lighting")
    engage("c1", "p-old", "0.900", days_ago=30, category="lighting")
    engage("c1", "p-rug", "0.900", days_ago=1, category="textiles")

    body = shop_client.get(URL, {"k": 2, "days": 7, "category": "lighting"}).json()

    assert [(i["product"], i["rank"]) for i in body["items"]] == [("p-lamp", 1), ("p-bulb", 2)]
    assert (body["k"], body["days"], body["category"]) == (2, 7, "lighting")


def test_an_empty_shop_gets_no_items(shop_client):
    response = shop_client.get(URL)

    assert response.status_code == 200
    assert response.json()["items"] == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"k": "abc"}, "k"),
        ({"days": 0}, "days"),
        ({"days": 3651}, "days"),
        ({"days": 14}, "days"),
        ({"days": "7.5"}, "days"),
        ({"category": "x" * 101}, "category"),
    ],
)
def test_it_answers_400_with_the_field_for_a_bad_parameter(shop_client, params, field):
    response = shop_client.get(URL, params)

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_it_answers_401_without_a_key(anonymous_client, db):
    assert anonymous_client.get(URL).status_code == 401


def test_a_fold_that_adds_engagement_shows_in_the_popular_list_at_once(shop_client, django_capture_on_commit_callbacks):
    assert shop_client.get(URL).json()["items"] == []  # the empty ranking is now cached
    events_ingest(events=[
        EventIn(event_id=uuid.uuid4(), customer="c1", product="p-new", hover_ms=0, dwell_ms=30_000, clicked=True,
                occurred_at=timezone.now()),
    ])  # fmt: skip

    with django_capture_on_commit_callbacks(execute=True):
        assert engagement_fold().events_folded == 1

    assert [item["product"] for item in shop_client.get(URL).json()["items"]] == ["p-new"]


def test_days_takes_one_of_the_windows_and_says_which(shop_client):
    engage("c1", "p-a", "0.500", days_ago=20)

    assert [i["product"] for i in shop_client.get(URL, {"days": 30}).json()["items"]] == ["p-a"]
    assert shop_client.get(URL, {"days": 7}).json()["items"] == []
    refused = shop_client.get(URL, {"days": 14})
    assert refused.status_code == 400
    assert refused.json() == {"days": ["Must be one of 1, 7, 30, 90, 365 (days)."]}

"""GET /api/v1/products/popular/: the most engaged active products, for the shop."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from engagement.selectors import popular_cache_clear

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
        ({"category": "x" * 101}, "category"),
    ],
)
def test_it_answers_400_with_the_field_for_a_bad_parameter(shop_client, params, field):
    response = shop_client.get(URL, params)

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_it_answers_401_without_a_key(anonymous_client, db):
    assert anonymous_client.get(URL).status_code == 401

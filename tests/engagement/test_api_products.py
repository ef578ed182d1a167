"""PUT /api/v1/products/: the shop's catalog, upserted by product id."""

from decimal import Decimal

import pytest

from engagement.models import Product

URL = "/api/v1/products/"


def put(client, products):
    return client.put(URL, products, format="json")


def test_it_creates_then_updates_products_by_id(shop_client):
    first = put(shop_client, [{"product": "p-1", "name": "Lamp", "category": "lighting", "price": "19.90"}])
    second = put(
        shop_client,
        [
            {"product": "p-1", "name": "Desk lamp", "category": "lighting", "price": "17.50", "active": False},
            {"product": "p-2", "name": "Rug", "category": "textiles"},
        ],
    )

    assert first.json() == {"created": 1, "updated": 0, "rejected": []}
    assert second.json() == {"created": 1, "updated": 1, "rejected": []}
    lamp = Product.objects.get(external_id="p-1")
    assert (lamp.name, lamp.price, lamp.active) == ("Desk lamp", Decimal("17.50"), False)
    assert Product.objects.get(external_id="p-2").active is True


def test_it_names_a_stub_product_created_by_an_event(shop_client):
    Product.objects.create(external_id="p-9", is_stub=True)

    put(shop_client, [{"product": "p-9", "name": "Vase", "category": "decor"}])

    vase = Product.objects.get(external_id="p-9")
    assert (vase.name, vase.is_stub) == ("Vase", False)


def test_it_stores_the_valid_products_and_rejects_the_rest_by_index(shop_client):
    response = put(
        shop_client,
        [
            {"product": "ok", "name": "Fine"},
            {"product": "bad-price", "price": "-3"},
            {"name": "no id"},
            {"product": "bad-active", "active": "no"},
        ],
    )

    body = response.json()
    assert response.status_code == 200
    assert body["created"] == 1
    assert [(r["index"], list(r["errors"])) for r in body["rejected"]] == [
        (1, ["price"]),
        (2, ["product"]),
        (3, ["active"]),
    ]
    assert list(Product.objects.values_list("external_id", flat=True)) == ["ok"]


@pytest.mark.parametrize("body", [{"product": "p"}, "p", None])
def test_it_answers_400_for_a_body_that_is_not_a_list(shop_client, body):
    response = put(shop_client, body)

    assert response.status_code == 400
    assert Product.objects.count() == 0


def test_it_answers_400_and_stores_nothing_for_more_than_1000_products(shop_client):
    response = put(shop_client, [{"product": f"p-{i}"} for i in range(1001)])

    assert response.status_code == 400
    assert Product.objects.count() == 0


def test_it_answers_401_without_a_key(anonymous_client, db):
    assert put(anonymous_client, [{"product": "p"}]).status_code == 401

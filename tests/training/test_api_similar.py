"""GET /api/v1/products/<id>/similar/: a product's nearest active products in the model's product space."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from engagement.models import Product
from training.ml.artifact import load_artifact
from training.models import ModelVersion
from training.services import artifact_abspath, model_version_promote
from training.ml.explain_space import product_space

PRODUCTS = [f"p-{i}" for i in range(30)]


def url(product: str) -> str:
    return f"/api/v1/products/{product}/similar/"


@pytest.fixture
def catalog(db):
    for i, pid in enumerate(PRODUCTS):
        Product.objects.create(external_id=pid, name=f"Thing {i}", category="even" if i % 2 == 0 else "odd")


@pytest.fixture
def promoted(catalog, make_version) -> ModelVersion:
    version = make_version(customer_ids=["alice"], product_ids=PRODUCTS, seed=4)
    return model_version_promote(version_id=version.pk, actor="test")


def expected_order(version: ModelVersion, product: str, allowed: set[str]) -> list[tuple[str, float]]:
    """Brute force: every allowed product's cosine with ``product``, best first (ties by index)."""
    space = product_space(load_artifact(artifact_abspath(version), sha256=version.sha256).model)
    i = PRODUCTS.index(product)
    cosines = [(float(space[j] @ space[i]), -j, PRODUCTS[j]) for j in range(len(PRODUCTS)) if PRODUCTS[j] in allowed]
    return [(pid, round(c, 4)) for c, _, pid in sorted(cosines, reverse=True)]


def test_it_returns_the_k_nearest_products_in_the_models_space(shop_client, promoted):
    body = shop_client.get(url("p-3"), {"k": 5}).json()

    assert body["product"] == "p-3" and body["model_version"] == promoted.pk and body["reason"] is None
    expected = expected_order(promoted, "p-3", set(PRODUCTS) - {"p-3"})[:5]
    assert [(i["product"], i["similarity"]) for i in body["items"]] == expected
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
    first = Product.objects.get(external_id=expected[0][0])
    assert (body["items"][0]["name"], body["items"][0]["category"]) == (first.name, first.category)


def test_the_product_itself_and_inactive_products_are_never_similar(shop_client, promoted):
    nearest = [i["product"] for i in shop_client.get(url("p-3"), {"k": 3}).json()["items"]]
    # Deactivated after the model's catalog facts were read: the shortlist check still drops it.
    Product.objects.filter(external_id=nearest[0]).update(active=False, updated_at=timezone.now())
    Product.objects.filter(external_id="p-20").update(active=False)

    items = shop_client.get(url("p-3"), {"k": 100}).json()["items"]

    products = [i["product"] for i in items]
    assert "p-3" not in products and nearest[0] not in products and "p-20" not in products
    assert len(products) == len(PRODUCTS) - 3
    similarities = [i["similarity"] for i in items]
    assert similarities == sorted(similarities, reverse=True)


def test_an_inactive_product_still_has_similar_products(shop_client, promoted):
    Product.objects.filter(external_id="p-3").update(active=False, updated_at=timezone.now())

    body = shop_client.get(url("p-3"), {"k": 4}).json()

    assert len(body["items"]) == 4 and "p-3" not in {i["product"] for i in body["items"]}


def test_an_unknown_product_is_404(shop_client, promoted):
    response = shop_client.get(url("nope"))

    assert response.status_code == 404 and "detail" in response.json()


def test_without_a_model_the_list_is_empty_and_says_why(shop_client, catalog):
    body = shop_client.get(url("p-3")).json()

    assert body == {"product": "p-3", "model_version": None, "reason": "no_model", "items": []}


def test_a_product_newer_than_the_model_has_an_empty_list_and_a_reason(shop_client, promoted):
    Product.objects.create(external_id="brand-new")

    body = shop_client.get(url("brand-new")).json()

    assert body["reason"] == "not_in_model" and body["items"] == [] and body["model_version"] == promoted.pk


@pytest.mark.parametrize("k", ["0", "101", "ten"])
def test_k_outside_1_to_100_is_a_400(k, shop_client, promoted):
    response = shop_client.get(url("p-3"), {"k": k})

    assert response.status_code == 400 and "k" in response.json()


def test_k_100_is_the_cap_and_is_served(shop_client, promoted):
    body = shop_client.get(url("p-3"), {"k": 100}).json()

    assert len(body["items"]) == len(PRODUCTS) - 1  # the whole catalog but the product


def test_it_needs_the_same_credentials_as_recommendations(promoted, shop_client):
    anonymous = APIClient().get(url("p-3"))
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Api-Key not-a-key")

    assert anonymous.status_code in (401, 403) and wrong.get(url("p-3")).status_code in (401, 403)
    for client_url in (url("p-3"), f"/api/v1/recommendations/alice/"):
        assert shop_client.get(client_url).status_code == 200


def test_the_schema_documents_the_endpoint_its_errors_and_explain(admin_client):
    response = admin_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()

    similar = schema["paths"]["/api/v1/products/{product}/similar/"]["get"]
    assert similar["operationId"] == "products_similar"
    assert {"200", "400", "401", "403", "404", "429"} <= set(similar["responses"])
    recommendations = schema["paths"]["/api/v1/recommendations/{customer}/"]["get"]
    assert "explain" in {p["name"] for p in recommendations["parameters"]}
    assert "because" in schema["components"]["schemas"]["ExplainedItem"]["properties"]

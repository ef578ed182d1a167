"""Every id that ingest accepts can be read back by its URL (issue 17 row 5).

The shop's ids are free text: ingest takes a ``/`` in them, and trims leading and
trailing whitespace (ExternalIdField). Django decodes ``%2F`` before it routes, so a
``<str:>`` converter never matched such an id: the recommendations, similar-products and
dashboard pages answered 404 for a customer or product the service had just stored.
The reads route ids with a path converter and trim them as ingest does
(engagement/converters.py), so ``%20c%20`` reads customer ``c``.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
from django.urls import reverse

from engagement.models import Customer, Product
from tests.dashboard.conftest import merchandiser_web  # noqa: F401

# (customer, product) as the shop sends them; the ids stored are the trimmed ones.
SENT = [
    ("a/b", "x/y"),
    (" c ", " z "),
    ("/lead", "trail/"),
    ("d//e", "p/similar"),
    ("f/reach", "p/reach"),
]
STORED = [(customer.strip(), product.strip()) for customer, product in SENT]


def _as_sent_by_a_client(external_id: str) -> list[str]:
    """The two ways a client writes an id into a path: every ``/`` as %2F, or left as it is."""
    return [quote(external_id, safe=""), quote(external_id, safe="/")]


@pytest.fixture
def ingested(shop_client):
    """Each customer engaged with its product, sent through the API; one more product for popular lists."""
    shop_client.put("/api/v1/products/", [{"product": product, "name": "odd id"} for _, product in SENT], format="json")
    events = [
        {"event_id": str(uuid.uuid4()), "customer": customer, "product": product, "clicked": True}
        for customer, product in SENT
    ] + [{"event_id": str(uuid.uuid4()), "customer": "someone", "product": "plain", "clicked": True}]
    answer = shop_client.post("/api/v1/events/", {"events": events}, format="json")
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.content
    assert set(Customer.objects.values_list("external_id", flat=True)) >= {c for c, _ in STORED}
    assert set(Product.objects.values_list("external_id", flat=True)) >= {p for _, p in STORED}


@pytest.mark.parametrize(("sent", "stored"), list(zip(SENT, STORED)), ids=[c for c, _ in STORED])
def test_recommendations_are_read_back_for_every_customer_id_ingest_accepted(sent, stored, ingested, shop_client):
    (customer_sent, _), (customer, product) = sent, stored
    for written in _as_sent_by_a_client(customer_sent):
        answer = shop_client.get(f"/api/v1/recommendations/{written}/")

        assert answer.status_code == 200, (written, answer.content[:200])
        body = answer.json()
        assert body["customer"] == customer
        # The stored customer was found: the product they engaged with is left out as seen.
        assert product not in [item["product"] for item in body["items"]]


@pytest.mark.parametrize(("sent", "stored"), list(zip(SENT, STORED)), ids=[p for _, p in STORED])
def test_similar_products_are_read_back_for_every_product_id_ingest_accepted(sent, stored, ingested, shop_client):
    (_, product_sent), (_, product) = sent, stored
    for written in _as_sent_by_a_client(product_sent):
        answer = shop_client.get(f"/api/v1/products/{written}/similar/")

        assert answer.status_code == 200, (written, answer.content[:200])
        assert answer.json()["product"] == product


def test_the_api_reverses_an_id_with_a_slash_to_a_url_that_reads_it_back(ingested, shop_client):
    assert shop_client.get(reverse("training:recommendations", args=["a/b"])).json()["customer"] == "a/b"
    assert shop_client.get(reverse("training:product-similar", args=["x/y"])).json()["product"] == "x/y"


def test_the_popular_products_route_is_not_taken_for_a_product_id(ingested, shop_client):
    answer = shop_client.get("/api/v1/products/popular/")

    assert answer.status_code == 200
    assert isinstance(answer.json()["items"], list)


def test_a_blank_id_is_not_found(ingested, shop_client):
    # Ingest refuses a blank id, so no customer or product can have one.
    assert shop_client.get("/api/v1/recommendations/%20/").status_code == 404
    assert shop_client.get("/api/v1/products/%20/similar/").status_code == 404


@pytest.mark.parametrize(("sent", "stored"), list(zip(SENT, STORED)), ids=[c for c, _ in STORED])
def test_the_dashboard_links_open_the_pages_of_every_id_ingest_accepted(
    sent, stored, ingested, merchandiser_web  # noqa: F811
):
    customer, product = stored
    page = merchandiser_web.get(reverse("dashboard:customer_detail", args=[customer]))
    assert page.status_code == 200
    assert page.context["customer"].external_id == customer
    for name in ("product_detail", "product_reach", "product_similar"):
        page = merchandiser_web.get(reverse(f"dashboard:{name}", args=[product]))
        assert page.status_code == 200, (name, page.status_code)
        assert page.context["product"].external_id == product, name


@pytest.mark.parametrize(("sent", "stored"), list(zip(SENT, STORED)), ids=[c for c, _ in STORED])
def test_the_dashboard_opens_the_pages_of_ids_written_into_the_path_by_hand(
    sent, stored, ingested, merchandiser_web  # noqa: F811
):
    (customer_sent, product_sent), (customer, product) = sent, stored
    for written in _as_sent_by_a_client(customer_sent):
        page = merchandiser_web.get(f"/dashboard/customers/{written}/")
        assert page.status_code == 200, (written, page.status_code)
        assert page.context["customer"].external_id == customer
    # A product id ending in /reach or /similar, written by hand, names that panel of
    # another product: Django routes the decoded path. The dashboard's own links escape it.
    suffixes = ("reach/", "similar/") if product.endswith(("/reach", "/similar")) else ("", "reach/", "similar/")
    for written in _as_sent_by_a_client(product_sent):
        for suffix in suffixes:
            page = merchandiser_web.get(f"/dashboard/products/{written}/{suffix}")
            assert page.status_code == 200, (written, suffix, page.status_code)
            assert page.context["product"].external_id == product, (written, suffix)

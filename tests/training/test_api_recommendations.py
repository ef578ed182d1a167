"""GET /api/v1/recommendations/<customer>/: the model's top products, or popular ones."""

from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from training.models import ModelVersion
from training.services import artifact_abspath, model_version_promote

PRODUCTS = [f"p-{i}" for i in range(12)]
CUSTOMERS = ["alice", "bob"]


def url(customer: str) -> str:
    return f"/api/v1/recommendations/{customer}/"


def engage(customer: str, product: str, score: str = "0.500") -> None:
    Engagement.objects.create(
        customer=Customer.objects.get_or_create(external_id=customer)[0],
        product=Product.objects.get(external_id=product),
        last_event_at=timezone.now() - timedelta(hours=1), score=score, dwell_decayed=0.5,
    )  # fmt: skip


@pytest.fixture
def catalog(db):
    for i, pid in enumerate(PRODUCTS):
        Product.objects.create(external_id=pid, category="even" if i % 2 == 0 else "odd")
    engage("alice", "p-0", "0.900")
    engage("bob", "p-0", "0.800")
    engage("bob", "p-1", "0.700")


@pytest.fixture
def promoted(catalog, make_version) -> ModelVersion:
    version = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=3)
    return model_version_promote(version_id=version.pk, actor="test")


def test_without_a_promoted_model_it_serves_popular_products(shop_client, catalog):
    body = shop_client.get(url("carol")).json()

    assert body["strategy"] == "popular" and body["model_version"] is None
    assert [i["product"] for i in body["items"][:2]] == ["p-0", "p-1"]
    assert [i["rank"] for i in body["items"]] == list(range(1, len(body["items"]) + 1))


def test_a_known_customer_without_a_model_gets_popular_products_minus_seen(shop_client, catalog):
    body = shop_client.get(url("bob")).json()

    assert body["strategy"] == "popular"
    assert {"p-0", "p-1"}.isdisjoint(i["product"] for i in body["items"])


def test_an_unknown_customer_gets_popular_products_even_with_a_model(shop_client, promoted):
    body = shop_client.get(url("somebody-new")).json()

    assert body["strategy"] == "popular" and body["items"][0]["product"] == "p-0"


def test_a_known_customer_gets_the_models_top_k_without_seen_products(shop_client, promoted):
    body = shop_client.get(url("bob"), {"k": 5}).json()

    assert body["strategy"] == "model" and body["model_version"] == promoted.pk and body["customer"] == "bob"
    products = [i["product"] for i in body["items"]]
    assert len(products) == 5 and {"p-0", "p-1"}.isdisjoint(products)
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_it_shows_seen_products_when_asked(shop_client, promoted):
    body = shop_client.get(url("bob"), {"k": 12, "exclude_seen": "false"}).json()

    assert {"p-0", "p-1"} <= {i["product"] for i in body["items"]}


def test_it_never_recommends_an_inactive_product(shop_client, promoted):
    Product.objects.filter(external_id__in=["p-2", "p-3", "p-4"]).update(active=False, updated_at=timezone.now())

    body = shop_client.get(url("alice"), {"k": 100}).json()

    products = {i["product"] for i in body["items"]}
    assert products == set(PRODUCTS) - {"p-0", "p-2", "p-3", "p-4"}


def test_it_filters_by_category(shop_client, promoted):
    body = shop_client.get(url("alice"), {"category": "odd", "k": 100}).json()

    assert {i["product"] for i in body["items"]} == {f"p-{i}" for i in range(1, 12, 2)}


def test_it_scores_with_the_promoted_models_scorer(shop_client, promoted):
    from training.services import model_version_load

    loaded = model_version_load(promoted)
    expected = loaded.scorer.score([loaded.customer_index["alice"]])[0]

    body = shop_client.get(url("alice"), {"k": 3}).json()

    for item in body["items"]:
        assert item["score"] == pytest.approx(float(expected[loaded.product_index[item["product"]]]), abs=1e-4)


@pytest.mark.parametrize("params", [{"k": 0}, {"k": 101}, {"k": "ten"}, {"exclude_seen": "maybe"}])
def test_bad_parameters_get_a_400_naming_the_field(shop_client, catalog, params):
    response = shop_client.get(url("alice"), params)

    assert response.status_code == 400
    assert set(response.json()) == set(params)


def test_it_needs_the_shops_key(anonymous_client, catalog):
    assert anonymous_client.get(url("alice")).status_code == 401


def test_a_corrupt_promoted_artifact_is_refused_and_the_last_good_model_keeps_serving(
    shop_client, promoted, make_version
):
    assert shop_client.get(url("alice")).json()["model_version"] == promoted.pk
    tampered = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=4)
    path = artifact_abspath(tampered)
    path.write_bytes(path.read_bytes()[:-10])
    # Promoted behind the service's back (the service itself would refuse it).
    ModelVersion.objects.filter(pk=promoted.pk).update(status=ModelVersion.Status.RETIRED)
    ModelVersion.objects.filter(pk=tampered.pk).update(status=ModelVersion.Status.PROMOTED)

    body = shop_client.get(url("alice")).json()

    assert body["strategy"] == "model" and body["model_version"] == promoted.pk


def test_a_pairs_new_events_do_not_change_its_score_under_the_same_model(shop_client, promoted):
    def score_of(product: str) -> float:
        body = shop_client.get(url("alice"), {"k": 100, "exclude_seen": "false"}).json()
        return next(i["score"] for i in body["items"] if i["product"] == product)

    before = score_of("p-5")
    engage("alice", "p-5", "1.000")  # alice now dwells on p-5 for a long time

    assert score_of("p-5") == before  # served features are frozen with the model version


def test_a_refused_artifact_is_tried_again_and_served_once_it_reads_back(
    shop_client, promoted, make_version, monkeypatch
):
    monkeypatch.setattr("training.serving.REFUSED_RETRY_SECONDS", 0)  # retry at every refresh
    assert shop_client.get(url("alice")).json()["model_version"] == promoted.pk  # loaded in this process
    newer = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=5)
    path = artifact_abspath(newer)
    good = path.read_bytes()
    path.unlink()  # not visible on this machine yet (a shared volume lagging behind)
    ModelVersion.objects.filter(pk=promoted.pk).update(status=ModelVersion.Status.RETIRED)
    ModelVersion.objects.filter(pk=newer.pk).update(status=ModelVersion.Status.PROMOTED)
    assert shop_client.get(url("alice")).json()["model_version"] == promoted.pk  # refused, old one serves
    Product.objects.filter(external_id="p-7").update(active=False, updated_at=timezone.now())
    # While the new version is refused, catalog changes still reach the old one.
    assert "p-7" not in {i["product"] for i in shop_client.get(url("alice"), {"k": 100}).json()["items"]}

    path.write_bytes(good)

    assert shop_client.get(url("alice")).json()["model_version"] == newer.pk


def test_a_deactivation_the_catalog_stamp_missed_is_still_never_recommended(shop_client, promoted):
    shop_client.get(url("alice"))  # the active mask is built now
    # Deactivated without moving updated_at: what two out-of-order catalog commits look like
    # to the stamp (Max(updated_at), count), so the mask stays stale.
    top = shop_client.get(url("alice"), {"k": 3}).json()["items"][0]["product"]
    Product.objects.filter(external_id=top).update(active=False)

    body = shop_client.get(url("alice"), {"k": 3}).json()

    assert top not in {i["product"] for i in body["items"]} and len(body["items"]) == 3


@pytest.mark.parametrize("explain", [False, True])
def test_the_hand_built_body_is_what_the_output_serializer_gives(shop_client, promoted, explain):
    """recommendations_payload skips the serializer for speed: the body must not change."""
    from training.apis import RecommendationsOutputSerializer, recommendations_payload
    from training.selectors import recommendations_get
    from training.serving import Recommendations, RecommendedItem

    answers = [
        recommendations_get(customer="alice", k=5).recommendations,  # the model's, trained
        recommendations_get(customer="nobody", k=5).recommendations,  # popular, model_version None
        Recommendations("c", 7, "model", [RecommendedItem("p", 0.5, 1), RecommendedItem("q", -1.25, 2)], "folded"),
        Recommendations("c", None, "popular", []),
    ]
    assert {a.strategy for a in answers} == {"model", "popular"}
    for answer in answers:
        built = recommendations_payload(answer)
        assert built == RecommendationsOutputSerializer(answer).data
        assert list(built) == list(RecommendationsOutputSerializer(answer).data), "the same key order"
    body = shop_client.get(url("alice"), {"k": 5, "explain": explain}).json()
    assert body["items"] and all(("because" in item) == explain for item in body["items"])
    assert [item["product"] for item in body["items"]] == [i.product for i in answers[0].items]

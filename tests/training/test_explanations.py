"""Why each recommendation: the service, the API's ?explain=true, and faithfulness on a trained model."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pytest
import torch
from django.conf import settings
from django.utils import timezone

from engagement.models import Customer, Engagement, Product, SuspiciousCustomer
from tests.training.conftest import seed_small_shop
from training.ml.artifact import save_artifact
from training.ml.data import leave_last_out, product_prior
from training.ml.loop import TrainConfig, train
from training.ml.model import RecommenderConfig, RecommenderNN
from training.models import ModelVersion
from training.recommendation_cache import recommendations_cached
from training.serving import RecommendedItem, Recommendations, served_model
from training.services import model_version_promote
from training.services.dataset import training_data_load
from training.services.options import _configs
from training.services.explain import _model_because, _training_rows, recommendations_explain, seconds_text
from training.ml.explain_faithfulness import FoldInConfig, measure_faithfulness
from training.ml.customers import customer_history
from training.ml.explain_fold import measure_fold_faithfulness, removal_supports
from training.ml.explain_space import Dense, InfluenceConfig, negatives_sample, supporting_products

PRODUCTS = [f"p-{i}" for i in range(12)]
CUSTOMERS = ["alice", "bob"]


def url(customer: str) -> str:
    return f"/api/v1/recommendations/{customer}/"


def engage(customer: str, product: str, *, dwell_ms: int = 45_000, clicks: int = 1) -> None:
    Engagement.objects.create(
        customer=Customer.objects.get_or_create(external_id=customer)[0],
        product=Product.objects.get(external_id=product), last_event_at=timezone.now() - timedelta(hours=1),
        score="0.500", dwell_decayed=0.5, clicks_decayed=float(clicks), dwell_ms_total=dwell_ms, clicks=clicks,
        hover_ms_total=1200, event_count=2,
    )  # fmt: skip


@pytest.fixture
def catalog(db):
    for i, pid in enumerate(PRODUCTS):
        Product.objects.create(external_id=pid, name=f"Thing {i}", category="even" if i % 2 == 0 else "odd")
    engage("alice", "p-0")
    for product in ("p-0", "p-1", "p-2", "p-3"):
        engage("bob", product)


@pytest.fixture
def promoted(catalog, make_version) -> ModelVersion:
    version = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=3)
    return model_version_promote(version_id=version.pk, actor="test")


def ranking(body: dict) -> list[tuple]:
    return [(i["product"], i["score"], i["rank"]) for i in body["items"]]


# --- the API ---


def test_because_is_added_only_when_asked_and_the_ranking_is_the_same(shop_client, promoted):
    plain = shop_client.get(url("bob"), {"k": 6}).json()
    explained = shop_client.get(url("bob"), {"k": 6, "explain": "true"}).json()

    assert all("because" not in item for item in plain["items"])
    assert ranking(explained) == ranking(plain) and explained["strategy"] == "model"
    engaged = {"p-0", "p-1", "p-2", "p-3"}
    for item in explained["items"]:
        because = item["because"]
        assert because["source"] == "model" and because["reason"] in ("engaged_products", "no_support")
        assert because["sentence"]
        assert len(because["products"]) <= 3 and {p["product"] for p in because["products"]} <= engaged
        for product in because["products"]:
            assert product["dwell_s"] == 45.0 and product["clicks"] == 1 and product["events"] == 2
            assert product["hover_s"] == 1.2 and product["influence"] > 0
            assert product["name"] in because["sentence"]
        assert because["taste"] == list(dict.fromkeys(p["category"] for p in because["products"]))


def test_explain_false_is_the_plain_answer_and_a_bad_value_is_a_400(shop_client, promoted):
    assert shop_client.get(url("bob"), {"explain": "false"}).json() == shop_client.get(url("bob")).json()

    response = shop_client.get(url("bob"), {"explain": "perhaps"})

    assert response.status_code == 400 and "explain" in response.json()


def test_without_a_model_popular_items_say_so(shop_client, catalog):
    body = shop_client.get(url("alice"), {"explain": "true"}).json()

    assert body["strategy"] == "popular" and body["items"]
    for item in body["items"]:
        because = item["because"]
        assert (because["source"], because["reason"]) == ("popular", "no_model") and because["products"] == []
        assert "no trained model" in because["sentence"]


def test_a_new_customer_is_told_they_are_new(shop_client, promoted):
    body = shop_client.get(url("somebody-new"), {"explain": "true", "category": "odd"}).json()

    because = body["items"][0]["because"]
    assert because["reason"] == "new_customer" and because["sentence"].startswith("Popular in odd")


def test_a_customer_newer_than_the_model_is_told_the_next_training_includes_them(shop_client, promoted):
    engage("carol", "p-5")

    body = shop_client.get(url("carol"), {"explain": "true"}).json()

    assert body["strategy"] == "popular" and body["items"][0]["because"]["reason"] == "not_in_model"


def test_a_customer_with_only_zero_signal_rows_or_flagged_for_fraud_is_not_promised_the_next_training(
    shop_client, promoted
):
    Engagement.objects.create(  # an impression: no hover, dwell or click, so nothing training learns from
        customer=Customer.objects.create(external_id="dave"), product=Product.objects.get(external_id="p-5"),
        last_event_at=timezone.now(), score="0", event_count=1,
    )  # fmt: skip
    engage("eve", "p-5")
    SuspiciousCustomer.objects.create(
        customer=Customer.objects.get(external_id="eve"), too_many_events=True, first_seen_at=timezone.now(),
        last_seen_at=timezone.now(),
    )  # fmt: skip

    for customer in ("dave", "eve"):
        because = shop_client.get(url(customer), {"explain": "true"}).json()["items"][0]["because"]
        assert because["reason"] == "new_customer", customer
        assert "next training" not in because["sentence"] and "fraud" not in because["sentence"]


def _categorise(categories: dict[str, str], others: tuple[str, str]) -> None:
    """Give bob's products these categories, and the rest ``others`` in turn (p-4 the first, p-5 the second, ...)."""
    for i, product in enumerate(PRODUCTS):
        category = categories.get(product, others[i % 2])
        # updated_at by hand: update() skips auto_now, and serving reads categories when the catalog's stamp moves.
        Product.objects.filter(external_id=product).update(category=category, updated_at=timezone.now())


def _explained_with_products(shop_client, make_version, customer_vector: str) -> list[dict]:
    """Promote a seeded version, and return bob's explained model items that cite products."""
    version = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=3, customer_vector=customer_vector)
    model_version_promote(version_id=version.pk, actor="test")
    body = shop_client.get(url("bob"), {"k": 8, "explain": "true"}).json()
    assert body["strategy"] == "model"
    category = dict(Product.objects.values_list("external_id", "category"))
    cited = [{**item, "category": category[item["product"]]} for item in body["items"] if item["because"]["products"]]
    assert cited  # something to check: items the model explains with bob's products
    return cited


@pytest.mark.parametrize("customer_vector", ["id", "items"])  # the influence method, and removal from the fold
def test_an_item_outside_the_supporting_products_categories_gets_no_taste_sentence(
    shop_client, catalog, make_version, customer_vector
):
    _categorise({p: "shoes" for p in ("p-0", "p-1", "p-2", "p-3")}, others=("hats", "bags"))

    for item in _explained_with_products(shop_client, make_version, customer_vector):
        because = item["because"]
        assert item["category"] in ("hats", "bags")
        assert because["taste"] == ["shoes"]  # the API's field still lists the supporting products' categories
        assert "shoes" not in because["sentence"] and "taste" not in because["sentence"], because["sentence"]
        assert "It is in" not in because["sentence"]


@pytest.mark.parametrize("customer_vector", ["id", "items"])
def test_an_item_in_a_supporting_products_category_says_it_is_in_that_category(
    shop_client, catalog, make_version, customer_vector
):
    _categorise({"p-0": "shoes", "p-1": "hats", "p-2": "shoes", "p-3": "hats"}, others=("shoes", "hats"))

    explained = _explained_with_products(shop_client, make_version, customer_vector)

    for item in explained:
        because, own = item["because"], item["category"]
        other = ({"shoes", "hats"} - {own}).pop()
        assert because["taste"] == list(dict.fromkeys(p["category"] for p in because["products"]))
        assert other not in because["sentence"], because["sentence"]  # only the item's own category is named
        if own in because["taste"]:
            assert because["sentence"].endswith("behind it.") and f" It is in {own}, like " in because["sentence"]
        else:
            assert "It is in" not in because["sentence"]
    assert any(item["category"] in item["because"]["taste"] for item in explained)


def test_the_taste_sentence_counts_the_products_behind_the_item_in_its_category():
    rows = [
        {"product__external_id": f"p-{i}", "product__name": f"Thing {i}", "product__category": category,
         "hover_ms_total": 0, "dwell_ms_total": 0, "clicks": 1, "event_count": 1}
        for i, category in enumerate(["shoes", "shoes", "hats", "shoes"])
    ]  # fmt: skip

    def sentence(positions: list[int], category: str) -> str:
        drops = np.linspace(0.3, 0.1, len(positions))
        return _model_because(rows, np.array(positions), drops, category=category).sentence

    assert sentence([0], "shoes") == "Because you clicked Thing 0. It is in shoes, like the product behind it."
    assert sentence([0, 1], "shoes").endswith(". It is in shoes, like both products behind it.")
    assert sentence([0, 1, 3], "shoes").endswith(". It is in shoes, like all 3 products behind it.")
    assert sentence([0, 2, 3], "hats").endswith(". It is in hats, like 1 of the 3 products behind it.")
    assert sentence([0, 1], "hats") == "Because you clicked Thing 0 and clicked Thing 1."
    assert sentence([0, 1], "") == "Because you clicked Thing 0 and clicked Thing 1."  # a product the catalog lacks


def _promote_artifact(
    model, prior, customer_ids, product_ids, *, extra: dict, metrics: dict, channel_weights=(0.2, 0.4, 0.4)
) -> ModelVersion:
    """Store and promote ``model`` as training/services/pipeline.py stores one (``extra`` and ``metrics`` as given)."""
    name = f"explain-{uuid.uuid4().hex[:8]}.pt"
    model_dir = settings.RECSITE_TRAINING["MODEL_DIR"]
    model_dir.mkdir(parents=True, exist_ok=True)
    sha256 = save_artifact(
        model_dir / name, model=model, config=model.config, prior=prior, customer_ids=customer_ids,
        product_ids=product_ids, channel_weights=channel_weights, metrics=metrics, extra=extra,
    )  # fmt: skip
    version = ModelVersion.objects.create(
        artifact_path=name, sha256=sha256, config={"model": model.config.to_dict()}, customer_ids=customer_ids,
        product_ids=product_ids,
    )  # fmt: skip
    return model_version_promote(version_id=version.pk, actor="test")


def _seeded_model(seed: int = 3) -> RecommenderNN:
    torch.manual_seed(seed)
    return RecommenderNN(RecommenderConfig(num_customers=len(CUSTOMERS), num_products=len(PRODUCTS), embed_dim=8))


def test_only_rows_the_model_trained_on_are_considered(catalog):
    as_of = timezone.now() - timedelta(minutes=30)  # bob's four rows are an hour old: all trained on but two
    extra = {"as_of": as_of.isoformat(), "train": TrainConfig().to_dict()}
    _promote_artifact(_seeded_model(), np.zeros(len(PRODUCTS), np.float32), CUSTOMERS, PRODUCTS, extra=extra,
                      metrics={"data": {"target_recency": "customer"}})  # fmt: skip
    engage("bob", "p-4")  # a click after training: not trained on
    Engagement.objects.filter(customer__external_id="bob", product__external_id="p-4").update(
        last_event_at=timezone.now()
    )
    loaded = served_model().loaded

    trained = _training_rows("bob", loaded, InfluenceConfig.of_artifact(loaded.extra, loaded.metrics))

    # runs.py holds out bob's two newest rows (p-3, then p-2: created last) before training.
    assert {row["product__external_id"] for row in trained.rows} == {"p-0", "p-1"} and trained.total == 2
    # ... and none of bob's products, trained or not, is a negative.
    assert sorted(trained.every_product.tolist()) == [PRODUCTS.index(p) for p in ("p-0", "p-1", "p-2", "p-3", "p-4")]
    assert trained.targets.shape == (2, 3)


def test_the_training_settings_are_read_from_the_artifact_with_defaults():
    extra = {"train": {"positive_floor": 0.2, "embedding_l2": 0.0, "negatives_per_positive": 7}}
    config = InfluenceConfig.of_artifact(extra, {"data": {"target_recency": "shop"}})
    assert config == InfluenceConfig(positive_floor=0.2, embedding_l2=0.0, negatives_per_positive=7,
                                     target_recency="shop")  # fmt: skip
    assert InfluenceConfig.of_artifact({"train": {"positive_floor": "x"}}, {}) == InfluenceConfig()


def test_no_l2_and_a_single_engaged_product_still_explain(shop_client, catalog):
    extra = {"train": {**TrainConfig().to_dict(), "embedding_l2": 0.0}}
    _promote_artifact(_seeded_model(), np.zeros(len(PRODUCTS), np.float32), CUSTOMERS, PRODUCTS, extra=extra,
                      metrics={})  # fmt: skip

    response = shop_client.get(url("alice"), {"explain": "true"})  # alice engaged with p-0 only

    assert response.status_code == 200 and response.json()["strategy"] == "model"
    for item in response.json()["items"]:
        assert item["because"]["reason"] in ("engaged_products", "no_support")
        assert {p["product"] for p in item["because"]["products"]} <= {"p-0"}


def test_seconds_are_written_once_for_the_sentence_and_the_dashboard():
    assert [seconds_text(s) for s in (0.4, 2.5, 9.95, 10.5, 45.0, 119.5)] == [
        "0.4 s", "2.5 s", "10 s", "11 s", "45 s", "120 s",
    ]  # fmt: skip


def test_the_ranking_is_the_same_with_explanations_when_served_from_the_precomputed_lists(
    shop_client, promoted, settings, monkeypatch
):
    from training.services import precompute
    from training.services.precompute import recommendations_precompute_chunk

    # The chunk memoises the customer ids by version id alone; version ids repeat between
    # tests, so this test's memo must not outlive it (monkeypatch restores the old value).
    monkeypatch.setattr(precompute, "_customer_ids_memo", None)
    settings.RECSITE_PRECOMPUTE, settings.RECSITE_PRECOMPUTE_K = True, 20
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    recommendations_precompute_chunk(version_id=promoted.pk, customers=[0, 1])
    assert recommendations_cached(customer="bob", k=5) is not None  # the answer comes from the list

    plain = shop_client.get(url("bob"), {"k": 5}).json()
    explained = shop_client.get(url("bob"), {"k": 5, "explain": "true"}).json()

    assert ranking(explained) == ranking(plain) and all("because" in i for i in explained["items"])


# --- faithfulness on a trained model ---


def _train_small_shop():
    """Train as training/services/pipeline.py did before issue 13: its split, its prior, per-id customers and BCE.

    The influence method is for per-id customers, which a shop can still choose; issue 13's
    default (customers folded from their products) is explained by removal from the fold
    (the last test of this file). On the folded model the influence method was not
    faithful: cited 0.027 against random 0.013, larger on 54% of 46 items (docs/model.md).
    """
    seed_small_shop(n_customers=150, n_products=120, n_events=9000)
    data = training_data_load()
    x = data.interactions
    inner = leave_last_out(leave_last_out(x).train)
    config = RecommenderConfig(num_customers=x.num_customers, num_products=x.num_products, dot_branch=True)
    train_config = TrainConfig(epochs=5, batch_size=256, lr=5e-4 * 4)
    prior = product_prior(inner.train)
    result = train(
        model_config=config, train_config=train_config, train=inner.train, validation=inner, prior=prior,
        channel_weights=data.channel_weights,
    )  # fmt: skip
    return data, inner.train, result.model, prior, train_config


MARGIN = 0.03  # cited minus random drop; measured about 0.09 on this shop (docs/model.md)


def _faithful(measured) -> bool:
    return measured.cited_drop - measured.random_drop > MARGIN and measured.cited_wins >= 0.7


def test_removing_the_cited_products_lowers_the_score_more_than_removing_others(db, shop_client):
    data, trained, model, prior, train_config = _train_small_shop()
    extra = {"train": train_config.to_dict(), "as_of": data.as_of.isoformat()}
    metrics = {"data": {"target_recency": "customer"}}
    name = "explain-test.pt"
    model_dir = settings.RECSITE_TRAINING["MODEL_DIR"]
    sha256 = save_artifact(
        model_dir / name, model=model, config=model.config, prior=prior, customer_ids=data.customer_ids,
        product_ids=data.product_ids, channel_weights=data.channel_weights, metrics=metrics, extra=extra,
    )  # fmt: skip
    version = ModelVersion.objects.create(
        artifact_path=name, sha256=sha256, config={"model": model.config.to_dict()}, customer_ids=data.customer_ids,
        product_ids=data.product_ids,
    )  # fmt: skip
    model_version_promote(version_id=version.pk, actor="test")
    influence = InfluenceConfig.of_artifact(extra, metrics)
    dense = Dense.of(model, prior, data.channel_weights)
    x = data.interactions
    disagreements, cited_held_out = [], []

    def served(customer, item, engaged, targets, weights):
        """Cite what the API cites (the served path: the database's rows), as positions into the trained rows."""
        answer = Recommendations(data.customer_ids[customer], version.pk, "model",
                                 [RecommendedItem(data.product_ids[item], 0.0, 1)])  # fmt: skip
        cited = [data.product_ids.index(p.product) for p in recommendations_explain(answer)[answer.items[0].product]
                 .products]  # fmt: skip
        position = {int(p): i for i, p in enumerate(engaged)}
        cited_held_out.extend(c for c in cited if c not in position)
        # The measurement's own (bench) path on the trained rows must cite the same products.
        every = x.product_idx[x.customer_idx == customer]
        sample = negatives_sample(len(data.product_ids), every, seed=customer, positives=len(engaged))
        [(expected, _)] = supporting_products(
            dense, dense.customer_vector(model, customer), np.array([item]), engaged, targets, sample, config=influence
        )
        if {engaged[p] for p in expected} != set(cited):
            disagreements.append((customer, item))
        return np.array([position[c] for c in cited if c in position], dtype=np.int64)

    measure = dict(
        customers=24, items_per_customer=2, random_draws=3, seed=1, every_row=x, influence=influence,
        config=FoldInConfig.of_influence(influence, steps=80),
    )  # fmt: skip
    measured = measure_faithfulness(model, prior, data.channel_weights, trained, explain=served, **measure)

    print(f"faithfulness (small shop, served path): {measured.as_dict()}")
    assert cited_held_out == [] and disagreements == []
    assert measured.items >= 30
    assert _faithful(measured), measured  # a margin, not just "more"

    # The negative control: citing as many engaged products drawn at random fails the same thresholds.
    rng = np.random.default_rng(7)

    def at_random(customer, item, engaged, targets, weights):
        return rng.choice(len(engaged), size=min(3, len(engaged)), replace=False)

    control = measure_faithfulness(model, prior, data.channel_weights, trained, explain=at_random, **measure)
    print(f"faithfulness (small shop, random citations): {control.as_dict()}")
    assert control.items >= 30 and not _faithful(control)

    # Through the API: the same ranking with and without explain, cited products from the trained rows.
    customer = data.customer_ids[int(np.argmax(np.bincount(trained.customer_idx)))]
    body = shop_client.get(url(customer), {"k": 3, "explain": "true"}).json()
    assert body["strategy"] == "model"
    assert ranking(body) == ranking(shop_client.get(url(customer), {"k": 3}).json())
    index = data.customer_ids.index(customer)
    trained_products = {data.product_ids[p] for p in trained.product_idx[trained.customer_idx == index]}
    signals = {e.product.external_id: e for e in
               Engagement.objects.filter(customer__external_id=customer).select_related("product")}  # fmt: skip
    for item in body["items"]:
        cited = [p["product"] for p in item["because"]["products"]]
        assert cited and set(cited) <= trained_products, item  # a trained model's top items have supports
        for product in item["because"]["products"]:
            assert product["dwell_s"] == round(signals[product["product"]].dwell_ms_total / 1000, 1)
            assert product["category"] == signals[product["product"]].product.category


# --- faithfulness on the default model (customers folded from their products) ---


def test_on_the_default_folded_model_removing_the_cited_products_lowers_the_score_more(db, shop_client):
    """Trained as a run trains it with settings' defaults (issue 13: folded customers, softmax), served as the refold.

    The API cites by removing each product from the customer's fold; the measurement
    removes the cited products together, against as many others of the fold's window.
    """
    seed_small_shop(n_customers=150, n_products=120, n_events=9000)
    data = training_data_load()
    x = data.interactions
    inner = leave_last_out(leave_last_out(x).train)
    model_config, train_config = _configs({}, num_customers=x.num_customers, num_products=x.num_products,
                                          train_rows=len(inner.train.customer_idx))  # fmt: skip
    assert model_config.folds_items  # the default this test is about
    prior = product_prior(inner.train)
    result = train(
        model_config=model_config, train_config=train_config, train=inner.train, validation=inner, prior=prior,
        channel_weights=data.channel_weights,
    )  # fmt: skip
    model = result.refold(x)  # what the run saves: every customer folded from every row
    version = _promote_artifact(
        model, prior, data.customer_ids, data.product_ids,
        extra={"train": train_config.to_dict(), "as_of": data.as_of.isoformat()},
        metrics={"data": {"target_recency": "customer"}}, channel_weights=data.channel_weights,
    )  # fmt: skip
    history = customer_history(x, length=10 * model_config.history_length)  # every product, newest first
    disagreements = []

    def served(customer, item, products):
        """Cite what the API cites, as positions into the customer's products (newest first)."""
        answer = Recommendations(data.customer_ids[customer], version.pk, "model",
                                 [RecommendedItem(data.product_ids[item], 0.0, 1)])  # fmt: skip
        because = recommendations_explain(answer)[answer.items[0].product]
        position = {data.product_ids[p]: i for i, p in enumerate(products.tolist())}
        cited = np.array([position[p.product] for p in because.products], dtype=np.int64)
        vectors = [table.weight[customer].detach().numpy() for table in model.customer_tables()]
        [(expected, _)] = removal_supports(model, prior, data.channel_weights, products, np.array([item]), served=vectors)
        if expected.tolist() != cited.tolist():
            disagreements.append((customer, item))
        return cited

    measure = dict(customers=24, items_per_customer=2, random_draws=3, seed=1)
    measured = measure_fold_faithfulness(model, prior, data.channel_weights, history, explain=served, **measure)
    print(f"faithfulness (small shop, default folded model, served path): {measured}")
    assert disagreements == []
    assert measured.items >= 30
    assert measured.cited_drop - measured.random_drop > MARGIN and measured.cited_wins >= 0.7, measured

    rng = np.random.default_rng(7)
    window = model_config.history_length
    control = measure_fold_faithfulness(
        model, prior, data.channel_weights, history,
        explain=lambda customer, item, products: rng.choice(min(len(products), window), size=3, replace=False),
        **measure,
    )  # fmt: skip
    print(f"faithfulness (small shop, default folded model, random citations): {control}")
    assert control.items >= 30
    assert not (control.cited_drop - control.random_drop > MARGIN and control.cited_wins >= 0.7)

"""Precomputed recommendations: written after a promotion, served only while fresh, else computed on the fly."""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.utils import timezone

from engagement.models import Customer, Engagement, Product
from engagement.services import EventIn, engagement_fold, events_ingest
from engagement.tasks import compute_engagement
from training import recommendation_cache
from training.ml.neighbours import Blend, Neighbours
from training.models import ModelVersion
from training.recommendation_cache import list_key, recommendations_cached
from training.serving import recommendations_for, served_model
from training.services import model_version_promote, model_version_rollback
from training.services import precompute as precompute_module
from training.services.precompute import (
    precompute_progress,
    recommendations_precompute_chunk,
    recommendations_precompute_clear,
    recommendations_precompute_start,
    top_products,
)

PRODUCTS = [f"p-{i}" for i in range(80)]
CUSTOMERS = [f"c-{i}" for i in range(60)]
WORKER_TIMEOUT_SECONDS = 120


@pytest.fixture(autouse=True)
def _precompute_on(settings, request):
    """Precompute on (the SQLite pass has the file cache, where it is off by default), keys of this test only."""
    settings.RECSITE_PRECOMPUTE = True
    settings.RECSITE_PRECOMPUTE_K = 20
    settings.RECSITE_PRECOMPUTE_TTL_SECONDS = 600
    if "filebased" in settings.CACHES["default"]["BACKEND"]:
        # A few hundred leftover files would make the file cache cull entries at random.
        # (On Redis the cache shares its database with the tests' broker: never cleared.)
        cache.clear()
    if "celery_worker_process" not in request.fixturenames:
        # Version ids and artifacts repeat between test runs; lists written by another run
        # are not this test's. (A worker writes without the prefix: that test clears instead.)
        settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}


def shop(seed: int = 0) -> None:
    """A catalog (every 9th product inactive, two categories) and 0-6 engaged products per customer."""
    rng = random.Random(seed)
    for i, product in enumerate(PRODUCTS):
        Product.objects.create(external_id=product, category="even" if i % 2 == 0 else "odd", active=i % 9 != 4)
    now = timezone.now()
    for customer in CUSTOMERS:
        person = Customer.objects.create(external_id=customer)
        for product in rng.sample(PRODUCTS, rng.randint(0, 6)):
            Engagement.objects.create(
                customer=person, product=Product.objects.get(external_id=product), event_count=rng.randint(1, 4),
                last_event_at=now - timedelta(hours=1), score="0.500", dwell_decayed=0.5,
            )  # fmt: skip


@pytest.fixture
def promoted(db, make_version) -> ModelVersion:
    shop()
    version = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=5)
    return model_version_promote(version_id=version.pk, actor="test")


def precompute(version: ModelVersion) -> int:
    """Run the chunk service in this process over every customer of the version, in chunks of 25."""
    indices = list(range(len(CUSTOMERS)))
    return sum(
        recommendations_precompute_chunk(version_id=version.pk, customers=indices[start : start + 25])
        for start in range(0, len(indices), 25)
    )


def fold_event(customer: str, product: str) -> None:
    """Ingest one event and fold it, as the shop's traffic and beat's fold would."""
    event = EventIn(
        event_id=uuid.uuid4(), customer=customer, product=product, hover_ms=500, dwell_ms=20_000, clicked=True,
        occurred_at=timezone.now(),
    )  # fmt: skip
    assert events_ingest(events=[event]).accepted == 1
    assert engagement_fold().events_folded == 1


def test_the_cached_answer_equals_the_on_the_fly_answer_for_every_customer(promoted, shop_client):
    assert precompute(promoted) == len(CUSTOMERS)

    for customer in CUSTOMERS:
        for k in (1, 10, 20):
            cached = recommendations_cached(customer=customer, k=k)
            assert cached is not None, customer
            assert cached == recommendations_for(customer=customer, k=k)
        assert len(cached.items) == 20 and cached.model_version == promoted.pk
    body = shop_client.get(f"/api/v1/recommendations/{CUSTOMERS[3]}/", {"k": 7}).json()
    expected = recommendations_for(customer=CUSTOMERS[3], k=7)
    assert body["strategy"] == "model" and body["model_version"] == promoted.pk
    assert [(i["product"], i["score"], i["rank"]) for i in body["items"]] == [
        (i.product, i.score, i.rank) for i in expected.items
    ]


def test_a_cached_list_never_holds_a_seen_or_inactive_product(promoted):
    precompute(promoted)
    inactive = set(Product.objects.filter(active=False).values_list("external_id", flat=True))

    for customer in CUSTOMERS:
        engaged = Engagement.objects.filter(customer__external_id=customer)
        seen = set(engaged.values_list("product__external_id", flat=True))
        products = {item.product for item in recommendations_cached(customer=customer, k=20).items}
        assert not products & (seen | inactive)


def test_a_product_deactivated_after_the_precompute_is_not_served(promoted):
    precompute(promoted)
    customer = CUSTOMERS[0]
    top = recommendations_cached(customer=customer, k=10).items[0].product

    Product.objects.filter(external_id=top).update(active=False, updated_at=timezone.now())

    cached = recommendations_cached(customer=customer, k=10)
    assert cached is not None and top not in {i.product for i in cached.items} and len(cached.items) == 10
    assert cached == recommendations_for(customer=customer, k=10)


def test_new_engagement_for_a_customer_makes_the_next_answer_reflect_it(promoted, shop_client):
    precompute(promoted)
    customer, other = CUSTOMERS[1], CUSTOMERS[2]
    top = recommendations_cached(customer=customer, k=10).items[0].product

    fold_event(customer, top)

    assert recommendations_cached(customer=customer, k=10) is None  # stale: computed on the fly
    body = shop_client.get(f"/api/v1/recommendations/{customer}/").json()
    assert body["strategy"] == "model" and top not in {i["product"] for i in body["items"]}
    assert recommendations_cached(customer=other, k=10) is not None  # the others' lists still serve


def test_a_fold_that_commits_between_the_precomputes_read_and_its_write_is_not_undone(promoted, monkeypatch):
    """The race a delete-after-fold invalidation loses: the list is written after the fold, from older engagement."""
    customer = CUSTOMERS[4]
    product = PRODUCTS[10]
    read = precompute_module.engagement_seen_and_stamps

    def read_then_fold(customers):
        before = read(customers)
        fold_event(customer, product)  # commits after the chunk's read, before its cache write
        return before

    monkeypatch.setattr(precompute_module, "engagement_seen_and_stamps", read_then_fold)
    assert recommendations_precompute_chunk(version_id=promoted.pk, customers=[4]) == 1

    key = list_key(version_id=promoted.pk, sha256=promoted.sha256, customer_index=4)
    assert cache.get(key) is not None  # written after the fold...
    assert recommendations_cached(customer=customer, k=20) is None  # ...and never served
    assert product not in {i.product for i in recommendations_for(customer=customer, k=20).items}


def test_a_new_version_never_serves_the_old_versions_lists(promoted, make_version):
    precompute(promoted)
    customer = CUSTOMERS[5]
    old = recommendations_cached(customer=customer, k=10)
    successor = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=6)
    model_version_promote(version_id=successor.pk, actor="test")

    assert recommendations_cached(customer=customer, k=10) is None  # nothing precomputed for it yet
    fresh = recommendations_for(customer=customer, k=10)
    assert fresh.model_version == successor.pk and fresh.items != old.items

    precompute(successor)
    assert recommendations_cached(customer=customer, k=10) == fresh

    model_version_rollback(actor="test")  # the first version's lists are its own: they serve again
    assert recommendations_cached(customer=customer, k=10) == old


def test_a_process_still_serving_the_old_version_reads_only_its_lists(promoted, make_version, monkeypatch):
    precompute(promoted)
    customer = CUSTOMERS[6]
    old_served = served_model()
    old = recommendations_cached(customer=customer, k=10)
    successor = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=6)
    model_version_promote(version_id=successor.pk, actor="test")
    precompute(successor)
    new = recommendations_cached(customer=customer, k=10)
    assert new.model_version == successor.pk and new.items != old.items

    # A process that has not noticed the promotion yet still serves the old model.
    monkeypatch.setattr(recommendation_cache, "served_model", lambda: old_served)

    assert recommendations_cached(customer=customer, k=10) == old


def test_requests_a_list_cannot_answer_are_computed_on_the_fly(promoted, shop_client, settings):
    precompute(promoted)
    customer = CUSTOMERS[7]

    assert recommendations_cached(customer=customer, k=21) is None  # above RECSITE_PRECOMPUTE_K
    assert recommendations_cached(customer=customer, k=10, category="even") is None
    assert recommendations_cached(customer=customer, k=10, exclude_seen=False) is None
    assert recommendations_cached(customer="somebody-new", k=10) is None
    body = shop_client.get(f"/api/v1/recommendations/{customer}/", {"k": 30, "category": "odd"}).json()
    assert body["strategy"] == "model" and body["items"]
    assert all(int(i["product"][2:]) % 2 == 1 for i in body["items"])
    assert shop_client.get("/api/v1/recommendations/somebody-new/").json()["strategy"] == "popular"
    settings.RECSITE_PRECOMPUTE = False
    assert recommendations_cached(customer=customer, k=10) is None


def test_lists_written_for_a_smaller_k_do_not_answer_a_larger_one(promoted, settings):
    settings.RECSITE_PRECOMPUTE_K = 10
    precompute(promoted)
    settings.RECSITE_PRECOMPUTE_K = 20  # raised after the precompute

    assert recommendations_cached(customer=CUSTOMERS[8], k=10) is not None
    assert recommendations_cached(customer=CUSTOMERS[8], k=11) is None


def test_the_fan_out_takes_every_customer_or_only_the_recently_engaged(promoted, monkeypatch, settings):
    sent = []
    monkeypatch.setattr(precompute_module, "_send_chunks", lambda version_id, customers: sent.append(customers))

    started = recommendations_precompute_start(version_id=promoted.pk)

    assert sent == [list(range(len(CUSTOMERS)))] and started.customers == len(CUSTOMERS)
    old = timezone.now() - timedelta(days=40)
    Engagement.objects.filter(customer__external_id__in=CUSTOMERS[:30]).update(last_event_at=old)
    settings.RECSITE_PRECOMPUTE_ACTIVE_DAYS = 30
    recommendations_precompute_start(version_id=promoted.pk)
    engaged = set(Engagement.objects.values_list("customer__external_id", flat=True))
    assert sent[1] == [i for i, c in enumerate(CUSTOMERS) if i >= 30 and c in engaged]


def test_a_chunk_of_a_version_no_longer_promoted_writes_nothing(promoted, make_version):
    successor = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=6)
    model_version_promote(version_id=successor.pk, actor="test")

    assert recommendations_precompute_chunk(version_id=promoted.pk, customers=[0, 1, 2]) == 0
    assert cache.get(list_key(version_id=promoted.pk, sha256=promoted.sha256, customer_index=0)) is None


def test_promotions_and_rollbacks_enqueue_the_precompute_when_they_commit(
    db, make_version, monkeypatch, settings, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr("training.queue.precompute_send", sent.append)
    first = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=1)
    second = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=2)

    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(version_id=first.pk, actor="test")
        assert sent == []  # not before the commit
        model_version_promote(version_id=second.pk, actor="test")
        model_version_promote(version_id=second.pk, actor="test")  # already promoted: nothing to do
        model_version_rollback(actor="test")
    settings.RECSITE_PRECOMPUTE = False
    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(version_id=second.pk, actor="test")

    assert sent == [first.pk, second.pk, first.pk]


def test_a_broker_outage_does_not_undo_the_promotion(db, make_version, monkeypatch, django_capture_on_commit_callbacks):
    def down(version_id):
        raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr("training.queue.precompute_send", down)
    version = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=1)

    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(version_id=version.pk, actor="test")

    version.refresh_from_db()
    assert version.status == ModelVersion.Status.PROMOTED


def test_top_products_ranks_by_score_then_product_index_like_the_api():
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.9], [0.3, 0.2, 0.1, 0.0, 0.4]], dtype=np.float32)
    allowed = np.array([[True, True, True, True, False], [False, True, False, False, False]])

    top, top_scores, counts = top_products(scores, allowed, 3)

    assert counts.tolist() == [3, 1]
    assert top[0].tolist() == [1, 0, 2] and top_scores[0].tolist() == pytest.approx([0.9, 0.5, 0.5])
    assert top[1, :1].tolist() == [1]


def _wait_for_precompute(version_id: int) -> dict:
    deadline = time.monotonic() + WORKER_TIMEOUT_SECONDS
    while True:
        progress = precompute_progress(version_id=version_id)
        if progress is not None and progress["done"] == progress["chunks"]:
            return progress
        if time.monotonic() > deadline:
            pytest.fail(f"The precompute of version {version_id} did not finish: {progress}")
        time.sleep(0.1)  # polling another process's work


@pytest.mark.usefixtures("transactional_db", "celery_worker_process")
def test_a_promotion_precomputes_every_customer_in_a_real_worker(make_version, settings):
    # The worker reads artifacts from the configured directory, and so must this process.
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "MODEL_DIR": django_settings.VAR_DIR / "models"}
    shop()
    version = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=5)
    recommendations_precompute_clear(version_id=version.pk)  # what an earlier test run left

    model_version_promote(version_id=version.pk, actor="test")  # commits: the worker gets the task

    progress = _wait_for_precompute(version.pk)
    assert progress["customers"] == len(CUSTOMERS)
    for customer in CUSTOMERS:
        cached = recommendations_cached(customer=customer, k=20)
        assert cached is not None and cached == recommendations_for(customer=customer, k=20)

    # Several chunks share the work: as many tasks as chunks, each done by a worker.
    settings.RECSITE_PRECOMPUTE_CHUNK = 25
    recommendations_precompute_clear(version_id=version.pk)
    started = recommendations_precompute_start(version_id=version.pk)
    assert started.chunks == 3
    assert _wait_for_precompute(version.pk)["done"] == 3
    assert all(recommendations_cached(customer=c, k=10) is not None for c in CUSTOMERS)


@pytest.mark.usefixtures("transactional_db", "celery_worker_process")
def test_a_fold_has_the_lists_of_its_customers_precomputed_again(make_version, settings):
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "MODEL_DIR": django_settings.VAR_DIR / "models"}
    shop()
    version = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=5)
    recommendations_precompute_clear(version_id=version.pk)
    model_version_promote(version_id=version.pk, actor="test")
    _wait_for_precompute(version.pk)
    customer = CUSTOMERS[9]
    top = recommendations_cached(customer=customer, k=10).items[0].product
    event = EventIn(
        event_id=uuid.uuid4(), customer=customer, product=top, hover_ms=0, dwell_ms=5_000, clicked=False,
        occurred_at=timezone.now(),
    )  # fmt: skip
    events_ingest(events=[event])

    # The task's body here: in the SQLite pass the worker's own settings have precompute off.
    assert compute_engagement()["events_folded"] == 1

    deadline = time.monotonic() + WORKER_TIMEOUT_SECONDS
    while (cached := recommendations_cached(customer=customer, k=10)) is None:
        if time.monotonic() > deadline:
            pytest.fail("The customer's list was not precomputed again after the fold.")
        time.sleep(0.1)  # polling another process's work
    assert top not in {i.product for i in cached.items}
    assert cached == recommendations_for(customer=customer, k=10)


def test_with_a_neighbour_blend_the_cached_answer_still_equals_the_on_the_fly_one(db, make_version):
    """The blend reads the customer's engaged products newest first: the precompute must read the same ones."""
    shop(seed=1)
    rng = np.random.default_rng(0)
    now = timezone.now()
    for row in Engagement.objects.all():  # distinct times, and some ties (broken by product pk)
        row.last_event_at = now - timedelta(minutes=int(rng.integers(0, 5)))
        row.save(update_fields=["last_event_at"])
    neighbours = Neighbours(
        rng.integers(0, len(PRODUCTS), size=(len(PRODUCTS), 6)).astype(np.int32),
        rng.random((len(PRODUCTS), 6)).astype(np.float32),
    )
    blend = Blend(neighbours, weight=1.0, decay=0.5)
    version = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=5, blend=blend)
    plain = make_version(customer_ids=CUSTOMERS, product_ids=PRODUCTS, seed=5)
    model_version_promote(version_id=plain.pk, actor="test")
    alone = {c: recommendations_for(customer=c, k=20).items for c in CUSTOMERS}
    version = model_version_promote(version_id=version.pk, actor="test")
    assert served_model().loaded.blend is not None

    assert precompute(version) == len(CUSTOMERS)

    changed = 0
    for customer in CUSTOMERS:
        cached = recommendations_cached(customer=customer, k=20)
        fresh = recommendations_for(customer=customer, k=20)
        assert cached is not None and [(i.product, i.rank) for i in cached.items] == [
            (i.product, i.rank) for i in fresh.items
        ]
        # The same products in the same order. The scorer's batched and single-row float32
        # results differ by ~1e-7; standardising divides by the row's deviation, tiny for this
        # untrained model, so a blended score can differ in its 4th decimal.
        assert [i.score for i in cached.items] == pytest.approx([i.score for i in fresh.items], abs=2e-3)
        changed += [i.product for i in cached.items] != [i.product for i in alone[customer]]
    assert changed > len(CUSTOMERS) // 2  # the blend does reorder: this is not the model alone twice

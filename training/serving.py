"""Serve recommendations: the promoted model, loaded once per process, and its fallback.

Each process keeps the promoted model in memory and, at most every
SERVING_REFRESH_SECONDS, asks the database which version is promoted and whether the
catalog changed. A new version is loaded beside the old one and swapped in with one
assignment, so a request in flight finishes on the model it started with. A version
whose artifact fails its checksum or its load is refused: the last good model keeps
serving (or popular products, if there never was one).

Once a model serves, that check runs in a background thread of the process: a request
never waits for it (the catalog check scans the product table, ~5-20 ms at 100,000
products, and loading a new version takes seconds). The thread checks every
SERVING_REFRESH_SECONDS whether or not requests come, so a process that was idle
answers its next request from the version promoted now, not from one rolled back
while it was idle. The first load, and every check when SERVING_REFRESH_SECONDS is 0
(tests), happen in the request.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.db.models import Count, Max

from engagement.models import Product
from engagement.selectors import customer_engaged_now, products_popular
from training.artifacts import FOLDED_THROUGH, model_version_load
from training.ml.artifact import ArtifactError, LoadedModel
from training.ml.customers import fold_products
from training.ml.topk import top_k
from training.models import ModelVersion

logger = logging.getLogger(__name__)

MAX_K = 100
REFUSED_RETRY_SECONDS = 30
ACTIVE_CHECK_MARGIN = 10


@dataclass(frozen=True)
class CatalogFacts:
    """The catalog as the model's product indices see it, read in one query."""

    active: np.ndarray  # bool per model product: inactive or deleted products are never shown
    category_codes: np.ndarray  # int32 per model product: its category's number in category_numbers
    category_numbers: dict[str, int]
    pks: np.ndarray  # int64 primary key per model product, -1 where the catalog has none
    pk_order: np.ndarray  # argsort of pks: primary keys back to model indices by binary search

    def indices_of(self, pks: list[int]) -> np.ndarray:
        """Return the model indices of these primary keys (those the model knows)."""
        pks = np.asarray(pks, dtype=np.int64)
        if not len(self.pks) or not len(pks):
            return np.zeros(0, dtype=np.int64)
        at = np.searchsorted(self.pks, pks, sorter=self.pk_order)
        at = self.pk_order[np.minimum(at, len(self.pks) - 1)]
        return at[self.pks[at] == pks]


@dataclass(frozen=True)
class ServedModel:
    """A loaded version and the catalog facts aligned with its product indices."""

    version_id: int
    loaded: LoadedModel
    catalog: CatalogFacts
    catalog_stamp: tuple

    @property
    def active(self) -> np.ndarray:
        """Return bool per model product: inactive or deleted products are never shown."""
        return self.catalog.active


@dataclass(frozen=True)
class RecommendedItem:
    product: str
    score: float | None  # None: a product a merchandising rule placed that the ranking did not score
    rank: int
    rule: Any = None  # training.services.rules.RuleRef: the rule that placed or moved it, if one did


@dataclass(frozen=True)
class Recommendations:
    customer: str
    model_version: int | None
    strategy: str  # "model" or "popular"
    items: list[RecommendedItem]
    # With strategy "model": "trained", the customer's vector as the model was trained, or
    # "folded", folded at this request from their products as they are now (a customer the
    # model does not know, or one with events since it was trained). None with "popular".
    customer_vector: str | None = None


class _ServingCache:
    """Per-process state; reads are lock-free, loading is serialised."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served: ServedModel | None = None
        self.checked_at = float("-inf")
        self.refused: tuple[int, str, float] | None = None  # (version, sha256, retry after) that failed to load
        self.due = threading.Event()  # set by requests that find a check due; the refresher waits on it
        self.refresher: threading.Thread | None = None
        self.refresher_stop = threading.Event()
        self.refresher_lock = threading.Lock()  # not self.lock: a request must never wait for a load

    def reset(self) -> None:
        self.stop_refresher()
        with self.lock:
            self.served, self.checked_at, self.refused = None, float("-inf"), None

    def refresh_soon(self) -> None:
        """Have the refresher check now, starting it if this process has none (yet, or since a fork)."""
        with self.refresher_lock:
            if self.refresher is None or not self.refresher.is_alive():
                self.refresher_stop = threading.Event()
                self.refresher = threading.Thread(
                    target=self._refresh_forever, args=(self.refresher_stop,), name="serving-refresh", daemon=True
                )
                self.refresher.start()
        self.due.set()

    def stop_refresher(self) -> None:
        with self.refresher_lock:
            refresher, self.refresher = self.refresher, None
            self.refresher_stop.set()
        if refresher is not None and refresher.is_alive():
            self.due.set()
            refresher.join(timeout=30)  # a load in progress finishes first

    def _refresh_forever(self, stop: threading.Event) -> None:
        try:
            while True:
                # Also on its own, every SERVING_REFRESH_SECONDS: an idle process must not
                # answer its next request from a version rolled back while nobody asked.
                self.due.wait(timeout=max(settings.RECSITE_TRAINING["SERVING_REFRESH_SECONDS"], 0.01))
                self.due.clear()
                if stop.is_set():
                    return
                close_old_connections()  # CONN_MAX_AGE and health checks, as a request's end would do
                with self.lock:
                    try:
                        self.served = _refresh(self.served, self)
                    except Exception:  # the thread must outlive a database outage; the last model keeps serving
                        logger.exception("Checking the promoted model failed; still serving what was loaded.")
                    finally:
                        self.checked_at = time.monotonic()
        finally:
            connections.close_all()  # this thread's own connection


_cache = _ServingCache()


def serving_reset() -> None:
    """Forget the loaded model (tests; a process picks it up again on the next request)."""
    _cache.reset()


def _catalog_stamp() -> tuple:
    # Any catalog write bumps updated_at (auto_now); a deleted product changes the count.
    row = Product.objects.aggregate(latest=Max("updated_at"), count=Count("id"))
    return (row["latest"], row["count"])


def _catalog_facts(loaded: LoadedModel) -> CatalogFacts:
    count = len(loaded.product_ids)
    pks = np.full(count, -1, dtype=np.int64)
    active = np.zeros(count, dtype=bool)
    # Numbers, not strings: ?category= compares an int32 array, not 100,000 Python strings.
    numbers = {"": 0}  # a product the catalog lacks has no category
    codes = np.zeros(count, dtype=np.int32)
    # Row by row into the arrays (iterator: no list of every row held at once).
    rows = Product.objects.values_list("pk", "external_id", "active", "category").iterator(chunk_size=5_000)
    for pk, external_id, is_active, category in rows:
        i = loaded.product_index.get(external_id)
        if i is not None:
            pks[i], active[i], codes[i] = pk, is_active, numbers.setdefault(category, len(numbers))
    return CatalogFacts(active, codes, numbers, pks, np.argsort(pks, kind="stable"))


def served_model() -> ServedModel | None:
    """Return the promoted model as this process serves it, refreshing it when due."""
    cache = _cache
    every = settings.RECSITE_TRAINING["SERVING_REFRESH_SECONDS"]
    if time.monotonic() - cache.checked_at < every:
        return cache.served
    served = cache.served
    if served is not None and every > 0:
        cache.refresh_soon()  # checked in the background; this request goes on with the model it has
        return served
    with cache.lock:
        if time.monotonic() - cache.checked_at < settings.RECSITE_TRAINING["SERVING_REFRESH_SECONDS"]:
            return cache.served  # another thread refreshed while we waited
        try:
            cache.served = _refresh(cache.served, cache)
        finally:
            cache.checked_at = time.monotonic()
    return cache.served


def _refresh(current: ServedModel | None, cache: _ServingCache) -> ServedModel | None:
    version = ModelVersion.objects.filter(status=ModelVersion.Status.PROMOTED).only("pk", "sha256", "artifact_path")
    version = version.first()
    if version is None:
        return None  # nothing promoted (or rolled back to nothing): popular products
    stamp = _catalog_stamp()
    if current is None or current.version_id != version.pk:
        loaded = _load(version, current, cache)
        if loaded is not None:
            catalog = _catalog_facts(loaded)
            logger.info("Serving model version %s.", version.pk)
            return ServedModel(version.pk, loaded, catalog, stamp)
    if current is None:
        return None
    if current.catalog_stamp != stamp:  # also while a newer version is refused
        return ServedModel(current.version_id, current.loaded, _catalog_facts(current.loaded), stamp)
    return current


def _load(version: ModelVersion, current: ServedModel | None, cache: _ServingCache) -> LoadedModel | None:
    """Load a version's artifact, or None if it is refused (tried again after a while)."""
    if cache.refused is not None and cache.refused[:2] == (version.pk, version.sha256):
        if time.monotonic() < cache.refused[2]:
            return None
    threads = settings.RECSITE_TRAINING["SERVING_TORCH_THREADS"]
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        return model_version_load(version)
    except ArtifactError as exc:
        # Not forever: on a shared volume the file may simply not be visible here yet.
        cache.refused = (version.pk, version.sha256, time.monotonic() + REFUSED_RETRY_SECONDS)
        logger.error(
            "Promoted model version %s refused (%s); still serving %s; trying again in %d s.",
            version.pk, exc, f"version {current.version_id}" if current else "popular products",
            REFUSED_RETRY_SECONDS,
        )  # fmt: skip
        return None


def served_model_state() -> str:
    """Say what recommendations come from, for readyz (registered in training/apps.py).

    No promoted model is a normal state (a new shop): the API serves popular products.
    """
    served = served_model()
    if served is None:
        return "none: serving popular products"
    return f"version {served.version_id}"


def seen_products(customer: str) -> list[str]:
    """Return the ids of the products a customer has had any event with, folded or not yet."""
    pks = customer_engaged_now(customer).seen
    return _external_ids(pks) if pks else []


def active_product_pks(pks: list[int]) -> set[int]:
    """Return those of ``pks`` whose product exists and is active."""
    if not pks:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(_request_sql()["active"] + "(" + ", ".join(["%s"] * len(pks)) + ")", pks)
        return {pk for (pk,) in cursor.fetchall()}


@functools.cache
def _request_sql() -> dict[str, str]:
    """The catalog check of every model request, as SQL text.

    Not through the ORM: building the query took it longer than the database took to
    run it (~0.2 ms against ~0.1 ms, bench/serving.py). The names still come from the model.
    """
    q = connection.ops.quote_name
    product = Product._meta
    return {
        "active": f"SELECT {q(product.pk.column)} FROM {q(product.db_table)} "
        f"WHERE {q(product.get_field('active').column)} AND {q(product.pk.column)} IN ",
    }


def folded_through(loaded: LoadedModel) -> int | None:
    """The event id the model's data was read through (None for an artifact from before it was kept)."""
    value = loaded.extra.get(FOLDED_THROUGH)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def recommendations_for(
    *, customer: str, k: int = 10, category: str | None = None, exclude_seen: bool = True
) -> Recommendations:
    """Return a customer's top ``k`` active products: the model's, or popular ones when it can't.

    A model that folds customers from their products (``customer_vector`` "items")
    ranks a customer it does not know, or one with events since it was trained, with a
    vector folded from their products as they are at this request (events the periodic
    fold has not reached included): ``customer_vector="folded"``. A customer with no
    product the model knows, or no promoted model, gets popular products
    (``strategy="popular"``), never an error.
    """
    k = max(1, min(k, MAX_K))
    served = served_model()  # one reference for the whole request: a swap can't split it
    if served is None:
        return _popular(customer, k, category, seen_products(customer) if exclude_seen else [])
    loaded, catalog = served.loaded, served.catalog
    index = loaded.customer_index.get(customer)
    folds = loaded.config.folds_items
    since = folded_through(loaded) if folds else None
    blend = loaded.blend
    # One statement: what the customer engaged with, up to this moment (engagement.selectors).
    now = customer_engaged_now(customer, since=since) if exclude_seen or folds or blend is not None else None
    vectors = None
    # A learnt per-customer offset (items+id) is lost to a fold: a known customer keeps theirs.
    if folds and (index is None or (now.events_since and not loaded.config.learns_ids)):
        vectors = fold_products(loaded.model, catalog.indices_of(now.engaged))
    if vectors is None and index is None:
        seen = _external_ids(now.seen) if exclude_seen and now.seen else []
        return _popular(customer, k, category, seen)
    if vectors is not None:
        scores, how = loaded.scorer.score_vectors(vectors)[0], "folded"
    else:
        scores, how = loaded.scorer.score(np.array([index]))[0], "trained"  # float32, this request's own array
    if blend is not None:
        # Products engaged with together with the customer's newest ones (training/ml/neighbours.py).
        scores = blend.apply(scores[None, :], [catalog.indices_of(now.engaged)])[0]
    if category is None:
        allowed = catalog.active.copy()
    else:
        allowed = catalog.active & (catalog.category_codes == catalog.category_numbers.get(category, -1))
    if exclude_seen:
        allowed[catalog.indices_of(now.seen)] = False
    np.putmask(scores, ~allowed, -np.inf)
    # A few more than k: the catalog check below may drop some.
    take = min(k + ACTIVE_CHECK_MARGIN, int(np.count_nonzero(allowed)))
    if take == 0:
        return Recommendations(customer, served.version_id, "model", [], how)
    top = top_k(scores, take)  # by score, ties by index: stable answers
    # The active mask is refreshed every few seconds and can miss a deactivation (two
    # catalog writes committing out of order); "inactive products are never
    # recommended" is the contract, so the shortlist is checked against the catalog
    # (by primary key: a product deleted and created again since the last refresh is
    # left out until the next one).
    pks = catalog.pks[top]
    active = active_product_pks(pks.tolist())
    shortlist = [(i, scores[i]) for i, pk in zip(top.tolist(), pks.tolist(), strict=True) if pk in active][:k]
    product_ids = loaded.product_ids
    items = [
        RecommendedItem(product_ids[i], round(float(score), 4), rank) for rank, (i, score) in enumerate(shortlist, 1)
    ]
    return Recommendations(customer, served.version_id, "model", items, how)


def _external_ids(pks: list[int]) -> list[str]:
    return list(Product.objects.filter(pk__in=pks).values_list("external_id", flat=True))


def _popular(customer: str, k: int, category: str | None, seen: list[str]) -> Recommendations:
    popular = products_popular(k=k, category=category, exclude=seen)
    items = [RecommendedItem(p.product, p.score, rank) for rank, p in enumerate(popular, start=1)]
    return Recommendations(customer, None, "popular", items)

"""Serve recommendations: the promoted model, loaded once per process, and its fallback.

Each process keeps the promoted model in memory and, at most every
SERVING_REFRESH_SECONDS, asks the database which version is promoted and whether the
catalog changed. A new version is loaded beside the old one and swapped in with one
assignment, so a request in flight finishes on the model it started with. A version
whose artifact fails its checksum or its load is refused: the last good model keeps
serving (or popular products, if there never was one).

Once a model serves, that check runs in a background thread of the process: a request
never waits for it (the catalog check scans the product table, ~5-20 ms at 100,000
products, and loading a new version takes seconds). The first load, and every check
when SERVING_REFRESH_SECONDS is 0 (tests), happen in the request.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.db.models import Count, Max

from engagement.models import Customer, Engagement, Product
from engagement.selectors import products_popular
from training.artifacts import model_version_load
from training.ml.artifact import ArtifactError, LoadedModel
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
    score: float
    rank: int


@dataclass(frozen=True)
class Recommendations:
    customer: str
    model_version: int | None
    strategy: str  # "model" or "popular"
    items: list[RecommendedItem]


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
                self.due.wait()
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
    return list(Engagement.objects.filter(customer__external_id=customer).values_list("product__external_id", flat=True))


def seen_product_pks(customer: str) -> list[int]:
    """Return the primary keys of the products a customer has engaged with (no join to the catalog)."""
    with connection.cursor() as cursor:
        cursor.execute(_request_sql()["seen"], [customer])
        return [pk for (pk,) in cursor.fetchall()]


def active_product_pks(pks: list[int]) -> set[int]:
    """Return those of ``pks`` whose product exists and is active."""
    if not pks:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(_request_sql()["active"] + "(" + ", ".join(["%s"] * len(pks)) + ")", pks)
        return {pk for (pk,) in cursor.fetchall()}


@functools.cache
def _request_sql() -> dict[str, str]:
    """The two queries of every model request, as SQL text.

    Not through the ORM: building each query took it longer than the database took to
    run it (~0.2 ms against ~0.1 ms, bench/serving.py), twice a request. The names still
    come from the models.
    """
    q = connection.ops.quote_name
    engagement, customer, product = Engagement._meta, Customer._meta, Product._meta
    e_customer, e_product = engagement.get_field("customer").column, engagement.get_field("product").column
    return {
        "seen": f"SELECT e.{q(e_product)} FROM {q(engagement.db_table)} e "
        f"JOIN {q(customer.db_table)} c ON c.{q(customer.pk.column)} = e.{q(e_customer)} "
        f"WHERE c.{q(customer.get_field('external_id').column)} = %s",
        "active": f"SELECT {q(product.pk.column)} FROM {q(product.db_table)} "
        f"WHERE {q(product.get_field('active').column)} AND {q(product.pk.column)} IN ",
    }


def recommendations_for(
    *, customer: str, k: int = 10, category: str | None = None, exclude_seen: bool = True
) -> Recommendations:
    """Return a customer's top ``k`` active products: the model's, or popular ones when it can't.

    An unknown customer or no promoted model gets popular products
    (``strategy="popular"``), never an error.
    """
    k = max(1, min(k, MAX_K))
    served = served_model()  # one reference for the whole request: a swap can't split it
    index = served.loaded.customer_index.get(customer) if served is not None else None
    if served is None or index is None:
        seen = seen_products(customer) if exclude_seen else []
        popular = products_popular(k=k, category=category, exclude=seen)
        items = [RecommendedItem(p.product, p.score, rank) for rank, p in enumerate(popular, start=1)]
        return Recommendations(customer, None, "popular", items)
    catalog = served.catalog
    scores = served.loaded.scorer.score(np.array([index]))[0]  # float32, this request's own array
    if category is None:
        allowed = catalog.active.copy()
    else:
        allowed = catalog.active & (catalog.category_codes == catalog.category_numbers.get(category, -1))
    if exclude_seen:
        allowed[catalog.indices_of(seen_product_pks(customer))] = False
    np.putmask(scores, ~allowed, -np.inf)
    # A few more than k: the catalog check below may drop some.
    take = min(k + ACTIVE_CHECK_MARGIN, int(np.count_nonzero(allowed)))
    if take == 0:
        return Recommendations(customer, served.version_id, "model", [])
    top = top_k(scores, take)  # by score, ties by index: stable answers
    # The active mask is refreshed every few seconds and can miss a deactivation (two
    # catalog writes committing out of order); "inactive products are never
    # recommended" is the contract, so the shortlist is checked against the catalog
    # (by primary key: a product deleted and created again since the last refresh is
    # left out until the next one).
    pks = catalog.pks[top]
    active = active_product_pks(pks.tolist())
    shortlist = [(i, scores[i]) for i, pk in zip(top.tolist(), pks.tolist(), strict=True) if pk in active][:k]
    product_ids = served.loaded.product_ids
    items = [
        RecommendedItem(product_ids[i], round(float(score), 4), rank) for rank, (i, score) in enumerate(shortlist, 1)
    ]
    return Recommendations(customer, served.version_id, "model", items)

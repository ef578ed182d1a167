"""Serve recommendations: the promoted model, loaded once per process, and its fallback.

Each process keeps the promoted model in memory and, at most every
SERVING_REFRESH_SECONDS, asks the database which version is promoted and whether the
catalog changed. A new version is loaded beside the old one and swapped in with one
assignment, so a request in flight finishes on the model it started with. A version
whose artifact fails its checksum or its load is refused: the last good model keeps
serving (or popular products, if there never was one).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from django.conf import settings
from django.db.models import Count, Max

from engagement.models import Engagement, Product
from engagement.selectors import products_popular
from training.ml.artifact import ArtifactError, LoadedModel
from training.models import ModelVersion
from training.services.versions import model_version_load

logger = logging.getLogger(__name__)

MAX_K = 100
REFUSED_RETRY_SECONDS = 30
ACTIVE_CHECK_MARGIN = 10


@dataclass(frozen=True)
class ServedModel:
    """A loaded version and the catalog facts aligned with its product indices."""

    version_id: int
    loaded: LoadedModel
    active: np.ndarray  # bool per model product: inactive or deleted products are never shown
    categories: np.ndarray  # str per model product
    catalog_stamp: tuple


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

    def reset(self) -> None:
        with self.lock:
            self.served, self.checked_at, self.refused = None, float("-inf"), None


_cache = _ServingCache()


def serving_reset() -> None:
    """Forget the loaded model (tests; a process picks it up again on the next request)."""
    _cache.reset()


def _catalog_stamp() -> tuple:
    # Any catalog write bumps updated_at (auto_now); a deleted product changes the count.
    row = Product.objects.aggregate(latest=Max("updated_at"), count=Count("id"))
    return (row["latest"], row["count"])


def _catalog_arrays(loaded: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    facts = {
        external_id: (active, category)
        for external_id, active, category in Product.objects.values_list("external_id", "active", "category")
    }
    active = np.fromiter((facts.get(p, (False, ""))[0] for p in loaded.product_ids), dtype=bool)
    categories = np.array([facts.get(p, (False, ""))[1] for p in loaded.product_ids], dtype=object)
    return active, categories


def served_model() -> ServedModel | None:
    """Return the promoted model as this process serves it, refreshing it when due."""
    cache = _cache
    if time.monotonic() - cache.checked_at < settings.RECSITE_TRAINING["SERVING_REFRESH_SECONDS"]:
        return cache.served
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
            active, categories = _catalog_arrays(loaded)
            logger.info("Serving model version %s.", version.pk)
            return ServedModel(version.pk, loaded, active, categories, stamp)
    if current is None:
        return None
    if current.catalog_stamp != stamp:  # also while a newer version is refused
        active, categories = _catalog_arrays(current.loaded)
        return ServedModel(current.version_id, current.loaded, active, categories, stamp)
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


def seen_products(customer: str) -> list[str]:
    return list(Engagement.objects.filter(customer__external_id=customer).values_list("product__external_id", flat=True))


def recommendations_for(
    *, customer: str, k: int = 10, category: str | None = None, exclude_seen: bool = True
) -> Recommendations:
    """Return a customer's top ``k`` active products: the model's, or popular ones when it can't.

    An unknown customer or no promoted model gets popular products
    (``strategy="popular"``), never an error.
    """
    k = max(1, min(k, MAX_K))
    served = served_model()  # one reference for the whole request: a swap can't split it
    seen = seen_products(customer) if exclude_seen else []
    index = served.loaded.customer_index.get(customer) if served is not None else None
    if served is None or index is None:
        popular = products_popular(k=k, category=category, exclude=seen)
        items = [RecommendedItem(p.product, p.score, rank) for rank, p in enumerate(popular, start=1)]
        return Recommendations(customer, None, "popular", items)
    scores = served.loaded.scorer.score(np.array([index]))[0].astype(np.float64, copy=True)
    allowed = served.active.copy()
    if category is not None:
        allowed &= served.categories == category
    if seen:
        seen_index = [i for i in (served.loaded.product_index.get(p) for p in seen) if i is not None]
        allowed[seen_index] = False
    scores[~allowed] = -np.inf
    # A few more than k: the catalog check below may drop some.
    take = min(k + ACTIVE_CHECK_MARGIN, int(allowed.sum()))
    if take == 0:
        return Recommendations(customer, served.version_id, "model", [])
    top = np.argpartition(-scores, take - 1)[:take]
    top = top[np.lexsort((top, -scores[top]))]  # by score, ties by index: stable answers
    # The active mask is refreshed every few seconds and can miss a deactivation (two
    # catalog writes committing out of order); "inactive products are never
    # recommended" is the contract, so the shortlist is checked against the catalog.
    ids = [served.loaded.product_ids[i] for i in top]
    active = set(Product.objects.filter(external_id__in=ids, active=True).values_list("external_id", flat=True))
    shortlist = [(product, scores[i]) for product, i in zip(ids, top, strict=True) if product in active][:k]
    items = [RecommendedItem(product, round(float(score), 4), rank) for rank, (product, score) in enumerate(shortlist, 1)]
    return Recommendations(customer, served.version_id, "model", items)

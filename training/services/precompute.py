"""Precompute recommendations after a promotion: fan out over customer chunks, write each chunk's lists.

A promotion or rollback enqueues ``training.tasks.precompute_recommendations`` once it
commits; that task sends one ``precompute_recommendations_chunk`` task per
RECSITE_PRECOMPUTE_CHUNK customers, so every worker listening takes its share. A chunk
scores its customers with the serving process's model and scorer, a batch at a time,
leaves out seen and inactive products as the API does, and writes every list with one
``cache.set_many`` (one round trip on Redis). Reading them back, and why a list computed
from older engagement is never served: ``training.recommendation_cache``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
from celery.result import GroupResult
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from engagement.models import Engagement, InteractionEvent
from recsite.celery import app
from training import queue
from training.ml.topk import top_k
from training.models import ModelVersion
from training.recommendation_cache import engagement_seen_and_stamps, entry_encode, list_key
from training.serving import ACTIVE_CHECK_MARGIN, ServedModel, served_model, serving_reset

logger = logging.getLogger(__name__)

# Customers x products scored per CatalogScorer.score call: bounds the float32 score
# matrix of a batch to 16 MB (400 customers at 10,000 products, 40 at 100,000).
BATCH_CELLS = 4_000_000


def precompute_status_key(version_id: int) -> str:
    return f"recsite:recs-precompute:{version_id}"


def recommendations_precompute_on_commit(*, version_id: int) -> None:
    """Enqueue the precompute of ``version_id`` when the current transaction commits (if RECSITE_PRECOMPUTE).

    Robust: a broker that cannot be reached is logged and the promotion stands; requests
    are then computed on the fly, as they are before any list is written.
    """
    if settings.RECSITE_PRECOMPUTE:
        transaction.on_commit(lambda: _enqueue(version_id), robust=True)


def _enqueue(version_id: int) -> None:
    queue.precompute_send(version_id)


@dataclass(frozen=True)
class PrecomputeStarted:
    version_id: int
    group_id: str | None  # None: no customer to precompute
    chunks: int
    customers: int


def recommendations_precompute_start(*, version_id: int) -> PrecomputeStarted | None:
    """Send one chunk task per RECSITE_PRECOMPUTE_CHUNK customers of ``version_id``; None if it is not promoted.

    The group's id is kept in the cache (``precompute_progress`` reads it) for as long as
    the lists: the progress of a precompute, not a lock; a second start simply redoes it.
    """
    version = ModelVersion.objects.without_id_maps().filter(pk=version_id, status=ModelVersion.Status.PROMOTED).first()
    if version is None:
        logger.info("Model version %s is not promoted any more; nothing to precompute.", version_id)
        return None
    customers = _customers_to_precompute(version)
    result = _send_chunks(version_id, customers)
    if result is not None:
        result.save()  # for precompute_progress
    group_id = result.id if result is not None else None
    chunks = len(result.results) if result is not None else 0
    started = PrecomputeStarted(version_id, group_id, chunks, len(customers))
    cache.set(
        precompute_status_key(version_id),
        {"group_id": group_id, "chunks": chunks, "customers": len(customers), "started_at": time.time()},
        timeout=settings.RECSITE_PRECOMPUTE_TTL_SECONDS,
    )
    logger.info("Precomputing %d customers of model version %s in %d chunks.", len(customers), version_id, chunks)
    return started


def _send_chunks(version_id: int, customers: list[int]) -> GroupResult | None:
    """Send one chunk task per RECSITE_PRECOMPUTE_CHUNK customers, as a group; None for no customers."""
    size = settings.RECSITE_PRECOMPUTE_CHUNK
    chunks = [customers[start : start + size] for start in range(0, len(customers), size)]
    if not chunks:
        return None
    return queue.precompute_chunks_send(version_id, chunks)


def recommendations_refresh_after_fold(*, after_event_id: int, upto_event_id: int) -> None:
    """Enqueue new lists for the customers of events (after, upto], which a fold has just read.

    Their lists went stale with the fold (their stamps changed); without a refresh they
    would be computed on the fly until the next promotion. A broker that cannot be
    reached is logged: the fold has committed, and those customers get on-the-fly answers.
    """
    if not settings.RECSITE_PRECOMPUTE or upto_event_id <= after_event_id:
        return
    try:
        queue.refresh_send(after_event_id, upto_event_id)
    except (KombuOperationalError, OSError) as exc:
        logger.warning("Could not enqueue the refresh of events (%s, %s]: %s", after_event_id, upto_event_id, exc)


def recommendations_refresh(*, after_event_id: int, upto_event_id: int) -> int:
    """Send chunk tasks for the customers of events (after, upto] the promoted model knows; return how many."""
    version_id = ModelVersion.objects.filter(status=ModelVersion.Status.PROMOTED).values_list("pk", flat=True).first()
    if version_id is None:
        return 0
    with _torch_threads(0):  # as in a chunk: loading sets the serving processes' thread count
        served = _served_version(version_id)
    if served is None:
        return 0
    # The event pk range: the index the fold itself reads by.
    events = InteractionEvent.objects.filter(pk__gt=after_event_id, pk__lte=upto_event_id)
    known = served.loaded.customer_index
    ids = events.values_list("customer__external_id", flat=True).distinct()
    customers = sorted(i for i in (known.get(c) for c in ids) if i is not None)
    _send_chunks(version_id, customers)
    return len(customers)


def _customers_to_precompute(version: ModelVersion) -> list[int]:
    """Return the model indices of the customers to precompute: all, or those engaged recently."""
    count = version.config.get("model", {}).get("num_customers", 0)
    days = settings.RECSITE_PRECOMPUTE_ACTIVE_DAYS
    if days <= 0:
        return list(range(count))
    since = timezone.now() - timedelta(days=days)
    recent = set(
        Engagement.objects.filter(last_event_at__gte=since).values_list("customer__external_id", flat=True).distinct()
    )
    ids = ModelVersion.objects.values_list("customer_ids", flat=True).get(pk=version.pk)
    return [i for i, customer in enumerate(ids) if customer in recent]


def precompute_progress(*, version_id: int) -> dict | None:
    """Return {"chunks", "done", "customers", "started_at"} of the latest precompute of a version, or None."""
    status = cache.get(precompute_status_key(version_id))
    if status is None:
        return None
    result = GroupResult.restore(status["group_id"], app=app) if status["group_id"] else None
    done = result.completed_count() if result is not None else 0
    return {**status, "done": done}


def recommendations_precompute_chunk(*, version_id: int, customers: list[int]) -> int:
    """Write the lists of ``customers`` (model indices) under ``version_id``; return how many were written.

    Writes nothing when the version is not promoted any more: its successor's precompute
    is on its way. Safe to run twice: the second run writes the same lists (or newer ones).
    """
    with _torch_threads(0):  # loading sets the serving processes' thread count: not for a worker's training
        served = _served_version(version_id)
    if served is None:
        return 0
    loaded = served.loaded
    ids = _customer_ids(served)
    # Read before scoring, in one statement: each stamp goes with exactly these seen products.
    engagement = engagement_seen_and_stamps([ids[i] for i in customers])
    k = settings.RECSITE_PRECOMPUTE_K
    batch = max(1, BATCH_CELLS // max(1, loaded.scorer.num_products))
    entries = {}
    with _torch_threads(settings.RECSITE_PRECOMPUTE_TORCH_THREADS):
        for start in range(0, len(customers), batch):
            indices = customers[start : start + batch]
            scores = loaded.scorer.score(np.asarray(indices, dtype=np.int64))
            allowed = np.repeat(served.active[None, :], len(indices), axis=0)
            stamps, histories = [], []
            for row, i in enumerate(indices):
                stamp, seen, engaged = engagement.get(ids[i], ((0, 0), [], []))
                stamps.append(stamp)
                seen_index = [j for j in (loaded.product_index.get(p) for p in seen) if j is not None]
                allowed[row, seen_index] = False
                histories.append([j for j in (loaded.product_index.get(p) for p in engaged) if j is not None])
            if loaded.blend is not None:  # the on-the-fly ranking's blend, with the same products
                scores = loaded.blend.apply(scores, histories)
            top, top_scores, counts = top_products(scores, allowed, k + ACTIVE_CHECK_MARGIN)
            for row, i in enumerate(indices):
                key = list_key(version_id=version_id, sha256=loaded.sha256, customer_index=i)
                entries[key] = entry_encode(stamps[row], k, top[row, : counts[row]], top_scores[row, : counts[row]])
    cache.set_many(entries, timeout=settings.RECSITE_PRECOMPUTE_TTL_SECONDS)
    return len(entries)


def top_products(scores: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return each row's best ``k`` allowed products: indices, scores, and how many each row has.

    The order of ``training.serving.recommendations_for``: by score, ties by product
    index. Row r's list is ``indices[r, :counts[r]]`` (fewer than k when fewer are allowed).
    """
    customers, products = scores.shape
    counts = np.minimum(allowed.sum(axis=1), k)
    take = min(k, products)
    if take == 0:
        empty = np.zeros((customers, 0), dtype=np.int64)
        return empty, empty.astype(np.float32), counts
    masked = np.where(allowed, scores, np.float32(-np.inf))
    top = top_k(masked, take)
    return top, np.take_along_axis(masked, top, axis=1), counts


def recommendations_precompute_clear(*, version_id: int) -> int:
    """Delete a version's lists (and its progress); return how many keys were asked to go.

    Not needed for correctness (a stale list is never served); it frees the memory of a
    version at once, and lets a benchmark time the on-the-fly path on the same server.
    """
    version = ModelVersion.objects.without_id_maps().get(pk=version_id)
    count = version.config.get("model", {}).get("num_customers", 0)
    step = 10_000
    for start in range(0, count, step):
        cache.delete_many(
            [list_key(version_id=version_id, sha256=version.sha256, customer_index=i)
             for i in range(start, min(start + step, count))]
        )  # fmt: skip
    cache.delete(precompute_status_key(version_id))
    return count


def _served_version(version_id: int) -> ServedModel | None:
    """Return this process's served model if it is ``version_id`` and still promoted, else None."""
    if not ModelVersion.objects.filter(pk=version_id, status=ModelVersion.Status.PROMOTED).exists():
        logger.info("Model version %s is not promoted any more; its chunk is skipped.", version_id)
        return None
    served = served_model()
    if served is None or served.version_id != version_id:
        # Promoted a moment ago: this process's next check is not due yet; look now.
        serving_reset()
        served = served_model()
    return served if served is not None and served.version_id == version_id else None


_customer_ids_memo: tuple[tuple[int, str], list[str]] | None = None


def _customer_ids(served: ServedModel) -> list[str]:
    """Return the served model's customer ids by index (the artifact keeps them as a dict).

    Remembered by version id *and* artifact checksum, as the cached lists are keyed: a
    version id reused by a rebuilt database (a restore, a test run) is another model.
    """
    global _customer_ids_memo
    key = (served.version_id, served.loaded.sha256)
    if _customer_ids_memo is None or _customer_ids_memo[0] != key:
        _customer_ids_memo = (key, list(served.loaded.customer_index))
    return _customer_ids_memo[1]


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Use ``threads`` torch threads inside (0: leave as is), then restore the worker's (training wants them all)."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)

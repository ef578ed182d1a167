"""Ranking metrics for leave-last-out evaluation (DESIGN "Evaluation protocol").

Every model and baseline is judged through the same ``score_fn`` protocol on the same
split: full ranking over the catalog minus the customer's training items, and the NCF
sampled protocol (the test item against 99 random unseen products).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.ml.data import (
    Interactions,
    Split,
    distinct_items_by_customer,
    items_by_customer,
    pairs_to_csr,
    unseen_products,
)

TOP_K = 10
RECALL_K = 20


def evaluate_ranking(
    score_fn: Callable[[np.ndarray], np.ndarray],
    *,
    test_customers: np.ndarray,
    test_products: np.ndarray,
    train_indptr: np.ndarray,
    train_indices: np.ndarray,
    num_products: int,
    sampled_negatives: int = 99,
    seed: int = 0,
    batch_size: int = 256,
) -> dict:
    """Rank each held-out product for its customer and average HR, NDCG and recall.

    ``score_fn(customers)`` returns scores of shape (len(customers), num_products).
    ``train_indptr``/``train_indices`` (``items_by_customer`` of the training rows) name
    the products excluded from a customer's ranking. Ties count against the held-out
    product: a model that scores everything equal must not look good, so equal scores
    rank the test item below every candidate it ties with. NaN scores count as -inf.
    ``sampled_negatives=0`` skips the sampled protocol (its numbers are then trivially 1.0).
    """
    test_customers = np.asarray(test_customers, dtype=np.int64)
    test_products = np.asarray(test_products, dtype=np.int64)
    if test_customers.shape != test_products.shape or test_customers.ndim != 1:
        raise ValueError("test_customers and test_products must be 1-d and of equal length.")
    count = len(test_customers)
    if count == 0:
        return {
            "sampled": {f"hr@{TOP_K}": 0.0, f"ndcg@{TOP_K}": 0.0},
            "full": {f"hr@{TOP_K}": 0.0, f"ndcg@{TOP_K}": 0.0, f"recall@{RECALL_K}": 0.0},
            "customers": 0,
        }
    negatives = sample_negatives(
        test_customers, test_products, train_indptr, train_indices, num_products, count=sampled_negatives, seed=seed
    )
    full_ranks = np.empty(count, dtype=np.int64)
    sampled_ranks = np.empty(count, dtype=np.int64)
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        customers = test_customers[start:stop]
        rows = np.arange(stop - start)
        scores = np.asarray(score_fn(customers))
        if scores.shape != (len(customers), num_products):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(len(customers), num_products)}.")
        if scores.dtype.kind != "f":
            scores = scores.astype(np.float64)
        if np.isnan(scores).any():
            scores = np.where(np.isnan(scores), -np.inf, scores)
        target = scores[rows, test_products[start:stop]]

        # ">=" over the other candidates = "> target" plus ties: a tie ranks the test item lower.
        at_least = scores >= target[:, None]
        at_least[rows, test_products[start:stop]] = False
        starts, ends = train_indptr[customers], train_indptr[customers + 1]
        seen_rows = np.repeat(rows, ends - starts)
        seen_cols = train_indices[_ranges(starts, ends)]
        at_least[seen_rows, seen_cols] = False
        full_ranks[start:stop] = at_least.sum(axis=1)

        batch_negatives = negatives[start:stop]
        valid = batch_negatives >= 0
        negative_scores = scores[rows[:, None], np.where(valid, batch_negatives, 0)]
        sampled_ranks[start:stop] = ((negative_scores >= target[:, None]) & valid).sum(axis=1)

    return {
        "sampled": {f"hr@{TOP_K}": _hit_rate(sampled_ranks, TOP_K), f"ndcg@{TOP_K}": _ndcg(sampled_ranks, TOP_K)},
        "full": {
            f"hr@{TOP_K}": _hit_rate(full_ranks, TOP_K),
            f"ndcg@{TOP_K}": _ndcg(full_ranks, TOP_K),
            # One held-out item per customer: recall@k is the hit rate at k.
            f"recall@{RECALL_K}": _hit_rate(full_ranks, RECALL_K),
        },
        "customers": int(count),
    }


def evaluate_split(
    score_fn: Callable[[np.ndarray], np.ndarray], *, split: Split, sampled_negatives: int = 99, seed: int = 0
) -> dict:
    """Return ``evaluate_ranking``'s metrics of ``score_fn`` on a leave-last-out split."""
    indptr, indices = items_by_customer(split.train)
    return evaluate_ranking(
        score_fn,
        test_customers=split.test_customers,
        test_products=split.test_products,
        train_indptr=indptr,
        train_indices=indices,
        num_products=split.train.num_products,
        sampled_negatives=sampled_negatives,
        seed=seed,
    )


def sample_negatives(
    test_customers: np.ndarray,
    test_products: np.ndarray,
    train_indptr: np.ndarray,
    train_indices: np.ndarray,
    num_products: int,
    *,
    count: int,
    seed: int,
) -> np.ndarray:
    """Draw ``count`` distinct products per test customer, none seen in training nor the test item.

    Returns int64[t, count], padded with -1 where fewer products are available. Floyd's
    algorithm draws ``count`` distinct ranks in [0, available) for all customers at once
    (``count`` vectorised rounds); ranks then map to products past the excluded ones.
    Deterministic for a given seed and split, so every model meets the same negatives.
    """
    t = len(test_customers)
    if count <= 0:
        return np.full((t, 0), -1, dtype=np.int64)
    # Exclusion is by distinct products, so a repeated training pair must not count twice.
    owners = np.repeat(np.arange(len(train_indptr) - 1, dtype=np.int64), np.diff(train_indptr))
    indptr, indices = pairs_to_csr(
        owners, train_indices, num_customers=len(train_indptr) - 1, num_products=num_products
    )
    seen_count = np.diff(indptr)[test_customers]
    # Where the test item sits among the customer's sorted seen products, and whether it is one.
    keys = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * num_products + indices
    queries = test_customers * num_products + test_products
    position = np.searchsorted(keys, queries)
    before_target = position - indptr[test_customers]
    target_in_train = np.zeros(t, dtype=bool)
    if len(keys):
        target_in_train = keys[np.minimum(position, len(keys) - 1)] == queries
    target_rank = test_products - before_target
    available = num_products - seen_count - (~target_in_train).astype(np.int64)

    rng = np.random.default_rng(seed)
    ranks = np.full((t, count), -1, dtype=np.int64)
    # Floyd: for j = n-k .. n-1, draw r in [0, j]; keep r if new, else keep j. Rows with
    # n < k take every available rank instead.
    short = available < count
    n = np.where(short, count, available)
    for step in range(count):
        j = n - count + step
        r = rng.integers(0, j + 1, dtype=np.int64)
        taken = (ranks[:, :step] == r[:, None]).any(axis=1)
        ranks[:, step] = np.where(taken, j, r)
    full_range = np.arange(count, dtype=np.int64)[None, :]
    ranks = np.where(short[:, None], np.where(full_range < available[:, None], full_range, -1), ranks)

    valid = ranks >= 0
    # Skip the test item's own slot among the unseen products.
    shifted = ranks + ((ranks >= target_rank[:, None]) & ~target_in_train[:, None])
    owners_2d = np.broadcast_to(test_customers[:, None], ranks.shape)
    products = unseen_products(shifted[valid], owners_2d[valid], indptr, indices, num_products)
    result = np.full((t, count), -1, dtype=np.int64)
    result[valid] = products
    return result


def popularity_scores(train: Interactions) -> np.ndarray:
    """Return float32[num_products]: how many training customers interacted with each product."""
    _, indices = distinct_items_by_customer(train)
    return np.bincount(indices, minlength=train.num_products).astype(np.float32)


def _hit_rate(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(ranks < k))


def _ndcg(ranks: np.ndarray, k: int) -> float:
    gains = np.where(ranks < k, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    return float(np.mean(gains))


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, e)`` for each pair without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(total, dtype=np.int64)

"""Interaction arrays, the leave-last-out split, the product prior and negative sampling.

numpy only: ``training.services`` turns ``Engagement`` rows into ``Interactions`` (one row
per customer x product pair) and everything below works on whole arrays, no per-row loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.ml.model import CHANNELS


@dataclass
class Interactions:
    """One row per customer x product pair the customer engaged with."""

    customer_idx: np.ndarray  # int64[n]
    product_idx: np.ndarray  # int64[n]
    targets: np.ndarray  # float32[n, 3]: saturated hover, dwell, click intensity in [0, 1]
    dwell_ms: np.ndarray  # float64[n]: the pair's total dwell, milliseconds (feeds the prior)
    timestamp: np.ndarray  # float64[n]: the pair's last event, seconds (orders leave-last-out)
    num_customers: int
    num_products: int

    def __post_init__(self) -> None:
        self.customer_idx = np.ascontiguousarray(self.customer_idx, dtype=np.int64)
        self.product_idx = np.ascontiguousarray(self.product_idx, dtype=np.int64)
        self.targets = np.ascontiguousarray(self.targets, dtype=np.float32)
        self.dwell_ms = np.ascontiguousarray(self.dwell_ms, dtype=np.float64)
        self.timestamp = np.ascontiguousarray(self.timestamp, dtype=np.float64)
        n = len(self.customer_idx)
        if self.customer_idx.ndim != 1 or any(
            len(a) != n for a in (self.product_idx, self.targets, self.dwell_ms, self.timestamp)
        ):
            raise ValueError("customer_idx, product_idx, targets, dwell_ms and timestamp must have one row each.")
        if self.targets.shape != (n, len(CHANNELS)):
            raise ValueError(f"targets must have shape (n, {len(CHANNELS)}), got {self.targets.shape}.")
        if self.num_customers < 0 or self.num_products < 0:
            raise ValueError("num_customers and num_products must be >= 0.")
        for name, values, bound in (
            ("customer_idx", self.customer_idx, self.num_customers),
            ("product_idx", self.product_idx, self.num_products),
        ):
            if n and (values.min() < 0 or values.max() >= bound):
                raise ValueError(f"{name} must lie in [0, {bound}).")
        if n and not (np.all(self.targets >= 0) and np.all(self.targets <= 1)):
            raise ValueError("targets must lie in [0, 1].")

    def __len__(self) -> int:
        return len(self.customer_idx)

    def take(self, rows: np.ndarray) -> Interactions:
        """Return the rows selected by an index array or boolean mask, same id spaces."""
        return Interactions(
            customer_idx=self.customer_idx[rows],
            product_idx=self.product_idx[rows],
            targets=self.targets[rows],
            dwell_ms=self.dwell_ms[rows],
            timestamp=self.timestamp[rows],
            num_customers=self.num_customers,
            num_products=self.num_products,
        )


def index_ids(raw: Sequence[str], universe: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Map string ids to contiguous indices: (index of each raw element, sorted id list).

    With ``universe`` (e.g. the whole catalog), the id list is the sorted union of
    ``universe`` and ``raw``, so products nobody touched still get an index.
    """
    values = np.asarray(list(raw), dtype=str)
    pool = values if universe is None else np.concatenate([np.asarray(list(universe), dtype=str), values])
    ids = np.unique(pool)
    return np.searchsorted(ids, values).astype(np.int64), ids.tolist()


@dataclass
class Split:
    """Training rows and one held-out (customer, product) pair per test customer."""

    train: Interactions
    test_customers: np.ndarray  # int64[t], ascending
    test_products: np.ndarray  # int64[t]


def leave_last_out(data: Interactions, *, min_positives: int = 2) -> Split:
    """Hold out each customer's most recent row when they have at least ``min_positives`` rows.

    Ties on the timestamp go to the larger product index, so the split is deterministic.
    Customers with fewer rows stay in training only (DESIGN "Evaluation protocol").
    """
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}.")
    n = len(data)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Split(train=data.take(empty), test_customers=empty, test_products=empty.copy())
    # Sorted by customer, then timestamp, then product: each customer's last row is its test item.
    order = np.lexsort((data.product_idx, data.timestamp, data.customer_idx))
    sorted_customers = data.customer_idx[order]
    is_last = np.ones(n, dtype=bool)
    is_last[:-1] = sorted_customers[:-1] != sorted_customers[1:]
    last_rows = order[is_last]
    counts = np.bincount(data.customer_idx, minlength=data.num_customers)
    held_out = last_rows[counts[data.customer_idx[last_rows]] >= min_positives]
    keep = np.ones(n, dtype=bool)
    keep[held_out] = False
    return Split(
        train=data.take(keep),
        test_customers=data.customer_idx[held_out].copy(),
        test_products=data.product_idx[held_out].copy(),
    )


def product_prior(train: Interactions) -> np.ndarray:
    """Return each product's dwell prior: z-scored log1p(mean dwell seconds) over its training rows.

    Only training rows count, so a held-out pair's own dwell never reaches its input.
    Products without rows get 0.0 (the average product after standardising).
    """
    counts = np.bincount(train.product_idx, minlength=train.num_products)
    sums = np.bincount(train.product_idx, weights=train.dwell_ms, minlength=train.num_products)
    prior = np.zeros(train.num_products, dtype=np.float64)
    has_rows = counts > 0
    if has_rows.any():
        log_mean = np.log1p(sums[has_rows] / counts[has_rows] / 1000.0)
        std = log_mean.std()
        # One product, or all with the same mean dwell: nothing to tell apart, so all 0.
        prior[has_rows] = (log_mean - log_mean.mean()) / std if std > 0 else 0.0
    return prior.astype(np.float32)


def items_by_customer(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Return each customer's products as CSR (indptr[num_customers + 1], indices), sorted within a customer."""
    order = np.lexsort((data.product_idx, data.customer_idx))
    counts = np.bincount(data.customer_idx, minlength=data.num_customers)
    indptr = np.zeros(data.num_customers + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, data.product_idx[order]


def unseen_products(
    ranks: np.ndarray, owners: np.ndarray, indptr: np.ndarray, indices: np.ndarray, num_products: int
) -> np.ndarray:
    """Return the ``ranks``-th (0-based) product each owner has not interacted with.

    ``indptr``/``indices`` is a CSR of distinct products, sorted within each customer.
    Within a customer, ``seen[j] - j`` counts the unseen products below ``seen[j]``; the
    r-th unseen product is r plus the number of seen products with ``seen[j] - j <= r``.
    Offsetting each customer's values by ``customer * (num_products + 1)`` keeps the key
    globally sorted, so one ``searchsorted`` answers every query: exact, no rejection loop.
    """
    row_customer = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    within = np.arange(len(indices), dtype=np.int64) - indptr[row_customer]
    stride = num_products + 1
    keys = row_customer * stride + (indices - within)
    below = np.searchsorted(keys, owners * stride + ranks, side="right") - indptr[owners]
    return ranks + below


def distinct_items_by_customer(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Return ``items_by_customer`` with repeated (customer, product) pairs collapsed."""
    return pairs_to_csr(
        data.customer_idx, data.product_idx, num_customers=data.num_customers, num_products=data.num_products
    )


def pairs_to_csr(
    customers: np.ndarray, products: np.ndarray, *, num_customers: int, num_products: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the distinct (customer, product) pairs as CSR (indptr, indices), sorted within a customer."""
    stride = max(num_products, 1)
    pairs = np.unique(np.asarray(customers, dtype=np.int64) * stride + np.asarray(products, dtype=np.int64))
    counts = np.bincount(pairs // stride, minlength=num_customers)
    indptr = np.zeros(num_customers + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, pairs % stride


# Redraws of a popularity-weighted negative that hit a product its customer touched.
NEGATIVE_REDRAWS = 4


def _popular_negatives(
    train: Interactions,
    owners: np.ndarray,
    fallback: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    exponent: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw one unseen product per owner with probability ~ (1 + rows) ** exponent; ``fallback`` where all draws hit."""
    weights = (1.0 + np.bincount(train.product_idx, minlength=train.num_products)) ** exponent
    cdf = np.cumsum(weights)
    stride = train.num_products + 1
    # Every (customer, product) pair as one sorted key: membership is one searchsorted.
    row_customer = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    seen_keys = row_customer * stride + indices
    chosen = fallback.copy()
    pending = np.arange(len(owners))
    for _ in range(NEGATIVE_REDRAWS):
        if not len(pending):
            break
        draws = np.minimum(np.searchsorted(cdf, rng.random(len(pending)) * cdf[-1], side="right"), len(cdf) - 1)
        keys = owners[pending] * stride + draws
        at = np.minimum(np.searchsorted(seen_keys, keys), max(len(seen_keys) - 1, 0))
        hit = seen_keys[at] == keys if len(seen_keys) else np.zeros(len(keys), dtype=bool)
        chosen[pending[~hit]] = draws[~hit]
        pending = pending[hit]
    return chosen


@dataclass
class Examples:
    """One epoch's training examples: (customer, product, channel) -> target intensity."""

    customers: np.ndarray  # int64[m]
    products: np.ndarray  # int64[m]
    interactions: np.ndarray  # int64[m], channel ids (CHANNELS)
    targets: np.ndarray  # float32[m]

    def __len__(self) -> int:
        return len(self.customers)


@dataclass
class Pairs:
    """One epoch's training pairs: (customer, product) -> every channel's target intensity."""

    customers: np.ndarray  # int64[m]
    products: np.ndarray  # int64[m]
    targets: np.ndarray  # float32[m, channels]

    def __len__(self) -> int:
        return len(self.customers)


def sample_examples(
    train: Interactions,
    *,
    negatives_per_positive: int,
    rng: np.random.Generator,
    positive_floor: float = 0.0,
    negative_exponent: float = 0.0,
) -> Examples:
    """``sample_pairs`` with each pair expanded into one example per channel (positives first, then negatives)."""
    pairs = sample_pairs(
        train,
        negatives_per_positive=negatives_per_positive,
        rng=rng,
        positive_floor=positive_floor,
        negative_exponent=negative_exponent,
    )
    num_channels = len(CHANNELS)
    return Examples(
        customers=np.repeat(pairs.customers, num_channels),
        products=np.repeat(pairs.products, num_channels),
        interactions=np.tile(np.arange(num_channels, dtype=np.int64), len(pairs)),
        targets=pairs.targets.reshape(-1),
    )


def sample_pairs(
    train: Interactions,
    *,
    negatives_per_positive: int,
    rng: np.random.Generator,
    positive_floor: float = 0.0,
    negative_exponent: float = 0.0,
) -> Pairs:
    """Every row as a positive pair plus sampled negative pairs (target 0 on every channel).

    Each row keeps its channels' intensities as targets, and ``negatives_per_positive``
    products drawn uniformly from those the customer never touched give pairs with
    target 0. Exclusion is exact; a customer who touched every product gets no
    negatives. Call once per epoch with a fresh ``rng`` so every epoch sees other negatives.

    ``positive_floor`` lifts every engaged pair's target on every channel to
    ``floor + (1 - floor) * intensity``: 0 learns the intensity alone, 1 only that the
    pair was engaged with at all (docs/model.md measures both ends).

    ``negative_exponent`` > 0 draws negatives in proportion to ``(1 + rows) ** exponent``
    of each product (its training rows) instead of uniformly, word2vec-style: the popular
    products a full-catalog ranking must place right are then asked about often, not once
    in a catalog's worth of draws. Exclusion stays exact: a draw that hits a product the
    customer touched is redrawn, and after a few rounds falls back to a uniform unseen one.
    """
    if negatives_per_positive < 0:
        raise ValueError(f"negatives_per_positive must be >= 0, got {negatives_per_positive}.")
    if not 0 <= positive_floor <= 1:
        raise ValueError(f"positive_floor must lie in [0, 1], got {positive_floor}.")
    pos_targets = train.targets
    if positive_floor:
        pos_targets = (positive_floor + (1.0 - positive_floor) * pos_targets).astype(np.float32)

    neg_products = np.zeros(0, dtype=np.int64)
    neg_owners = np.zeros(0, dtype=np.int64)
    if negatives_per_positive and len(train):
        indptr, indices = distinct_items_by_customer(train)
        owners = np.repeat(train.customer_idx, negatives_per_positive)
        unseen_count = train.num_products - np.diff(indptr)[owners]
        neg_owners = owners[unseen_count > 0]
        ranks = rng.integers(0, unseen_count[unseen_count > 0], dtype=np.int64)
        neg_products = unseen_products(ranks, neg_owners, indptr, indices, train.num_products)
        if negative_exponent > 0:
            neg_products = _popular_negatives(train, neg_owners, neg_products, indptr, indices, negative_exponent, rng)

    return Pairs(
        customers=np.concatenate([train.customer_idx, neg_owners]),
        products=np.concatenate([train.product_idx, neg_products]),
        targets=np.concatenate([pos_targets, np.zeros((len(neg_owners), len(CHANNELS)), dtype=np.float32)]),
    )

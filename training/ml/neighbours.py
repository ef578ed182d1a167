"""Products engaged with together, blended into the model's ranking (docs/model.md "The neighbour blend").

An item-to-item co-occurrence model (the "item-kNN" of Hidasi et al. 2016, Linden et
al. 2003) is strong exactly where the network is weakest: short sessions, where what a
visitor looks at next is most often something other visitors looked at next to what
they just saw. So a served ranking is

    z(model scores) + weight * z(neighbour scores)

over the catalog, ``z`` standardising a row (mean 0, deviation 1), where a product's
neighbour score sums its similarity to the customer's newest engaged products, the k-th
newest weighted ``decay ** k``. Similarity is the cosine of two products' customer sets
shrunk towards 0 for rarely seen pairs, ``c_ij / (sqrt(c_i c_j) + SHRINK)``, of which each
product keeps its PER_PRODUCT best: that bounds the artifact (products x PER_PRODUCT)
and a request's work (HISTORY x PER_PRODUCT).

Weight and decay are chosen by each training run on its validation split
(``blend_choose``), from a grid that starts at weight 0, the model alone: on data where
the neighbours do not help, the run serves the model as before. numpy and scipy only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from training.ml.customers import History, customer_history
from training.ml.data import Interactions, Split
from training.ml.metrics import evaluate_split

PER_PRODUCT = 50
# c_ij / (sqrt(c_i c_j) + SHRINK): a pair seen together once among rare products is not a
# perfect neighbour. 20 is the session benchmark's item-kNN setting (bench/session.py).
SHRINK = 20.0
# The newest engaged products a customer's neighbour scores read.
HISTORY = 20
# The grid blend_choose tries, weight 0 first (the model alone). The scratch measurements
# behind it are in docs/model.md: decay 0.5 with weight 0.25-0.5 won on YooChoose and
# DIGINETICA validation; weight 0 keeps a data set where neighbours do not help as it was.
WEIGHTS = (0.0, 0.25, 0.5, 1.0)
DECAYS = (0.5, 1.0)
# blend_choose keeps the validation customers' model scores (float32) up to this many cells.
CACHE_CELLS = 50_000_000

ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Neighbours:
    """Each product's PER_PRODUCT most similar products: int32 indices (-1 pads) and float32 similarities."""

    indices: np.ndarray  # int32[products, k]
    similarity: np.ndarray  # float32[products, k], 0 where indices is -1

    @property
    def num_products(self) -> int:
        return self.indices.shape[0]

    @functools.cached_property
    def matrix(self) -> sp.csr_matrix:
        """The similarities as a products x products CSR matrix (row: a product, columns: its neighbours).

        Built once per Neighbours (a loaded model's serves every request), not per call.
        """
        keep = self.indices >= 0
        rows = np.repeat(np.arange(self.num_products), keep.sum(axis=1))
        return sp.csr_matrix(
            (self.similarity[keep].astype(np.float32), (rows, self.indices[keep].astype(np.int64))),
            shape=(self.num_products, self.num_products),
        )

    def scores(self, histories: Sequence[Sequence[int]], decay: float) -> np.ndarray:
        """Return float32[len(histories), products]: each history's neighbour score of every product.

        A history is a customer's engaged products, newest first; the first HISTORY count,
        the k-th weighted ``decay ** k``.
        """
        rows, columns, values = [], [], []
        for row, history in enumerate(histories):
            chosen = np.asarray(history, dtype=np.int64)[:HISTORY]
            rows.append(np.full(len(chosen), row))
            columns.append(chosen)
            values.append(decay ** np.arange(len(chosen), dtype=np.float64))
        if not rows:
            return np.zeros((0, self.num_products), dtype=np.float32)
        weights = sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
            shape=(len(histories), self.num_products),
        )
        return np.asarray((weights @ self.matrix).toarray(), dtype=np.float32)


def neighbours_build(rows: Interactions, *, per_product: int = PER_PRODUCT, shrink: float = SHRINK) -> Neighbours:
    """Each product's most similar products by who engaged with both, from ``rows`` (each pair counts once)."""
    p = rows.num_products
    engaged = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows.customer_idx, rows.product_idx)), shape=(rows.num_customers, p)
    )
    engaged.sum_duplicates()
    engaged.data[:] = 1.0
    counts = np.asarray(engaged.sum(axis=0), dtype=np.float64).ravel()
    together = (engaged.T @ engaged).tocsr()
    together.setdiag(0)
    together.eliminate_zeros()
    together = together.tocoo()
    similarity = together.data / (np.sqrt(counts[together.row] * counts[together.col]) + shrink)
    # Per row, the best ``per_product`` (ties: the lower product index first, for stable output).
    order = np.lexsort((together.col, -similarity, together.row))
    row_of = together.row[order]
    starts = np.searchsorted(row_of, np.arange(p))
    rank = np.arange(len(order)) - starts[row_of]
    keep = rank < per_product
    indices = np.full((p, per_product), -1, dtype=np.int32)
    values = np.zeros((p, per_product), dtype=np.float32)
    indices[row_of[keep], rank[keep]] = together.col[order][keep]
    values[row_of[keep], rank[keep]] = similarity[order][keep]
    return Neighbours(indices, values)


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its deviation (a constant row becomes 0): float32.

    Row by row, in float64: standardising adds no difference of its own between a row
    scored alone (a request) and in a batch (the precompute).
    """
    scores = np.asarray(scores, dtype=np.float32)
    out = np.zeros(scores.shape, dtype=np.float32)
    for i, row in enumerate(scores):
        centred = row.astype(np.float64)
        centred -= centred.mean()
        deviation = np.sqrt(np.mean(centred * centred))
        if deviation > 0:
            out[i] = centred / deviation
    return out


@dataclass(frozen=True)
class Blend:
    """The served ranking's mix: the model's scores and ``weight`` times the neighbours' (both standardised)."""

    neighbours: Neighbours
    weight: float
    decay: float

    def apply(self, model_scores: np.ndarray, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """Return float32[rows, products]: ``z(model) + weight * z(neighbours)`` for each row's history."""
        return standardised(model_scores) + np.float32(self.weight) * standardised(
            self.neighbours.scores(histories, self.decay)
        )

    def settings(self) -> dict[str, float]:
        return {"weight": self.weight, "decay": self.decay}


def histories_of(history: History, customers: np.ndarray) -> list[np.ndarray]:
    """The rows of ``history`` for these customers (newest first), as a list of arrays."""
    return [history.products[history.indptr[c] : history.indptr[c + 1]] for c in np.asarray(customers)]


def blended_score_fn(score: ScoreFn, blend: Blend | None, rows: Interactions) -> ScoreFn:
    """``score`` with the blend applied, each customer's history read from ``rows``; ``score`` when None."""
    if blend is None:
        return score
    history = customer_history(rows, HISTORY)
    return lambda customers: blend.apply(score(customers), histories_of(history, customers))


@dataclass(frozen=True)
class BlendTrial:
    weight: float
    decay: float
    validation_ndcg: float

    def to_dict(self) -> dict[str, float]:
        return {"weight": self.weight, "decay": self.decay, "validation_ndcg": round(self.validation_ndcg, 4)}


def blend_choose(
    score: ScoreFn, validation: Split, *, sampled_negatives: int, seed: int, max_customers: int
) -> tuple[dict[str, float] | None, list[BlendTrial]]:
    """Try WEIGHTS x DECAYS on ``validation`` with neighbours of its training rows; keep the best.

    ``score`` is the model stopped early on ``validation`` (the one the refit copies);
    at most ``max_customers`` validation customers, the ones early stopping read (the
    same seeded draw as training.ml.loop). Returns ({"weight", "decay"}, or None when
    weight 0, the model alone, ranks best or ties; every trial), picked by full-ranking
    NDCG@10, the metric early stopping reads.
    """
    rows = np.arange(len(validation.test_customers))
    if len(rows) > max_customers:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_customers, replace=False))
    validation = Split(validation.train, validation.test_customers[rows], validation.test_products[rows])
    neighbours = neighbours_build(validation.train)
    history = customer_history(validation.train, HISTORY)
    # Every trial ranks the same customers: their model scores are kept when they fit in
    # CACHE_CELLS floats, else scored again per trial.
    keep = len(rows) * validation.train.num_products <= CACHE_CELLS
    model_rows: dict[bytes, np.ndarray] = {}

    def model(customers: np.ndarray) -> np.ndarray:
        if not keep:
            return score(customers)
        key = np.asarray(customers, dtype=np.int64).tobytes()
        if key not in model_rows:
            model_rows[key] = score(customers)
        return model_rows[key]

    trials = []
    for weight in WEIGHTS:
        for decay in DECAYS if weight > 0 else DECAYS[:1]:
            blend = Blend(neighbours, weight, decay) if weight > 0 else None
            fn = model if blend is None else (lambda c, b=blend: b.apply(model(c), histories_of(history, c)))
            metrics = evaluate_split(fn, split=validation, sampled_negatives=sampled_negatives, seed=seed)
            trials.append(BlendTrial(weight, decay, float(metrics["full"]["ndcg@10"])))
    best = max(trials, key=lambda t: t.validation_ndcg)  # the first of equals: weight 0 wins ties
    return (None if best.weight == 0 else {"weight": best.weight, "decay": best.decay}), trials

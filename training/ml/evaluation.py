"""Evaluate a trained model, popularity and the serving model on one held-out split.

Everything is ranked through ``CatalogScorer.score``, the function the API serves with
(DESIGN.md: "Offline evaluation uses the exact scoring function the API uses").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.ml.artifact import LoadedModel
from training.ml.customers import customer_history, fold_customers
from training.ml.data import Interactions, Split
from training.ml.metrics import popularity_scores
from training.ml.neighbours import HISTORY, Blend, histories_of, neighbours_build
from training.ml.scoring import CatalogScorer

GATE_METRIC = ("full", "ndcg@10")

ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def popularity_score_fn(split: Split) -> ScoreFn:
    """Score every product by how many training customers engaged with it (the baseline)."""
    popularity = popularity_scores(split.train)
    return lambda customers: np.broadcast_to(popularity, (len(customers), len(popularity)))


def model_score_fn(scorer: CatalogScorer) -> ScoreFn:
    return lambda customers: scorer.score(customers)


def champion_score_fn(
    champion: LoadedModel, *, split: Split, customer_ids: list[str], product_ids: list[str]
) -> ScoreFn:
    """Score the candidate's split with the serving model, as the API would serve it.

    The serving model has its own id maps: customers it does not know get popular
    products (the API's fallback), products it does not know can never be shown (-inf).
    Its customer folds and its neighbours were built from every row it saw, this
    split's test items among them: both are built again from this split's training rows
    (mapped into its id spaces), as the candidate's are.
    """
    popularity = popularity_scores(split.train).astype(np.float32)
    champion_customer = np.array([champion.customer_index.get(c, -1) for c in customer_ids], dtype=np.int64)
    champion_product = np.array([champion.product_index.get(p, -1) for p in product_ids], dtype=np.int64)
    known_products = np.flatnonzero(champion_product >= 0)
    scorer = champion.scorer
    rows = _mapped(champion, split, champion_customer, champion_product)
    if champion.config.folds_items:
        scorer = CatalogScorer(fold_customers(champion.model, customer_history(rows, champion.config.history_length)),
                               champion.prior, champion.channel_weights)  # fmt: skip
    blend = champion.blend
    if blend is not None:
        blend = Blend(neighbours_build(rows), blend.weight, blend.decay)
        history = customer_history(rows, HISTORY)

    def score(customers: np.ndarray) -> np.ndarray:
        customers = np.asarray(customers, dtype=np.int64)
        out = np.broadcast_to(popularity, (len(customers), len(popularity))).copy()
        mapped = champion_customer[customers]
        known = np.flatnonzero(mapped >= 0)
        if len(known):
            theirs = scorer.score(mapped[known])  # the champion's whole catalog, as it serves
            if blend is not None:
                theirs = blend.apply(theirs, histories_of(history, mapped[known]))
            ranked = np.full((len(known), len(popularity)), -np.inf, dtype=np.float32)
            ranked[:, known_products] = theirs[:, champion_product[known_products]]
            out[known] = ranked
        return out

    return score


def _mapped(champion: LoadedModel, split: Split, customer_map: np.ndarray, product_map: np.ndarray) -> Interactions:
    """``split.train``'s rows mapped into the champion's id spaces (rows it has no id for left out)."""
    rows = split.train
    customers, products = customer_map[rows.customer_idx], product_map[rows.product_idx]
    known = (customers >= 0) & (products >= 0)
    config = champion.config
    return Interactions(
        customer_idx=customers[known],
        product_idx=products[known],
        targets=rows.targets[known],
        dwell_ms=rows.dwell_ms[known],
        timestamp=rows.timestamp[known],
        num_customers=config.num_customers,
        num_products=config.num_products,
    )


def metric_of(metrics: dict) -> float:
    group, name = GATE_METRIC
    return float(metrics[group][name])


def gate_decide(*, candidate: dict, popularity: dict, champion: dict | None, tolerance: float) -> GateDecision:
    """Promote only a model that beats popularity and is not worse than the serving one.

    All three are full-ranking NDCG@10 on the same held-out split. ``champion`` is None
    when nothing is promoted yet.
    """
    ours, pop = metric_of(candidate), metric_of(popularity)
    if not ours > pop:
        return GateDecision(False, f"full-ranking NDCG@10 {ours:.4f} does not beat popularity's {pop:.4f}")
    if champion is not None:
        theirs = metric_of(champion)
        if ours < theirs - tolerance:
            return GateDecision(
                False,
                f"full-ranking NDCG@10 {ours:.4f} is more than {tolerance:.4f} below the promoted model's {theirs:.4f}",
            )
        return GateDecision(
            True, f"NDCG@10 {ours:.4f} beats popularity ({pop:.4f}); promoted model {theirs:.4f} (tolerance {tolerance})"
        )
    return GateDecision(True, f"NDCG@10 {ours:.4f} beats popularity ({pop:.4f}); no model was serving before")

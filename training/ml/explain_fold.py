"""Why, for a model whose customer vectors are folded from their products: remove a product, fold again, score.

A folded model (``RecommenderConfig.folds_items``, issue 13's default) has no per-customer
parameters to estimate: the served vector is the (recency-weighted) mean of the context
rows of the customer's ``history_length`` newest products, every weight shared. So the
counterfactual "had the customer not engaged with product j" is exact and cheap: fold the
history without j (the next-newest product moves into the window, as it would have),
and score the recommended products through the same network. A product's support is the
drop in the served score; the products with the largest positive drops are cited.

The same refold measures faithfulness (``measure_fold_faithfulness``): removing the cited
products together against removing as many other products of the window. With every
shared weight fixed, that is what removing those events does to this model's answer.

numpy and torch only: no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.ml.customers import History, fold_vectors
from training.ml.explain_space import SUPPORTS
from training.ml.model import RecommenderNN
from training.ml.scoring import CatalogScorer
from training.ml.topk import top_k


def folded_scores(
    model: RecommenderNN,
    prior: np.ndarray,
    channel_weights: Sequence[float],
    history: np.ndarray,
    removals: Sequence[np.ndarray],
    items: np.ndarray,
    *,
    served: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Return float32[len(removals) + 1, len(items)]: the items' served scores, folded without each removal.

    ``history`` is the customer's engaged products, newest first (as ``customer_history``
    orders them), every one of them: removing one lets the next into the window. Row 0
    removes nothing; row r + 1 removes the products at positions ``removals[r]`` of
    ``history``. ``served``: the customer's vectors as the model serves them (one per
    customer table); each refold then moves them by the refold's difference, so row 0 is
    exactly the served score even where the history read back differs a little from
    training's (and a learnt offset, ``items+id``, stays).
    """
    config = model.config
    length = config.history_length
    history = np.asarray(history, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    kept = [history[:length]]
    for removal in removals:
        keep = np.ones(len(history), dtype=bool)
        keep[np.asarray(removal, dtype=np.int64)] = False
        kept.append(history[keep][:length])
    width = max(1, max(len(k) for k in kept))
    products = np.zeros((len(kept), width), dtype=np.int64)
    mask = np.zeros((len(kept), width), dtype=bool)
    for row, k in enumerate(kept):
        products[row, : len(k)], mask[row, : len(k)] = k, True
    model.eval()
    with torch.no_grad():
        vectors = fold_vectors(model, torch.from_numpy(products), torch.from_numpy(mask))
        if served is not None:
            vectors = [v - v[:1] + torch.as_tensor(np.asarray(s), dtype=v.dtype)[None, :] for v, s in zip(vectors, served)]
        user = vectors[0].repeat_interleave(len(items), dim=0)
        gmf_user = vectors[1].repeat_interleave(len(items), dim=0) if config.dot_branch else None
        tiled = torch.from_numpy(items).repeat(len(kept))
        prior_t = torch.as_tensor(np.asarray(prior, dtype=np.float32))[tiled]
        logits = model.channel_logits_for(user, gmf_user, tiled, prior_t)  # [rows * items, channels]
        weights = torch.as_tensor(list(channel_weights), dtype=logits.dtype)
        scores = torch.sigmoid(logits) @ weights
    return scores.view(len(kept), len(items)).numpy().astype(np.float32)


def removal_supports(
    model: RecommenderNN,
    prior: np.ndarray,
    channel_weights: Sequence[float],
    history: np.ndarray,
    items: np.ndarray,
    *,
    served: Sequence[np.ndarray] | None = None,
    top: int = SUPPORTS,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return, per item, (positions into ``history``, score drops): the products whose removal lowers it most.

    Only products in the fold's window can matter (removing an older one changes
    nothing); at most ``top``, only positive drops, largest first, ties to the newer
    product (the lower position).
    """
    window = min(len(history), model.config.history_length)
    if not window or not len(items):
        return [(np.zeros(0, dtype=np.int64), np.zeros(0)) for _ in items]
    removals = [np.array([p]) for p in range(window)]
    scores = folded_scores(model, prior, channel_weights, history, removals, items, served=served)
    drops = (scores[0][None, :] - scores[1:]).astype(np.float64)  # [window, items]
    result = []
    for column in range(len(items)):
        order = top_k(drops[:, column], top)
        order = order[drops[order, column] > 0]
        result.append((order, drops[order, column]))
    return result


@dataclass(frozen=True)
class FoldFaithfulness:
    cited_drop: float  # mean served-score drop from removing the cited products together
    random_drop: float  # the same for as many other products of the window (mean of the draws)
    cited_wins: float  # share of items whose cited drop beats their random drop
    items: int
    sampled_customers: int


def measure_fold_faithfulness(
    model: RecommenderNN,
    prior: np.ndarray,
    channel_weights: Sequence[float],
    history: History,
    *,
    customers: int = 40,
    items_per_customer: int = 2,
    random_draws: int = 3,
    min_engaged: int = 6,
    seed: int = 0,
    explain=None,
) -> FoldFaithfulness:
    """Measure the cited against the random score drop on a sample of customers, by refolding.

    ``history``: every customer's products, newest first, as the served model folded
    them (its refold). Sampled: customers with at least ``min_engaged`` products; for each,
    the model's top ``items_per_customer`` products outside their history, explained by
    ``removal_supports``, or by ``explain(customer, item, products)`` -> positions into
    ``products`` when given (the API's path, measured the same way).
    """
    rng = np.random.default_rng(seed)
    sizes = np.diff(history.indptr)
    pool = np.flatnonzero(sizes >= min_engaged)
    chosen = np.sort(rng.choice(pool, size=min(customers, len(pool)), replace=False))
    scorer = CatalogScorer(model, prior, channel_weights)
    window = model.config.history_length
    cited_drops, random_drops = [], []
    for customer in chosen.tolist():
        products = history.products[history.indptr[customer] : history.indptr[customer + 1]]
        scores = scorer.score([customer])[0]
        scores[products] = -np.inf
        items = top_k(scores, items_per_customer)
        served = [table.weight[customer].detach().numpy() for table in model.customer_tables()]
        for item in items.tolist():
            if explain is None:
                [(cited, _)] = removal_supports(model, prior, channel_weights, products, np.array([item]), served=served)
            else:
                cited = np.asarray(explain(customer, item, products), dtype=np.int64)
            others = np.setdiff1d(np.arange(min(len(products), window)), cited)
            if not len(cited) or len(others) < len(cited):
                continue
            draws = [rng.choice(others, size=len(cited), replace=False) for _ in range(random_draws)]
            scored = folded_scores(
                model, prior, channel_weights, products, [cited, *draws], np.array([item]), served=served
            )[:, 0]
            cited_drops.append(float(scored[0] - scored[1]))
            random_drops.append(float(np.mean(scored[0] - scored[2:])))
    cited, random = np.asarray(cited_drops), np.asarray(random_drops)
    return FoldFaithfulness(
        cited_drop=float(cited.mean()) if len(cited) else 0.0,
        random_drop=float(random.mean()) if len(random) else 0.0,
        cited_wins=float((cited > random).mean()) if len(cited) else 0.0,
        items=len(cited),
        sampled_customers=len(chosen),
    )

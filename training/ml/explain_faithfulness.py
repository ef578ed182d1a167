"""Is an explanation faithful? Remove the products it cites and see whether the score drops.

RecommenderNN learns one embedding per customer (``user_embed``, and ``gmf_user_embed``
with the dot branch): the served vector is not rebuilt from the customer's products at
request time, so "remove these events" has no effect on it until a retrain. What the
events would have made of the customer is measured by **folding the customer in**
again: every weight of the model frozen, the customer's vectors re-estimated from zero
by the training objective (per-channel BCE against the customer's engaged products with
``positive_floor``, the same sampled negatives in every variant, the embedding L2),
from

- all of their engaged products (the reference score),
- all but the ones the explanation cites, and
- all but as many other engaged products, drawn at random (several draws, averaged).

The recommended product's score (the served mix of the three channels) under each
vector gives the drops. The rows are the ones the model was trained on (runs.py's
split: each customer's held-out products are not among them), and the objective's
settings are the model's (``FoldInConfig.of_influence``). An explanation is faithful when the cited products' drop is
larger than the random ones'. The fold-in is the same procedure in all three, so a
difference between them comes from which products were removed, not from the fold-in
differing from training. docs/model.md has the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.ml.data import Interactions, items_by_customer
from training.ml.model import RecommenderNN
from training.ml.scoring import CatalogScorer
from training.ml.explain_space import (
    SUPPORTS,
    Dense,
    InfluenceConfig,
    negatives_sample,
    supporting_products,
)


@dataclass(frozen=True)
class FoldInConfig:
    steps: int = 100
    lr: float = 0.05
    negatives_per_positive: int = 4
    positive_floor: float = 0.5  # as TrainConfig's default
    embedding_l2: float = 1e-3

    @classmethod
    def of_influence(cls, influence: InfluenceConfig, **overrides) -> FoldInConfig:
        """The fold-in with the objective the model was trained with (and the influence assumes)."""
        return cls(
            negatives_per_positive=influence.negatives_per_positive, positive_floor=influence.positive_floor,
            embedding_l2=influence.embedding_l2, **overrides,
        )  # fmt: skip


@dataclass(frozen=True)
class Faithfulness:
    """The mean score drops over every (customer, recommended product) explained."""

    cited_drop: float  # removing the cited products
    random_drop: float  # removing as many other engaged products, averaged over the draws
    cited_wins: float  # the share of explained items whose cited drop beats their random drop
    items: int  # (customer, recommended product) pairs measured
    sampled_customers: int
    reference_score: float  # the mean folded-in score with every engaged product

    def as_dict(self) -> dict:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def fold_in_scores(
    model: RecommenderNN,
    prior: np.ndarray,
    channel_weights: Sequence[float],
    problems: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]],
    config: FoldInConfig = FoldInConfig(),
) -> np.ndarray:
    """Fold in one customer vector per problem and return each problem's score of its target product.

    A problem is (positive products, their targets float32[n, 3], negative products,
    target product). All problems are solved at once: each has its own vectors and its
    own mean loss, and Adam is per coordinate, so they do not interact.
    """
    d = model.config.embed_dim
    channels = model.config.num_interactions
    w = {name: p.detach().float().cpu() for name, p in model.state_dict().items()}
    product_term = w["product_embed.weight"] @ w["fc1.weight"][:, d : 2 * d].t()
    product_term += torch.as_tensor(np.asarray(prior, dtype=np.float32))[:, None] * w["fc1.weight"][:, 3 * d][None, :]
    channel_term = w["interaction_embed.weight"] @ w["fc1.weight"][:, 2 * d : 3 * d].t() + w["fc1.bias"]
    w_user = w["fc1.weight"][:, :d]
    dot = model.config.dot_branch
    gmf_product = w["gmf_product_embed.weight"] * w["gmf_out.weight"][0][None, :] if dot else None

    owner, products, channel, target, floor = [], [], [], [], config.positive_floor
    for i, (positives, targets, negatives, _) in enumerate(problems):
        pos_t = floor + (1.0 - floor) * np.asarray(targets, dtype=np.float32).reshape(-1, channels)
        rows = np.concatenate([np.repeat(positives, channels), np.repeat(negatives, channels)])
        owner.append(np.full(len(rows), i, dtype=np.int64))
        products.append(rows.astype(np.int64))
        channel.append(np.tile(np.arange(channels), len(positives) + len(negatives)))
        target.append(np.concatenate([pos_t.reshape(-1), np.zeros(len(negatives) * channels, dtype=np.float32)]))
    owner_t = torch.from_numpy(np.concatenate(owner))
    products_t = torch.from_numpy(np.concatenate(products))
    channel_t = torch.from_numpy(np.concatenate(channel))
    target_t = torch.from_numpy(np.concatenate(target).astype(np.float32))
    counts = torch.bincount(owner_t, minlength=len(problems)).clamp(min=1).float()
    row_weight = 1.0 / counts[owner_t]  # each problem's mean loss
    fixed = product_term[products_t] + channel_term[channel_t]  # [rows, 64]: the customer's share is added per step
    gmf_rows = gmf_product[products_t] if dot else None

    user = torch.zeros(len(problems), d, requires_grad=True)
    params = [user]
    gmf_user = None
    if dot:
        gmf_user = torch.zeros(len(problems), d, requires_grad=True)
        params.append(gmf_user)
    optimizer = torch.optim.Adam(params, lr=config.lr)

    def logits_of(rows_owner, rows_fixed, rows_gmf):
        h = torch.relu((user @ w_user.t())[rows_owner] + rows_fixed)
        h = torch.relu(h @ w["fc2.weight"].t() + w["fc2.bias"])
        logit = h @ w["out.weight"][0] + w["out.bias"][0]
        if dot:
            logit = logit + (gmf_user[rows_owner] * rows_gmf).sum(dim=1) + w["gmf_out.bias"][0]
        return logit

    for _ in range(config.steps):
        optimizer.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(logits_of(owner_t, fixed, gmf_rows), target_t, reduction="none")
        objective = (loss * row_weight).sum() + config.embedding_l2 * sum(p.pow(2).sum() for p in params)
        objective.backward()
        optimizer.step()

    with torch.no_grad():
        goal = torch.tensor([p[3] for p in problems], dtype=torch.int64)
        each = torch.arange(len(problems)).repeat_interleave(channels)
        goal_rows = goal.repeat_interleave(channels)
        goal_channels = torch.arange(channels).repeat(len(problems))
        goal_fixed = product_term[goal_rows] + channel_term[goal_channels]
        goal_gmf = gmf_product[goal_rows] if dot else None
        probability = torch.sigmoid(logits_of(each, goal_fixed, goal_gmf)).view(len(problems), channels)
        return (probability @ torch.tensor([float(c) for c in channel_weights])).numpy()


def engagement_weights(data: Interactions, channel_weights: Sequence[float]) -> np.ndarray:
    """Each pair's engagement: its channel targets mixed with the score's weights (about Engagement.score)."""
    return data.targets @ np.asarray(channel_weights, dtype=np.float32)


def measure_faithfulness(
    model: RecommenderNN,
    prior: np.ndarray,
    channel_weights: Sequence[float],
    data: Interactions,
    *,
    customers: int = 40,
    items_per_customer: int = 2,
    random_draws: int = 3,
    min_engaged: int = 10,
    seed: int = 0,
    config: FoldInConfig = FoldInConfig(),
    batch_customers: int = 20,
    explain=None,
    influence: InfluenceConfig = InfluenceConfig(),
    every_row: Interactions | None = None,
) -> Faithfulness:
    """Measure the cited against the random score drop on a sample of customers (module docstring).

    ``data`` are the rows the model was trained on, ``every_row`` all the engaged rows
    (with the held-out ones: never a negative; default ``data``), ``influence`` the
    model's objective as the API reads it from the artifact. Sampled: customers with at least
    ``min_engaged`` engaged products; for each, the model's top ``items_per_customer``
    products they have not engaged with, explained as the API explains them, or by
    ``explain(customer, item, engaged, targets, engagement)`` -> positions into
    ``engaged`` when given (to measure another explainer the same way).
    """
    rng = np.random.default_rng(seed)
    indptr, _ = items_by_customer(data)
    order = np.lexsort((data.product_idx, data.customer_idx))
    sizes = np.diff(indptr)
    pool = np.flatnonzero(sizes >= min_engaged)
    chosen = np.sort(rng.choice(pool, size=min(customers, len(pool)), replace=False))
    dense = Dense.of(model, prior, channel_weights)
    scorer = CatalogScorer(model, prior, channel_weights)
    values = engagement_weights(data, channel_weights)
    every = data if every_row is None else every_row
    every_indptr, every_products = items_by_customer(every)
    cited_drops, random_drops, references = [], [], []
    for first in range(0, len(chosen), batch_customers):
        problems, plan = [], []  # plan: (reference problem, cited problem, random problems)
        batch = chosen[first : first + batch_customers]
        scores = scorer.score(batch)
        for row, customer in enumerate(batch):
            rows = order[indptr[customer] : indptr[customer + 1]]
            engaged, targets, weights = data.product_idx[rows], data.targets[rows], values[rows]
            all_engaged = every_products[every_indptr[customer] : every_indptr[customer + 1]]
            unseen = np.ones(data.num_products, dtype=bool)
            unseen[engaged] = False
            unseen[all_engaged] = False
            negatives = rng.choice(np.flatnonzero(unseen), size=config.negatives_per_positive * len(engaged))
            customer_scores = np.where(unseen, scores[row], -np.inf)
            items = np.argsort(-customer_scores, kind="stable")[:items_per_customer]
            if explain is None:
                vector = dense.customer_vector(model, int(customer))
                sample = negatives_sample(
                    data.num_products, np.union1d(engaged, all_engaged), seed=int(customer), positives=len(engaged),
                    per_positive=influence.negatives_per_positive,
                )  # fmt: skip
                supports = supporting_products(dense, vector, items, engaged, targets, sample, config=influence)
                cites = [c for c, _ in supports]
            else:
                cites = [explain(int(customer), int(item), engaged, targets, weights) for item in items]
            for item, cited in zip(items, cites, strict=True):
                if not len(cited):
                    continue
                others = np.setdiff1d(np.arange(len(engaged)), cited)
                if len(others) < len(cited):
                    continue

                def without(drop: np.ndarray, item=item, engaged=engaged, targets=targets, negatives=negatives):
                    keep = np.ones(len(engaged), dtype=bool)
                    keep[drop] = False
                    return (engaged[keep], targets[keep], negatives, int(item))

                reference = len(problems)
                problems.append(without(np.zeros(0, dtype=np.int64)))
                problems.append(without(cited))
                draws = [rng.choice(others, size=len(cited), replace=False) for _ in range(random_draws)]
                problems.extend(without(draw) for draw in draws)
                plan.append((reference, reference + 1, list(range(reference + 2, reference + 2 + random_draws))))
        if not problems:
            continue
        folded = fold_in_scores(model, prior, channel_weights, problems, config)
        for reference, cited_at, random_at in plan:
            references.append(folded[reference])
            cited_drops.append(folded[reference] - folded[cited_at])
            random_drops.append(float(np.mean(folded[reference] - folded[random_at])))
    cited, random = np.asarray(cited_drops), np.asarray(random_drops)
    return Faithfulness(
        cited_drop=float(cited.mean()) if len(cited) else 0.0,
        random_drop=float(random.mean()) if len(random) else 0.0,
        cited_wins=float((cited > random).mean()) if len(cited) else 0.0,
        items=len(cited),
        sampled_customers=len(chosen),
        reference_score=float(np.mean(references)) if references else 0.0,
    )


__all__ = ["SUPPORTS", "FoldInConfig", "InfluenceConfig", "Faithfulness", "fold_in_scores", "measure_faithfulness"]

"""Which engaged products support a recommendation (influence), and a product's neighbours (product space).

numpy only, no database: ``training.services.explain`` (the API and the dashboard) and
``training.ml.explain_faithfulness`` (the measurement) use the same functions, so
what is measured is what is served.

**Supports: influence on the folded-in customer.** RecommenderNN learns one vector
per customer (``user_embed``, ``gmf_user_embed``) from that customer's engaged
products and sampled negatives, every other weight shared. Which engaged product
"supports" a recommendation is answered by the influence function of that per-customer
problem: removing engaged product j moves the customer's vector by about
``H^-1 grad l_j / N`` (``H`` the Gauss-Newton Hessian of the customer's training
objective in their vector, ``l_j`` j's per-channel BCE, ``N`` the customer's examples),
so the recommended product t's score drops by about

    drop_j = sum over channels c of (y_jc - p_jc) * grad z_jc . H^-1 grad s_t / N

(``y`` the floored channel targets, ``p`` the model's predictions, ``z`` the logits,
``s_t`` t's served score). Products with the largest positive drop are cited. It costs
one pass of the network's closed-form gradients over the customer's engaged products
and a sample of negatives, and one small solve (D = 64 with the dot branch). The
objective's settings (``positive_floor``, ``embedding_l2``, negatives per positive) are
the served model's own (``InfluenceConfig.of_artifact``), and only rows the model was
trained on may be cited (``training.services.explain`` selects them). docs/model.md
("Explanations") measures whether removing the cited products' events lowers the score
more than removing as many other engaged products.

**Neighbours: the product space.** A product's vector is what the model's score sees of
it: its share of ``fc1`` (``W_p · product_embed``, without the dwell prior, a scalar
that says nothing about taste) and, with the dot branch, its GMF embedding times
``gmf_out``'s weights. Each part is L2-normalised and the two concatenated (divided by
sqrt 2), so the cosine of two products weighs the MLP's view and the dot branch's
equally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.ml.model import RecommenderNN
from training.ml.topk import top_k

SUPPORTS = 3  # engaged products cited per recommendation, at most
HESSIAN_MAX_NEGATIVES = 512  # a sample is enough for a D x D matrix
MAX_ENGAGED = 500  # the customer's strongest trained products considered (bounds a request's cost)
MIN_RIDGE = 1e-6  # always added to the Hessian's diagonal: solvable with embedding_l2 = 0 and one product


@dataclass(frozen=True)
class InfluenceConfig:
    """The customer's training objective, as the served model was trained (TrainConfig's defaults otherwise)."""

    positive_floor: float = 0.5
    embedding_l2: float = 1e-3
    negatives_per_positive: int = 4
    target_recency: str = "customer"

    @classmethod
    def of_artifact(cls, extra: dict, metrics: dict) -> InfluenceConfig:
        """Read the values training used from an artifact: ``extra["train"]`` (TrainConfig) and
        ``metrics["data"]["target_recency"]`` (training/services/pipeline.py stores both); a missing
        or malformed value falls back to the default above."""
        train = extra.get("train") if isinstance(extra.get("train"), dict) else {}
        data = metrics.get("data") if isinstance(metrics.get("data"), dict) else {}
        defaults = cls()

        def number(name: str, kind: type, low: float, high: float):
            value = train.get(name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
            return kind(value) if ok else getattr(defaults, name)

        recency = data.get("target_recency")
        return cls(
            positive_floor=number("positive_floor", float, 0.0, 1.0),
            embedding_l2=number("embedding_l2", float, 0.0, float("inf")),
            negatives_per_positive=number("negatives_per_positive", int, 0, 10_000),
            target_recency=recency if recency in ("customer", "shop", "none") else defaults.target_recency,
        )


def product_space(model: RecommenderNN) -> np.ndarray:
    """Return float32[products, width]: each product's unit vector in the model's product space."""
    d = model.config.embed_dim
    with torch.no_grad():
        parts = [model.product_embed.weight.detach() @ model.fc1.weight.detach()[:, d : 2 * d].t()]
        if model.config.dot_branch:
            parts.append(model.gmf_product_embed.weight.detach() * model.gmf_out.weight.detach()[0][None, :])
        normalised = [_unit(part.float().cpu().numpy()) for part in parts]
    space = np.concatenate(normalised, axis=1) / np.sqrt(len(normalised))
    return np.ascontiguousarray(space, dtype=np.float32)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def nearest_products(space: np.ndarray, product: int, allowed: np.ndarray, *, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (indices, cosines) of the ``k`` products nearest ``product`` among ``allowed`` (a bool mask), best first.

    The product itself is never among them. Ties go to the lower index.
    """
    similarity = space @ space[product]
    allowed = allowed.copy()
    allowed[product] = False
    candidates = np.flatnonzero(allowed)
    if not len(candidates) or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    take = min(k, len(candidates))
    top = candidates[top_k(similarity[candidates], take)]  # candidates ascend: ties still go to the lower index
    return top, similarity[top]




@dataclass(frozen=True)
class Dense:
    """The shared weights the influence needs, as numpy views (no copies)."""

    d: int
    w_user: np.ndarray
    w_product: np.ndarray
    w_prior: np.ndarray
    channel_term: np.ndarray  # [C, 64]
    w2: np.ndarray
    b2: np.ndarray
    w_out: np.ndarray
    b_out: float
    product_embed: np.ndarray
    gmf_product_embed: np.ndarray | None
    gmf_w: np.ndarray | None
    gmf_b: float
    prior: np.ndarray
    channel_weights: np.ndarray

    @classmethod
    def of(cls, model: RecommenderNN, prior: np.ndarray, channel_weights: Sequence[float]) -> Dense:
        def view(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy()

        d = model.config.embed_dim
        w1 = view(model.fc1.weight)
        dot = model.config.dot_branch
        return cls(
            d=d, w_user=w1[:, :d], w_product=w1[:, d : 2 * d], w_prior=w1[:, 3 * d],
            channel_term=view(model.interaction_embed.weight) @ w1[:, 2 * d : 3 * d].T + view(model.fc1.bias),
            w2=view(model.fc2.weight), b2=view(model.fc2.bias), w_out=view(model.out.weight)[0],
            b_out=float(model.out.bias.detach()[0]), product_embed=view(model.product_embed.weight),
            gmf_product_embed=view(model.gmf_product_embed.weight) if dot else None,
            gmf_w=view(model.gmf_out.weight)[0] if dot else None,
            gmf_b=float(model.gmf_out.bias.detach()[0]) if dot else 0.0,
            prior=np.asarray(prior, dtype=np.float32), channel_weights=np.asarray(channel_weights, dtype=np.float32),
        )  # fmt: skip

    def customer_vector(self, model: RecommenderNN, customer: int) -> np.ndarray:
        """Return the customer's learnt vector: user, then GMF user with the dot branch."""
        with torch.no_grad():
            parts = [model.user_embed.weight[customer].detach().cpu().numpy()]
            if self.gmf_product_embed is not None:
                parts.append(model.gmf_user_embed.weight[customer].detach().cpu().numpy())
        return np.concatenate(parts).astype(np.float32)

    def gradients(self, vector: np.ndarray, products: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (logit_grad float32[P, C, D], probability float64[P, C]) of each product for this customer vector.

        Exact for the network (ReLU's derivative taken as 0 at 0), in closed form over all products at once.
        """
        d = self.d
        products = np.asarray(products, dtype=np.int64)
        user = vector[:d].astype(np.float32)
        product_term = self.product_embed[products] @ self.w_product.T + self.prior[products, None] * self.w_prior
        h1 = (user @ self.w_user.T)[None, None, :] + product_term[:, None, :] + self.channel_term[None, :, :]
        m1 = h1 > 0
        h2 = np.maximum(h1, 0) @ self.w2.T + self.b2
        m2 = h2 > 0
        logit = np.maximum(h2, 0) @ self.w_out + self.b_out  # [P, C]
        grads = [(m1 * ((m2 * self.w_out) @ self.w2)) @ self.w_user]  # [P, C, d]
        if self.gmf_product_embed is not None:
            gmf_product = self.gmf_product_embed[products] * self.gmf_w
            logit = logit + (gmf_product @ vector[d:].astype(np.float32))[:, None] + self.gmf_b
            grads.append(np.broadcast_to(gmf_product[:, None, :], grads[0].shape))
        return np.concatenate(grads, axis=2), 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))


def supporting_products(
    dense: Dense,
    vector: np.ndarray,
    items: np.ndarray,
    engaged: np.ndarray,
    targets: np.ndarray,
    negatives: np.ndarray,
    *,
    config: InfluenceConfig = InfluenceConfig(),
    total_engaged: int | None = None,
    top: int = SUPPORTS,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return, per recommended item, (positions into ``engaged``, estimated score drops), largest drop first.

    ``targets`` are the engaged products' channel targets float[n, C] (as training
    builds them), ``negatives`` a sample of products the customer has not engaged with
    (the Hessian's share of the negatives). ``total_engaged`` is the customer's number of
    training rows when ``engaged`` is only the strongest of them (MAX_ENGAGED): ``N`` and
    the Hessian count them all (the considered rows stand in for the rest). Only products
    whose removal is estimated to lower the item's score are cited, at most ``top``; ties
    go to the earlier position.
    """
    engaged = np.asarray(engaged, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if not len(engaged) or not len(items):
        return [(np.zeros(0, dtype=np.int64), np.zeros(0)) for _ in items]
    grads, probability = dense.gradients(vector, np.concatenate([items, engaged, np.asarray(negatives, np.int64)]))
    k, n = len(items), len(engaged)
    total = max(total_engaged or n, n)
    per_positive = config.negatives_per_positive
    width = grads.shape[2]
    slope = probability * (1.0 - probability)
    score_grad = ((slope[:k] * dense.channel_weights)[:, :, None] * grads[:k]).sum(axis=1)  # [k, D]
    rows = grads[k:]  # engaged, then negatives
    # The examples the customer's objective averages over: every (product, channel) of all
    # their training rows and of ``per_positive`` negatives per row (samples scaled up).
    sampled = len(rows) - n
    negatives_weight = per_positive * total / sampled if sampled else 0.0
    weight = np.concatenate([np.full(n, total / n), np.full(sampled, negatives_weight)])[:, None] * slope[k:]
    examples = (total + per_positive * total) * grads.shape[1]
    scaled = (rows * np.sqrt(weight)[:, :, None]).reshape(-1, width)
    hessian = (scaled.T @ scaled).astype(np.float64) / examples  # Gauss-Newton: sum of w * g g^T
    hessian += (2.0 * config.embedding_l2 + MIN_RIDGE) * np.eye(width)
    try:
        v = np.linalg.solve(hessian, score_grad.T.astype(np.float64))  # [D, k]
    except np.linalg.LinAlgError:  # only with non-finite weights: nothing can be said
        return [(np.zeros(0, dtype=np.int64), np.zeros(0)) for _ in items]
    floor = config.positive_floor
    residual = floor + (1.0 - floor) * np.asarray(targets, dtype=np.float64) - probability[k : k + n]
    projected = (grads[k : k + n].reshape(n * grads.shape[1], width) @ v).reshape(n, grads.shape[1], k)
    drops = (residual[:, :, None] * projected).sum(axis=1) / examples  # [n, k]
    drops = np.where(np.isfinite(drops), drops, 0.0)
    result = []
    for column in range(k):
        drop = drops[:, column]
        order = np.lexsort((np.arange(n), -drop))[:top]
        order = order[drop[order] > 0]
        result.append((order, drop[order]))
    return result


def negatives_sample(
    num_products: int, engaged: np.ndarray, *, seed: int, positives: int | None = None, per_positive: int = 4
) -> np.ndarray:
    """Return a fixed sample of products the customer has not engaged with.

    ``engaged`` are all the customer's engaged products (none of them is a negative);
    ``positives`` their training rows (default: ``len(engaged)``); ``per_positive`` per
    row, at most HESSIAN_MAX_NEGATIVES.
    """
    engaged = np.asarray(engaged, dtype=np.int64)
    unseen = np.ones(num_products, dtype=bool)
    unseen[engaged] = False
    pool = np.flatnonzero(unseen)
    count = len(engaged) if positives is None else positives
    size = min(per_positive * count, HESSIAN_MAX_NEGATIVES, len(pool))
    return np.random.default_rng(seed).choice(pool, size=size, replace=False) if size else pool[:0]

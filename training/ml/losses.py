"""The training objectives' parts: the sampled-softmax loss and the embedding penalty (used by loop.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training.ml.data import Interactions
from training.ml.model import RecommenderNN

# Up to this many customer x product cells (64 MB of bools), SampledSoftmax keeps who engaged
# with what as a dense table; above it, a sorted key list searched each step.
DENSE_SEEN_CELLS = 1 << 26


def embedding_penalty(
    model: RecommenderNN, customers: torch.Tensor, products: torch.Tensor, folded: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """Return the mean squared norm, per example, of the embedding rows (or folded customer vectors) this batch used."""
    users = folded if folded is not None else [table(customers) for table in model.customer_tables()]
    rows = [*users, model.product_embed(products)]
    if model.config.dot_branch:
        rows.append(model.gmf_product_embed(products))
    return sum(row.pow(2).sum(dim=1).mean() for row in rows)


class SampledSoftmax:
    """The "softmax" loss: each engaged pair against negatives shared by the batch.

    Per step, ``count`` (TrainConfig.softmax_negatives) products are drawn with probability q ~ (1 + rows) **
    ``exponent`` (TrainConfig.negative_exponent); each logit is corrected by -log(N q) (the sampled softmax's
    log-q correction, so popular products are not over-penalised for being drawn often),
    and a drawn product the row's customer engaged with is masked out. Each pair is asked
    on one channel, drawn with the engagement weights, and its cross-entropy is weighted
    by that channel's target, so stronger engagement counts more.
    """

    def __init__(
        self, train: Interactions, *, count: int, exponent: float, channel_weights: Sequence[float], seed: int, device
    ) -> None:
        rows = np.bincount(train.product_idx, minlength=train.num_products).astype(np.float64)
        q = (1.0 + rows) ** exponent
        self.q = torch.as_tensor(q / q.sum(), dtype=torch.float32, device=device)
        self.count = count
        self.log_nq = torch.log(self.count * self.q)
        self.channel_weights = torch.as_tensor(list(channel_weights), dtype=torch.float32, device=device)
        self.stride = train.num_products
        if train.num_customers * train.num_products <= DENSE_SEEN_CELLS:
            # A bool per customer x product: one gather a step instead of a binary search per key.
            self.seen_dense = torch.zeros(train.num_customers, train.num_products, dtype=torch.bool, device=device)
            self.seen_dense[torch.as_tensor(train.customer_idx), torch.as_tensor(train.product_idx)] = True
        else:
            self.seen_dense = None
            keys = np.unique(train.customer_idx * self.stride + train.product_idx)
            self.seen = torch.as_tensor(keys, device=device)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def loss(self, model, user, gmf_user, customers, products, targets, prior) -> tuple[torch.Tensor, torch.Tensor]:
        negatives = torch.multinomial(self.q, self.count, replacement=True, generator=self.generator)
        channels = torch.multinomial(self.channel_weights, len(customers), replacement=True, generator=self.generator)
        positive = model.logits_for(user, gmf_user, products, channels, prior[products]) - self.log_nq[products]
        shared = model.shared_logits_for(user, gmf_user, channels, negatives, prior[negatives])
        shared = shared - self.log_nq[negatives][None, :]
        shared = shared.masked_fill(self._seen(customers, negatives), -torch.inf)
        log_p = torch.log_softmax(torch.cat([positive[:, None], shared], dim=1), dim=1)[:, 0]
        weight = targets.gather(1, channels[:, None]).squeeze(1)
        return -(weight * log_p).sum() / weight.sum().clamp_min(1e-6), negatives

    def _seen(self, customers: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
        """[len(customers), len(products)]: True where the customer engaged with the product."""
        if self.seen_dense is not None:
            return self.seen_dense[customers[:, None], products[None, :]]
        keys = customers[:, None] * self.stride + products[None, :]
        at = torch.searchsorted(self.seen, keys).clamp_max(len(self.seen) - 1)
        return self.seen[at] == keys

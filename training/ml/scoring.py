"""CatalogScorer: the one scoring function, used by the API and by offline evaluation alike.

fc1 is linear in its concatenated input, so for customer u, product p, channel c:
``fc1([E_u, E_p, E_c, s_p]) = W_u E_u + (W_p E_p + w_s s_p) + (W_c E_c + b)``. The product
and channel terms do not depend on the customer, so they are computed once per model;
a call computes only ``W_u E_u`` and runs fc2 and out over every (channel, product).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from training.ml.model import RecommenderNN

# Bound on the widest intermediate (customers x channels x products x 64 float32) per chunk.
CHUNK_BYTES = 64 * 1024 * 1024


class CatalogScorer:
    """Score products for customers with a snapshot of a model's weights taken at construction."""

    def __init__(self, model: RecommenderNN, prior: np.ndarray, channel_weights: Sequence[float]) -> None:
        config = model.config
        prior = np.asarray(prior, dtype=np.float32)
        if prior.shape != (config.num_products,):
            raise ValueError(f"prior must have shape ({config.num_products},), got {prior.shape}.")
        weights = [float(w) for w in channel_weights]
        if len(weights) != config.num_interactions:
            raise ValueError(f"need {config.num_interactions} channel weights, got {len(weights)}.")
        if not all(math.isfinite(w) and w >= 0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
            raise ValueError(f"channel weights must be >= 0 and sum to 1, got {weights}.")
        self.config = config
        self.channel_weights = tuple(weights)
        model.eval()
        d = config.embed_dim
        with torch.no_grad():
            device = model.fc1.weight.device
            w1 = model.fc1.weight  # [64, 3d + 1]: columns are user | product | interaction | prior
            w_user, w_product, w_channel, w_prior = w1[:, :d], w1[:, d : 2 * d], w1[:, 2 * d : 3 * d], w1[:, 3 * d]
            # Clones: the scorer must not change when training goes on updating the model in place.
            self._user_embed = _snapshot(model.user_embed.weight)
            self._w_user_t = _snapshot(w_user.t())  # [d, 64]
            # Kept apart rather than summed to [channels, products, 64]: a third of the memory,
            # and a call adds the channel term to the small customer term first anyway.
            self._product_term = model.product_embed.weight @ w_product.t()  # [products, 64]
            self._product_term += torch.as_tensor(prior, device=device)[:, None] * w_prior[None, :]
            self._channel_term = model.interaction_embed.weight @ w_channel.t() + model.fc1.bias  # [channels, 64]
            self._w2_t = _snapshot(model.fc2.weight.t())  # [64, 32]
            self._b2 = _snapshot(model.fc2.bias)
            self._w_out = _snapshot(model.out.weight[0])  # [32]
            self._b_out = float(model.out.bias[0])
            self._channel_weights = torch.tensor(weights, dtype=torch.float32, device=device)
            self._dot_branch = config.dot_branch
            if self._dot_branch:
                self._gmf_user = _snapshot(model.gmf_user_embed.weight)
                # gmf_out(u * p) = u . (p * w) + b: fold the output weights into the product side once.
                self._gmf_product = model.gmf_product_embed.weight * model.gmf_out.weight[0][None, :]
                self._gmf_bias = float(model.gmf_out.bias[0])
        self.device = device

    @property
    def num_products(self) -> int:
        """Return the catalog size the model was trained on."""
        return self.config.num_products

    @property
    def num_customers(self) -> int:
        """Return the number of customers the model knows."""
        return self.config.num_customers

    def score(self, customer_idx: np.ndarray | Sequence[int], product_idx: np.ndarray | None = None) -> np.ndarray:
        """Return float32[customers, products]: the engagement estimate of each product for each customer.

        The estimate mixes the three channel predictions with the engagement weights;
        ``product_idx`` limits scoring to those products (columns in that order).
        """
        return self._run(customer_idx, product_idx, combine=True)

    def channel_scores(
        self, customer_idx: np.ndarray | Sequence[int], product_idx: np.ndarray | None = None
    ) -> np.ndarray:
        """Return float32[customers, channels, products]: each channel's predicted intensity."""
        return self._run(customer_idx, product_idx, combine=False)

    def _run(
        self, customer_idx: np.ndarray | Sequence[int], product_idx: np.ndarray | None, *, combine: bool
    ) -> np.ndarray:
        customers = self._indices(customer_idx, self.num_customers, "customer")
        product_term = self._product_term
        gmf_product = self._gmf_product if self._dot_branch else None
        if product_idx is not None:
            products = self._indices(product_idx, self.num_products, "product")
            product_term = product_term[products]
            if gmf_product is not None:
                gmf_product = gmf_product[products]
        n, width = product_term.shape
        channels = self._channel_term.shape[0]
        shape = (len(customers), n) if combine else (len(customers), channels, n)
        result = np.empty(shape, dtype=np.float32)
        chunk = max(1, CHUNK_BYTES // max(1, channels * n * width * 4))
        with torch.no_grad():
            for start in range(0, len(customers), chunk):
                batch = customers[start : start + chunk]
                # fc1 for every (customer, channel, product): customer and channel terms are small, add them first.
                user_channel = (self._user_embed[batch] @ self._w_user_t)[:, None, :] + self._channel_term  # [b, c, 64]
                hidden = (user_channel[:, :, None, :] + product_term).relu_()  # [b, channels, n, 64]
                hidden = torch.addmm(self._b2, hidden.view(-1, hidden.shape[-1]), self._w2_t).relu_()
                logits = (hidden @ self._w_out).view(len(batch), channels, n) + self._b_out
                if gmf_product is not None:
                    logits += (self._gmf_user[batch] @ gmf_product.t() + self._gmf_bias)[:, None, :]
                predictions = logits.sigmoid_()
                if combine:
                    predictions = torch.einsum("bcn,c->bn", predictions, self._channel_weights)
                result[start : start + len(batch)] = predictions.cpu().numpy()
        return result

    def _indices(self, values: np.ndarray | Sequence[int], bound: int, what: str) -> torch.Tensor:
        array = np.asarray(values, dtype=np.int64).reshape(-1)
        if len(array) and (array.min() < 0 or array.max() >= bound):
            raise IndexError(f"{what} index out of range [0, {bound}).")
        return torch.from_numpy(array).to(self.device)


def _snapshot(tensor: torch.Tensor) -> torch.Tensor:
    """Return a contiguous copy that later in-place updates of the model cannot reach."""
    return tensor.detach().clone(memory_format=torch.contiguous_format)

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

# Rows (customer x channel x product, 64 float32 each) of fc1's output per block: 8,192
# rows are 2 MiB, small enough to stay in cache between fc1 and fc2. One intermediate the
# size of the whole catalog (77 MB at 100,000 products) made scoring memory-bound: 70 ms
# per customer, against 17 ms in blocks (bench/serving.py, details "scorer").
BLOCK_ROWS = 8192
# On a GPU (validation during training) blocks are bounded by memory, not cache: 64 MiB.
ACCELERATOR_BLOCK_ROWS = 262_144


class CatalogScorer:
    """Score products for customers with a snapshot of a model's weights taken at construction.

    ``copy=False`` uses the model's customer embeddings as they are instead of copying
    them, for a model nothing updates any more (a loaded artifact, whose embeddings are
    mapped from the file: a copy would read all of them into memory).
    """

    def __init__(
        self, model: RecommenderNN, prior: np.ndarray, channel_weights: Sequence[float], *, copy: bool = True
    ) -> None:
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
            # Clones (unless copy=False): the scorer must not change when training goes on
            # updating the model in place.
            keep = _snapshot if copy else torch.Tensor.detach
            self._user_embed = keep(model.user_embed.weight)
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
                self._gmf_user = keep(model.gmf_user_embed.weight)
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

    def score_vectors(self, vectors: Sequence[torch.Tensor], product_idx: np.ndarray | None = None) -> np.ndarray:
        """Return float32[rows, products] as ``score`` does, for customer vectors the model has no row for.

        ``vectors`` are one [rows, embed_dim] tensor per customer table (``RecommenderNN.customer_tables``:
        the MLP's, then the dot branch's), e.g. a customer folded at request time
        (training.ml.customers.fold_products). Row i scores exactly as a customer whose
        table rows were ``vectors[..][i]`` would.
        """
        tables = 2 if self._dot_branch else 1
        if len(vectors) != tables:
            raise ValueError(f"need {tables} customer vector(s), one per customer table, got {len(vectors)}.")
        d = self.config.embed_dim
        rows = [torch.as_tensor(v, dtype=torch.float32).reshape(-1, d).to(self.device) for v in vectors]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("every customer table needs the same number of rows.")
        return self._run(None, product_idx, combine=True, vectors=rows)

    def _run(
        self,
        customer_idx: np.ndarray | Sequence[int] | None,
        product_idx: np.ndarray | None,
        *,
        combine: bool,
        vectors: list[torch.Tensor] | None = None,
    ) -> np.ndarray:
        if vectors is None:
            customers = self._indices(customer_idx, self.num_customers, "customer")
            user_embed, gmf_embed = self._user_embed, self._gmf_user if self._dot_branch else None
        else:  # rows of their own, indexed 0..n-1
            customers = torch.arange(len(vectors[0]), device=self.device)
            user_embed, gmf_embed = vectors[0], vectors[-1] if self._dot_branch else None
        product_term = self._product_term
        gmf_product = self._gmf_product if self._dot_branch else None
        if product_idx is not None:
            products = self._indices(product_idx, self.num_products, "product")
            product_term = product_term[products]
            if gmf_product is not None:
                gmf_product = gmf_product[products]
        n, width = product_term.shape
        channels = self._channel_term.shape[0]
        result = torch.empty((len(customers), channels, n) if not combine else (len(customers), n))
        if len(customers) == 0 or n == 0:
            return result.numpy()
        # A block is (customers x channels x products) rows of fc1's output: the whole
        # catalog for several customers when it is small, else a slice of it.
        per_block = max(1, (BLOCK_ROWS if self.device.type == "cpu" else ACCELERATOR_BLOCK_ROWS) // channels)
        block_products = min(n, per_block)
        block_customers = max(1, per_block // n)
        most = block_customers * channels * block_products
        # Allocated once per call and reused by every block.
        hidden1 = torch.empty(most * width, device=self.device)
        hidden2 = torch.empty(most * self._w2_t.shape[1], device=self.device)
        logits = torch.empty(most, device=self.device)
        with torch.inference_mode():
            for first in range(0, len(customers), block_customers):
                batch = customers[first : first + block_customers]
                b = len(batch)
                # fc1 for every (customer, channel, product): customer and channel terms are small, add them first.
                user = user_embed[batch] @ self._w_user_t
                user_channel = user[:, None, None, :] + self._channel_term[None, :, None, :]  # [b, channels, 1, 64]
                gmf_user = gmf_embed[batch] if gmf_product is not None else None
                for start in range(0, n, block_products):
                    stop = min(n, start + block_products)
                    rows = b * channels * (stop - start)
                    h1 = hidden1[: rows * width].view(b, channels, stop - start, width)
                    torch.add(user_channel, product_term[start:stop], out=h1).relu_()
                    h2 = hidden2[: rows * self._w2_t.shape[1]].view(rows, -1)
                    torch.addmm(self._b2, h1.view(rows, width), self._w2_t, out=h2).relu_()
                    block = torch.mv(h2, self._w_out, out=logits[:rows]).view(b, channels, stop - start)
                    block.add_(self._b_out)
                    if gmf_user is not None:
                        block.add_((gmf_user @ gmf_product[start:stop].t()).add_(self._gmf_bias)[:, None, :])
                    block.sigmoid_()
                    if combine:
                        block = torch.matmul(self._channel_weights, block)  # [b, stop - start]
                    result[first : first + b, ..., start:stop] = block
        return result.numpy()

    def _indices(self, values: np.ndarray | Sequence[int], bound: int, what: str) -> torch.Tensor:
        array = np.asarray(values, dtype=np.int64).reshape(-1)
        if len(array) and (array.min() < 0 or array.max() >= bound):
            raise IndexError(f"{what} index out of range [0, {bound}).")
        return torch.from_numpy(array).to(self.device)


def _snapshot(tensor: torch.Tensor) -> torch.Tensor:
    """Return a contiguous copy that later in-place updates of the model cannot reach."""
    return tensor.detach().clone(memory_format=torch.contiguous_format)

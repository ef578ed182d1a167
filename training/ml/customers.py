"""Customer vectors folded from the products a customer engaged with (RecommenderConfig.customer_vector).

A customer's vector is the (optionally recency-weighted) mean of the ``context_embed`` rows (and ``gmf_context_embed``
rows, with the dot branch) of their ``history_length`` most recent engaged products,
FISM-style. Training folds each example's customer from their training rows, leaving out
the product the example asks about (else a positive would find itself in its own
customer's vector and the model would learn to look it up); afterwards ``fold_customers``
writes every customer's fold into ``user_embed`` (and ``gmf_user_embed``), so a folded
model is an ordinary RecommenderNN to everything that scores with it.

numpy and torch only: no database.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.ml.data import Interactions
from training.ml.model import RecommenderNN

# Customers folded per block in fold_customers: [block, history_length, embed_dim] floats.
FOLD_BLOCK = 4096


@dataclass
class History:
    """Each customer's most recent engaged products, as CSR: most recent first within a customer."""

    indptr: np.ndarray  # int64[num_customers + 1]
    products: np.ndarray  # int64[n]

    @property
    def num_customers(self) -> int:
        return len(self.indptr) - 1


def customer_history(data: Interactions, length: int) -> History:
    """Return each customer's ``length`` most recent products of ``data`` (ties: the larger product first)."""
    if length <= 0:
        raise ValueError(f"length must be > 0, got {length}.")
    order = np.lexsort((-data.product_idx, -data.timestamp, data.customer_idx))
    customers = data.customer_idx[order]
    counts = np.bincount(customers, minlength=data.num_customers)
    starts = np.zeros(data.num_customers + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    rank = np.arange(len(order), dtype=np.int64) - starts[customers]
    keep = rank < length
    kept = np.minimum(counts, length)
    indptr = np.zeros(data.num_customers + 1, dtype=np.int64)
    np.cumsum(kept, out=indptr[1:])
    return History(indptr=indptr, products=np.ascontiguousarray(data.product_idx[order][keep]))


class HistoryTensors:
    """A History on a device, padded per request: ``padded(customers)`` -> products, mask [U, width]."""

    def __init__(self, history: History, device: torch.device | str = "cpu") -> None:
        self.indptr = torch.as_tensor(history.indptr, device=device)
        # One padding slot at the end, so an empty history still indexes something.
        self.products = torch.cat(
            [torch.as_tensor(history.products, device=device), torch.zeros(1, dtype=torch.int64, device=device)]
        )
        self.pad = len(history.products)
        self.device = torch.device(device)

    def padded(self, customers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return each customer's products [U, width] (newest first) and which slots hold one."""
        start = self.indptr[customers]
        count = self.indptr[customers + 1] - start
        width = max(int(count.max()) if len(customers) else 0, 1)
        offsets = torch.arange(width, device=self.device)
        mask = offsets[None, :] < count[:, None]
        positions = torch.where(mask, start[:, None] + offsets[None, :], self.pad)
        return self.products[positions], mask


def _slot_weights(model: RecommenderNN, mask: torch.Tensor) -> torch.Tensor:
    """Each history slot's weight: ``history_decay ** k`` for the k-th newest product, 0 for padding."""
    decay = model.config.history_decay
    weights = mask.to(model.fc1.weight.dtype)
    if decay < 1:
        weights = weights * decay ** torch.arange(mask.shape[1], device=mask.device, dtype=weights.dtype)[None, :]
    return weights


def _divide(sums: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``sums / total`` per row, and 0 for a row with no weight left (no product, or only the excluded one)."""
    empty = total <= 1e-6
    return torch.where(empty[:, None], torch.zeros_like(sums), sums / torch.where(empty, 1.0, total)[:, None])


def fold_vectors(model: RecommenderNN, products: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Return the folded vectors [U, d], one per context table, of padded histories [U, width].

    A customer with no product gets the zero vector (training's leave-one-out is fold_examples).
    """
    weights = _slot_weights(model, mask)
    total = weights.sum(dim=1)
    return [_divide(torch.einsum("uw,uwd->ud", weights, table(products)), total) for table in model.context_tables()]


def fold_examples(
    model: RecommenderNN, history: HistoryTensors, customers: torch.Tensor, products: torch.Tensor
) -> list[torch.Tensor]:
    """Return each example's customer vectors [B, d] folded without the example's own product.

    The histories are gathered once per distinct customer in the batch; the example's
    own product is then subtracted from its customer's sum when it is in the history.
    """
    distinct, inverse = torch.unique(customers, return_inverse=True)
    history_products, mask = history.padded(distinct)
    weights = _slot_weights(model, mask)
    total = weights.sum(dim=1)
    # The weight of the example's own product in its customer's history (0 if it is not there).
    own = ((history_products[inverse] == products[:, None]).to(weights.dtype) * weights[inverse]).sum(dim=1)
    vectors = []
    for table in model.context_tables():
        sums = torch.einsum("uw,uwd->ud", weights, table(history_products))
        vectors.append(_divide(sums[inverse] - own[:, None] * table(products), total[inverse] - own))
    return vectors


def fold_customers(
    model: RecommenderNN, history: History, *, offsets: Sequence[torch.Tensor] | None = None
) -> RecommenderNN:
    """Return a copy of ``model`` whose customer tables hold each customer's fold of ``history``.

    ``offsets`` (``customer_vector="items+id"``): the learnt per-customer offsets, added.
    The copy is in eval mode; ``model`` is not changed.
    """
    if not model.config.folds_items:
        raise ValueError("this model learns its customer vectors by id; there is nothing to fold.")
    if history.num_customers != model.config.num_customers:
        raise ValueError(f"history has {history.num_customers} customers, the model {model.config.num_customers}.")
    folded = copy.deepcopy(model).eval()
    device = folded.fc1.weight.device
    tensors = HistoryTensors(history, device)
    with torch.no_grad():
        for start in range(0, history.num_customers, FOLD_BLOCK):
            customers = torch.arange(start, min(start + FOLD_BLOCK, history.num_customers), device=device)
            products, mask = tensors.padded(customers)
            for i, (table, vector) in enumerate(zip(folded.customer_tables(), fold_vectors(folded, products, mask))):
                if offsets is not None:
                    vector = vector + offsets[i][customers].to(device)
                table.weight[customers] = vector
    return folded


def fold_products(model: RecommenderNN, products: Sequence[int]) -> list[torch.Tensor] | None:
    """Return one customer's vectors [1, d], one per customer table, folded from ``products`` (newest first).

    The fold the model's own customers got at training (the first ``history_length``
    products, weighted by recency as ``history_decay`` says), for a customer the model
    does not know or whose products changed since: serving ranks with it through
    ``CatalogScorer.score_vectors``. None when there is no product to fold from.
    """
    if not model.config.folds_items:
        raise ValueError("this model learns its customer vectors by id; there is nothing to fold.")
    chosen = np.asarray(products, dtype=np.int64)[: model.config.history_length]
    if not len(chosen):
        return None
    device = model.fc1.weight.device
    padded = torch.as_tensor(chosen, device=device)[None, :]
    with torch.no_grad():
        return fold_vectors(model, padded, torch.ones_like(padded, dtype=torch.bool))

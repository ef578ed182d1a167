"""RecommenderNN: the original design, layer for layer (DESIGN "RecommenderNN").

Inputs are known at serving time for every product, including ones the customer never
touched: the ``interaction`` input is the signal channel the model is asked about
(hover, dwell, click), not the observed event's type, and the ``+1`` scalar is the
product's dwell prior, not the pair's own dwell. Feeding the observed event instead
lets the model read the answer off its input (DESIGN: "the trap to avoid").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.ml.head import grid_head

# Channel ids 0, 1, 2: "how strong will this customer's <channel> signal be on this product".
CHANNELS = ("hover", "dwell", "click")

# Small embedding init: with default N(0, 1) the 97-wide fc1 input starts dominated by
# random embedding noise and the first epochs are spent shrinking it.
EMBEDDING_INIT_STD = 0.05

CUSTOMER_VECTORS = ("id", "items", "items+id")


@dataclass(frozen=True)
class RecommenderConfig:
    """Sizes and switches of RecommenderNN; stored in every artifact."""

    num_customers: int
    num_products: int
    num_interactions: int = len(CHANNELS)
    embed_dim: int = 32
    dropout: float = 0.0
    # NeuMF-style GMF branch whose logit is added to the MLP's (the original layers keep their shapes).
    dot_branch: bool = False
    # Where a customer's vector comes from (docs/model.md "The customer vector"):
    # "id": learnt per customer id (the original design); "items": folded from the products
    # the customer engaged with (a weighted mean of ``context_embed`` rows, FISM-style), so a
    # customer with 2 events has a vector as good as their products'; "items+id": the fold
    # plus a learnt per-customer offset. With "items", training writes every customer's
    # folded vector into ``user_embed`` (customers.fold_customers): serving reads it as ever.
    customer_vector: str = "id"
    # The fold reads each customer's most recent ``history_length`` engaged products, the
    # k-th newest weighted ``history_decay ** k`` (1: a plain mean).
    history_length: int = 100
    history_decay: float = 1.0
    # Fold from the product tables themselves (``product_embed``, ``gmf_product_embed``)
    # instead of separate context tables: half the product parameters, and products that
    # are engaged with together move towards each other from both sides.
    tied_context: bool = False

    def __post_init__(self) -> None:
        for name in ("num_customers", "num_products", "num_interactions", "embed_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}.")
        if self.customer_vector not in CUSTOMER_VECTORS:
            raise ValueError(f"customer_vector must be one of {', '.join(CUSTOMER_VECTORS)}, got {self.customer_vector!r}.")
        if isinstance(self.history_length, bool) or not isinstance(self.history_length, int) or self.history_length <= 0:
            raise ValueError(f"history_length must be a positive integer, got {self.history_length!r}.")
        if isinstance(self.history_decay, bool) or not isinstance(self.history_decay, (int, float)) or not (
            0 < self.history_decay <= 1
        ):
            raise ValueError(f"history_decay must be a number in (0, 1], got {self.history_decay!r}.")
        if not isinstance(self.tied_context, bool):
            raise ValueError(f"tied_context must be a bool, got {self.tied_context!r}.")  # noqa: TRY004
        if not isinstance(self.dot_branch, bool):
            # ValueError like every other bad option, so callers catch one exception type.
            raise ValueError(f"dot_branch must be a bool, got {self.dot_branch!r}.")  # noqa: TRY004

    @property
    def folds_items(self) -> bool:
        """True when the customer vector is (partly) folded from the customer's products."""
        return self.customer_vector != "id"

    @property
    def learns_ids(self) -> bool:
        """True when training learns a vector (or an offset) per customer id."""
        return self.customer_vector != "items"

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecommenderConfig:
        """Build a config from ``to_dict`` output; unknown or missing keys are an error."""
        return _from_dict(cls, data)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass, refusing unknown keys (a typo must not be silently dropped)."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} needs a dict, got {type(data).__name__}.")  # noqa: TRY004 (as above)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(map(repr, unknown))}.")
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{cls.__name__} is missing field(s) {', '.join(map(repr, missing))}.")
    return cls(**data)


class RecommenderNN(nn.Module):
    """Predict a customer's per-channel engagement with a product, in (0, 1)."""

    def __init__(self, config: RecommenderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.user_embed = nn.Embedding(config.num_customers, d)
        self.product_embed = nn.Embedding(config.num_products, d)
        self.interaction_embed = nn.Embedding(config.num_interactions, d)
        self.fc1 = nn.Linear(d * 3 + 1, 64)
        self.fc2 = nn.Linear(64, 32)
        self.out = nn.Linear(32, 1)
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p=config.dropout)
        if config.dot_branch:
            self.gmf_user_embed = nn.Embedding(config.num_customers, d)
            self.gmf_product_embed = nn.Embedding(config.num_products, d)
            self.gmf_out = nn.Linear(d, 1)
        if config.folds_items and not config.tied_context:
            # The products a customer engaged with, as seen from the customer's side.
            self.context_embed = nn.Embedding(config.num_products, d)
            if config.dot_branch:
                self.gmf_context_embed = nn.Embedding(config.num_products, d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise embeddings small and linear layers with torch's defaults."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=EMBEDDING_INIT_STD)
            elif isinstance(module, nn.Linear):
                module.reset_parameters()
        if self.config.folds_items:
            # The per-customer part is an offset on the fold ("items+id"), or unused until
            # the fold is written into it ("items"): it starts at 0 either way.
            for table in self.customer_tables():
                nn.init.zeros_(table.weight)

    def customer_tables(self) -> list[nn.Embedding]:
        """The per-customer embedding tables: ``user_embed`` (and ``gmf_user_embed``)."""
        return [self.user_embed, self.gmf_user_embed] if self.config.dot_branch else [self.user_embed]

    def context_tables(self) -> list[nn.Embedding]:
        """The tables a customer's vectors are folded from, in ``customer_tables`` order."""
        if not self.config.folds_items:
            return []
        if self.config.tied_context:
            return [self.product_embed, self.gmf_product_embed] if self.config.dot_branch else [self.product_embed]
        return [self.context_embed, self.gmf_context_embed] if self.config.dot_branch else [self.context_embed]

    def logits(
        self, customers: torch.Tensor, products: torch.Tensor, interactions: torch.Tensor, prior: torch.Tensor
    ) -> torch.Tensor:
        """Return the pre-sigmoid scores, shape [B] (training uses them for a stable BCE)."""
        gmf_user = self.gmf_user_embed(customers) if self.config.dot_branch else None
        return self.logits_for(self.user_embed(customers), gmf_user, products, interactions, prior)

    def logits_for(
        self,
        user: torch.Tensor,
        gmf_user: torch.Tensor | None,
        products: torch.Tensor,
        interactions: torch.Tensor,
        prior: torch.Tensor,
    ) -> torch.Tensor:
        """``logits`` with the customer vectors given ([B, d] each) rather than looked up by id."""
        x = torch.cat(
            [
                user,
                self.product_embed(products),
                self.interaction_embed(interactions),
                prior.to(self.fc1.weight.dtype)[:, None],
            ],
            dim=1,
        )
        logit = self._head(self.fc1(x))
        if self.config.dot_branch:
            logit = logit + self.gmf_out(gmf_user * self.gmf_product_embed(products)).squeeze(-1)
        return logit

    def _head(self, fc1_out: torch.Tensor) -> torch.Tensor:
        """The layers after fc1 (ReLU, fc2, ReLU, out; dropout when set), over the last dimension."""
        h = self.relu(fc1_out)
        if self.config.dropout > 0:
            h = self.dropout(h)
        h = self.relu(self.fc2(h))
        if self.config.dropout > 0:
            h = self.dropout(h)
        return self.out(h).squeeze(-1)

    def channel_logits_for(
        self, user: torch.Tensor, gmf_user: torch.Tensor | None, products: torch.Tensor, prior: torch.Tensor
    ) -> torch.Tensor:
        """Return every channel's pre-sigmoid score at once, shape [B, num_interactions].

        The same numbers as ``logits_for`` asked once per channel: fc1 is linear in its
        concatenated input, so the customer, product and prior columns are applied once
        per pair and only the channel's column (a constant per channel) per channel
        (CatalogScorer serves with the same split). Training runs on pairs this way: fc1
        costs a third of what three separate examples cost.
        """
        d = self.config.embed_dim
        w1 = self.fc1.weight  # [64, 3d + 1]: user | product | interaction | prior
        base = torch.addmm(
            prior.to(w1.dtype)[:, None] * w1[:, 3 * d][None, :], user, w1[:, :d].t()
        ) + self.product_embed(products) @ w1[:, d : 2 * d].t()  # [B, 64]
        channel = self.interaction_embed.weight @ w1[:, 2 * d : 3 * d].t() + self.fc1.bias  # [C, 64]
        logit = self._head(base[:, None, :] + channel[None, :, :])  # [B, C]
        if self.config.dot_branch:
            logit = logit + self.gmf_out(gmf_user * self.gmf_product_embed(products))
        return logit

    def shared_logits_for(
        self,
        user: torch.Tensor,
        gmf_user: torch.Tensor | None,
        interactions: torch.Tensor,
        products: torch.Tensor,
        prior: torch.Tensor,
    ) -> torch.Tensor:
        """Return the pre-sigmoid score of every product for every row, shape [B, N].

        Row b asks channel ``interactions[b]`` of customer vector ``user[b]`` about each of
        the N ``products`` (one list for all rows: the shared negatives of a sampled
        softmax). The same numbers as ``logits_for`` per (row, product), with fc1 split
        by its input columns as in ``channel_logits_for``.
        """
        d = self.config.embed_dim
        w1 = self.fc1.weight
        rows = user @ w1[:, :d].t() + self.interaction_embed(interactions) @ w1[:, 2 * d : 3 * d].t() + self.fc1.bias
        columns = self.product_embed(products) @ w1[:, d : 2 * d].t() + prior.to(w1.dtype)[:, None] * w1[:, 3 * d]
        logit = grid_head(self, rows, columns)  # [B, N]: _head(rows[:, None, :] + columns[None, :, :]), blockwise
        if self.config.dot_branch:
            logit = logit + (gmf_user * self.gmf_out.weight[0]) @ self.gmf_product_embed(products).t() + self.gmf_out.bias
        return logit

    def forward(
        self, customers: torch.Tensor, products: torch.Tensor, interactions: torch.Tensor, prior: torch.Tensor
    ) -> torch.Tensor:
        """Return the predicted channel intensity in (0, 1), shape [B]; no side effects."""
        return self.sigmoid(self.logits(customers, products, interactions, prior))

"""The bridge from Engagement rows to the arrays training.ml works on (STYLE 2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db.models import Q

from engagement.models import FOLD_WATERMARK, Engagement, EngagementWatermark, Product
from engagement.scoring import MAX_EXPONENT, EngagementWeights
from training.ml.data import Interactions, index_ids


@dataclass(frozen=True)
class TrainingData:
    """Every engaged pair as arrays, with the id maps that turn indices back into ids."""

    interactions: Interactions
    customer_ids: list[str]
    product_ids: list[str]
    as_of: datetime | None  # the newest event in the data
    weights: EngagementWeights
    # The fold's watermark when the data was read: every event up to this id is in it
    # (read first; a fold committing in between only adds events above it).
    folded_through: int = 0

    @property
    def channel_weights(self) -> tuple[float, float, float]:
        w = self.weights
        return (w.hover_weight, w.dwell_weight, w.click_weight)


def channel_targets(
    *, hover: np.ndarray, dwell: np.ndarray, clicks: np.ndarray, age_seconds: np.ndarray, weights: EngagementWeights
) -> np.ndarray:
    """Return each pair's saturated hover, dwell and click values (n, 3) as of ``age_seconds`` later.

    The same numbers as ``engagement.scoring.score_at`` before it mixes the three with
    the weights (a test holds them together): the model learns each channel, serving
    mixes its three predictions with the same weights.
    """
    decay = np.power(0.5, np.maximum(age_seconds, 0.0) / weights.half_life_seconds)
    out = np.empty((len(hover), 3), dtype=np.float32)
    for column, (sums, scale) in enumerate(
        ((hover, weights.hover_scale), (dwell, weights.dwell_scale), (clicks, weights.click_scale))
    ):
        out[:, column] = 1.0 - np.exp(-np.minimum(sums * decay / scale, MAX_EXPONENT))
    return out


RECENCY_ANCHORS = ("customer", "shop", "none")


def training_data_load(*, weights: EngagementWeights | None = None, recency: str = "customer") -> TrainingData:
    """Read every engaged pair in one query (and the active catalog's ids) into id maps and targets.

    ``recency`` says to which moment each pair's engagement is decayed (docs/model.md):
    - "customer" (default): the customer's own newest event. The model ranks products
      for one customer at a time, so what matters is how a pair compares with that
      customer's other pairs; a customer who was away for two months is not scaled
      towards 0 as a whole (on ml-100k that cost a fifth of full-ranking NDCG@10).
    - "shop": the newest event of all, as ``score_at`` would at that moment.
    - "none": each pair as of its own last event (the stored score).
    Never "now": the same rows always give the same targets, so a seed reproduces a run.
    """
    if recency not in RECENCY_ANCHORS:
        raise ValueError(f"recency must be one of {RECENCY_ANCHORS}, got {recency!r}.")
    weights = weights or EngagementWeights.from_settings()
    # A pair with no signal at all (an impression: 0 ms, no click) is not a positive: it
    # must not become a held-out item, count towards a customer's two, or be trained on.
    engaged = Q(hover_decayed__gt=0) | Q(dwell_decayed__gt=0) | Q(clicks_decayed__gt=0)
    watermark = EngagementWatermark.objects.filter(name=FOLD_WATERMARK).values_list("last_event_id", flat=True)
    folded_through = watermark.first() or 0
    # Customers flagged for click fraud (engagement.services.fraud) are not trained on:
    # their events are kept, but their engagement would teach the model the bot's target.
    rows = list(
        Engagement.objects.filter(engaged, customer__suspicion__isnull=True).order_by().values_list(
            "customer__external_id",
            "product__external_id",
            "hover_decayed",
            "dwell_decayed",
            "clicks_decayed",
            "dwell_ms_total",
            "last_event_at",
        )
    )
    if not rows:
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0, dtype=np.float64)
        interactions = Interactions(
            customer_idx=empty_i, product_idx=empty_i, targets=np.zeros((0, 3), dtype=np.float32),
            dwell_ms=empty_f, timestamp=empty_f, num_customers=0, num_products=0,
        )  # fmt: skip
        return TrainingData(interactions, [], [], None, weights, folded_through)
    customers, products, hover, dwell, clicks, dwell_ms, last_event_at = zip(*rows, strict=True)
    timestamp = np.fromiter((t.timestamp() for t in last_event_at), dtype=np.float64, count=len(rows))
    customer_idx, customer_ids = index_ids(customers)
    # The whole active catalog, not only engaged products: the model ranks (and the
    # evaluation's full ranking runs over) every product the shop could be shown, and
    # a product nobody has touched yet is learnt from the negatives it is drawn as.
    catalog = Product.objects.filter(active=True).values_list("external_id", flat=True)
    product_idx, product_ids = index_ids(products, universe=list(catalog))
    as_of = timestamp.max()
    if recency == "customer":
        anchor = np.full(len(customer_ids), -np.inf)
        np.maximum.at(anchor, customer_idx, timestamp)
        age = anchor[customer_idx] - timestamp
    else:
        age = (as_of - timestamp) if recency == "shop" else np.zeros_like(timestamp)
    targets = channel_targets(
        hover=np.asarray(hover, dtype=np.float64),
        dwell=np.asarray(dwell, dtype=np.float64),
        clicks=np.asarray(clicks, dtype=np.float64),
        age_seconds=age,
        weights=weights,
    )
    interactions = Interactions(
        customer_idx=customer_idx,
        product_idx=product_idx,
        targets=targets,
        dwell_ms=np.asarray(dwell_ms, dtype=np.float64),
        timestamp=timestamp,
        num_customers=len(customer_ids),
        num_products=len(product_ids),
    )
    return TrainingData(interactions, customer_ids, product_ids, max(last_event_at), weights, folded_through)

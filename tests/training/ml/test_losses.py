"""SampledSoftmax's "engaged with" mask: the dense table and the sorted keys agree with the rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training.ml import planted_interactions
from training.ml import losses
from training.ml.losses import SampledSoftmax


@pytest.mark.parametrize("dense", [True, False])
def test_the_seen_mask_is_true_exactly_where_the_customer_engaged(monkeypatch, dense):
    monkeypatch.setattr(losses, "DENSE_SEEN_CELLS", 1 << 26 if dense else 0)
    rows = planted_interactions(num_customers=50, num_products=40)
    softmax = SampledSoftmax(rows, count=8, exponent=0.75, channel_weights=(0.2, 0.3, 0.5), seed=0, device="cpu")
    assert (softmax.seen_dense is not None) is dense

    customers = torch.arange(rows.num_customers).repeat_interleave(2)
    products = torch.arange(rows.num_products)
    mask = softmax._seen(customers, products).numpy()

    truth = np.zeros((rows.num_customers, rows.num_products), dtype=bool)
    truth[rows.customer_idx, rows.product_idx] = True
    assert mask.shape == (len(customers), rows.num_products)
    assert (mask == truth[customers.numpy()]).all()
    assert 0 < mask.sum() < mask.size

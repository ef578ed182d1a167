"""The no-leak rule (DESIGN.md): a pair's score never reads that pair's own events.

The held-out pair of each customer is the one the evaluation asks about. If anything it
feeds the model at serving time (the dwell prior, above all) came from that pair's own
events, the model could read the answer off its input. Two data sets that differ only in
held-out pairs' signals must give the same features and the same scores for those pairs.
"""

from dataclasses import replace

import numpy as np
import pytest

from tests.training.ml import planted_interactions
from training.ml.data import leave_last_out, product_prior
from training.ml.loop import TrainConfig, train
from training.ml.model import RecommenderConfig
from training.ml.scoring import CatalogScorer

WEIGHTS = (0.2, 0.4, 0.4)


def _with_held_out_pairs_changed(data, split):
    """The same data, but each held-out pair dwelt 50x longer and maxed every signal."""
    held_out = {(int(c), int(p)) for c, p in zip(split.test_customers, split.test_products, strict=False)}
    rows = np.array([(int(c), int(p)) in held_out for c, p in zip(data.customer_idx, data.product_idx, strict=False)])
    assert rows.sum() == len(held_out) > 0
    dwell_ms = np.where(rows, data.dwell_ms * 50, data.dwell_ms)
    targets = np.where(rows[:, None], 1.0, data.targets).astype(np.float32)
    return replace(data, dwell_ms=dwell_ms, targets=targets)


def _fit(data):
    outer = leave_last_out(data)
    inner = leave_last_out(outer.train)
    prior = product_prior(inner.train)
    result = train(
        model_config=RecommenderConfig(num_customers=data.num_customers, num_products=data.num_products, embed_dim=8),
        train_config=TrainConfig(epochs=2, batch_size=256, seed=3, max_validation_customers=50),
        train=inner.train,
        validation=inner,
        prior=prior,
        channel_weights=WEIGHTS,
    )
    return outer, prior, CatalogScorer(result.model, prior, WEIGHTS)


def test_a_held_out_pairs_own_events_change_neither_its_features_nor_its_score():
    data = planted_interactions(num_customers=120, num_products=60, seed=5)
    split = leave_last_out(data)
    changed = _with_held_out_pairs_changed(data, split)

    outer_a, prior_a, scorer_a = _fit(data)
    outer_b, prior_b, scorer_b = _fit(changed)

    np.testing.assert_array_equal(outer_a.test_products, outer_b.test_products)
    np.testing.assert_array_equal(prior_a, prior_b)
    scores_a = scorer_a.score(outer_a.test_customers)
    scores_b = scorer_b.score(outer_b.test_customers)
    rows = np.arange(len(outer_a.test_customers))
    np.testing.assert_array_equal(scores_a[rows, outer_a.test_products], scores_b[rows, outer_b.test_products])


def test_the_leak_check_would_catch_a_prior_taken_from_all_events():
    data = planted_interactions(num_customers=120, num_products=60, seed=5)
    changed = _with_held_out_pairs_changed(data, leave_last_out(data))

    # The tempting mistake: the product's mean dwell over every event, held-out ones included.
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(product_prior(data), product_prior(changed))

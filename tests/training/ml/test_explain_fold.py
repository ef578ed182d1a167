"""Explanations for folded customers: removing a product and folding again is exact, and what is cited."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.ml.customers import History, customer_history, fold_customers
from training.ml.explain_fold import folded_scores, measure_fold_faithfulness, removal_supports
from training.ml.model import RecommenderConfig, RecommenderNN
from training.ml.scoring import CatalogScorer
from tests.training.ml.test_customers import _rows

WEIGHTS = (0.2, 0.4, 0.4)


@pytest.fixture
def model() -> RecommenderNN:
    torch.manual_seed(3)
    config = RecommenderConfig(
        num_customers=2, num_products=9, embed_dim=4, customer_vector="items", history_length=4, history_decay=0.8
    )
    model = RecommenderNN(config)
    with torch.no_grad():  # the customer-side tables start at zero; give the fold something to move
        for table in model.context_tables():
            table.weight.normal_()
    return model.eval()


def served_scores(model, history: History, prior, customer: int) -> np.ndarray:
    return CatalogScorer(fold_customers(model, history), prior, WEIGHTS).score([customer])[0]


def test_nothing_removed_is_the_served_score_and_a_removal_is_a_refold_without_it(model):
    # Customer 0 has 6 products; the fold's window holds the 4 newest (history_length).
    rows = _rows([0] * 6 + [1], [1, 2, 3, 4, 5, 6, 2], [1, 2, 3, 4, 5, 6, 1], num_customers=2, num_products=9)
    everything = customer_history(rows, length=100)
    newest_first = everything.products[everything.indptr[0] : everything.indptr[1]]
    prior = np.linspace(0, 1, 9, dtype=np.float32)
    items = np.array([0, 7, 8])

    scores = folded_scores(model, prior, WEIGHTS, newest_first, [np.array([1]), np.array([0, 5])], items)

    window = customer_history(rows, length=4)
    assert np.allclose(scores[0], served_scores(model, window, prior, 0)[items], atol=1e-6)
    # Without product 5 (position 1): product 2, the next-newest, moves into the window.
    without = customer_history(_rows([0] * 5, [1, 2, 3, 4, 6], [1, 2, 3, 4, 6], num_customers=2, num_products=9), 4)
    assert np.allclose(scores[1], served_scores(model, without, prior, 0)[items], atol=1e-6)
    # Removing the oldest product (outside the window) with the newest changes only what the newest did.
    without_newest = customer_history(_rows([0] * 5, [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], num_customers=2, num_products=9), 4)
    assert np.allclose(scores[2], served_scores(model, without_newest, prior, 0)[items], atol=1e-6)


def test_the_served_vector_anchors_the_refold(model):
    history = np.array([5, 4, 3])
    prior = np.zeros(9, dtype=np.float32)
    served = [np.full(4, 0.3, dtype=np.float32) for _ in model.customer_tables()]
    plain = folded_scores(model, prior, WEIGHTS, history, [np.array([0])], np.array([7]))
    anchored = folded_scores(model, prior, WEIGHTS, history, [np.array([0])], np.array([7]), served=served)
    user = torch.as_tensor(np.stack([served[0]]))
    gmf = torch.as_tensor(np.stack([served[1]])) if model.config.dot_branch else None
    with torch.no_grad():
        expected = torch.sigmoid(model.channel_logits_for(user, gmf, torch.tensor([7]), torch.zeros(1))) @ torch.tensor(WEIGHTS)
    assert anchored[0, 0] == pytest.approx(float(expected[0]), abs=1e-6)
    assert not np.allclose(plain, anchored)


def test_supports_are_the_largest_positive_drops_within_the_window(model):
    history = np.array([8, 6, 5, 4, 3, 2])  # positions 4 and 5 are outside the window of 4
    prior = np.zeros(9, dtype=np.float32)
    items = np.array([0, 1, 7])

    supports = removal_supports(model, prior, WEIGHTS, history, items, top=3)

    scores = folded_scores(model, prior, WEIGHTS, history, [np.array([p]) for p in range(4)], items)
    for column, (positions, drops) in enumerate(supports):
        expected = scores[0, column] - scores[1:, column]
        ranked = [p for p in np.argsort(-expected, kind="stable") if expected[p] > 0][:3]
        assert positions.tolist() == ranked
        assert np.allclose(drops, expected[ranked], atol=1e-6)
        assert all(p < 4 for p in positions)


def test_the_measurement_finds_random_citations_no_better_than_random(model):
    config = model.config
    rng = np.random.default_rng(0)
    customers, products = np.repeat(np.arange(2), 6), np.concatenate([rng.permutation(9)[:6] for _ in range(2)])
    rows = _rows(customers, products, np.arange(12), num_customers=2, num_products=9)
    history = customer_history(rows, length=100)
    served = fold_customers(model, customer_history(rows, length=config.history_length))
    prior = np.zeros(9, dtype=np.float32)

    cited = measure_fold_faithfulness(served, prior, WEIGHTS, history, customers=2, items_per_customer=2, min_engaged=6)
    worst = measure_fold_faithfulness(
        served, prior, WEIGHTS, history, customers=2, items_per_customer=2, min_engaged=6,
        explain=lambda customer, item, products: np.array([int(np.argmax(
            folded_scores(served, prior, WEIGHTS, products, [np.array([p]) for p in range(4)], np.array([item]))[1:, 0]
        ))]),  # the product whose removal RAISES the score most
    )  # fmt: skip

    assert cited.items > 0 and cited.cited_drop > cited.random_drop and cited.cited_wins == 1.0
    assert worst.cited_drop < worst.random_drop

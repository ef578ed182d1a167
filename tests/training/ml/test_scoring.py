"""CatalogScorer gives exactly what RecommenderNN.forward gives, mixed over channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.ml import scoring
from training.ml.model import CHANNELS, RecommenderConfig, RecommenderNN
from training.ml.scoring import CatalogScorer

WEIGHTS = (0.2, 0.4, 0.4)


def _model(*, dot_branch: bool = False, dropout: float = 0.0, customers: int = 30, products: int = 70) -> RecommenderNN:
    torch.manual_seed(3)
    model = RecommenderNN(
        RecommenderConfig(num_customers=customers, num_products=products, dot_branch=dot_branch, dropout=dropout)
    )
    # Trained-looking weights: the default init is too close to a constant to catch a wrong term.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model


def _forward_channels(model: RecommenderNN, prior: np.ndarray, customers: np.ndarray, products: np.ndarray):
    """Return (customers, channels, products) predictions from forward, one row per triple."""
    grid_c, grid_p = np.meshgrid(customers, products, indexing="ij")
    flat_c, flat_p = torch.from_numpy(grid_c.ravel()), torch.from_numpy(grid_p.ravel())
    prior_t = torch.from_numpy(prior)[flat_p]
    with torch.no_grad():
        per_channel = [
            model(flat_c, flat_p, torch.full_like(flat_c, channel), prior_t).numpy().reshape(grid_c.shape)
            for channel in range(len(CHANNELS))
        ]
    return np.stack(per_channel, axis=1)


@pytest.mark.parametrize("dot_branch", [False, True])
def test_it_equals_forward_mixed_with_the_engagement_weights(dot_branch):
    model = _model(dot_branch=dot_branch)
    prior = np.random.default_rng(0).standard_normal(70).astype(np.float32)
    customers = np.array([0, 7, 29, 7])

    scores = CatalogScorer(model, prior, WEIGHTS).score(customers)

    expected = np.einsum("bcn,c->bn", _forward_channels(model, prior, customers, np.arange(70)), WEIGHTS)
    assert scores.shape == (4, 70)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert scores.std() > 0.05


def test_it_scores_only_the_products_asked_for_in_their_order():
    model = _model(dot_branch=True)
    prior = np.linspace(-1, 1, 70, dtype=np.float32)
    scorer = CatalogScorer(model, prior, WEIGHTS)
    products = np.array([69, 3, 3, 40])

    subset = scorer.score([5, 6], products)

    np.testing.assert_allclose(subset, scorer.score([5, 6])[:, products], atol=1e-6)


def test_it_returns_each_channels_prediction():
    model = _model()
    prior = np.zeros(70, dtype=np.float32)
    scorer = CatalogScorer(model, prior, WEIGHTS)

    channels = scorer.channel_scores(np.array([1, 2]))

    assert channels.shape == (2, 3, 70)
    np.testing.assert_allclose(channels, _forward_channels(model, prior, np.array([1, 2]), np.arange(70)), atol=1e-5)
    np.testing.assert_allclose(scorer.score([1, 2]), np.einsum("bcn,c->bn", channels, WEIGHTS), atol=1e-6)


def test_it_gives_the_same_scores_in_small_chunks(monkeypatch):
    model = _model()
    prior = np.zeros(70, dtype=np.float32)
    scorer = CatalogScorer(model, prior, WEIGHTS)
    whole = scorer.score(np.arange(30))

    monkeypatch.setattr(scoring, "BLOCK_ROWS", 1)  # one customer and one product per block

    np.testing.assert_allclose(scorer.score(np.arange(30)), whole, atol=1e-6)


def test_it_keeps_the_weights_it_was_built_with():
    model = _model()
    prior = np.zeros(70, dtype=np.float32)
    scorer = CatalogScorer(model, prior, WEIGHTS)
    before = scorer.score([0, 1])

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)

    np.testing.assert_array_equal(scorer.score([0, 1]), before)


def test_it_puts_the_model_in_eval_mode_so_dropout_is_off():
    model = _model(dropout=0.5).train()

    scorer = CatalogScorer(model, np.zeros(70, dtype=np.float32), WEIGHTS)

    assert not model.training
    np.testing.assert_array_equal(scorer.score([3]), scorer.score([3]))


def test_it_refuses_unknown_customers_and_products():
    scorer = CatalogScorer(_model(), np.zeros(70, dtype=np.float32), WEIGHTS)

    with pytest.raises(IndexError, match="customer"):
        scorer.score([30])
    with pytest.raises(IndexError, match="product"):
        scorer.score([0], np.array([-1]))


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.5, 0.6, 0.1), (1.2, -0.1, -0.1)])
def test_it_refuses_channel_weights_that_are_not_a_mix(weights):
    with pytest.raises(ValueError, match="channel weights"):
        CatalogScorer(_model(), np.zeros(70, dtype=np.float32), weights)


def test_it_refuses_a_prior_of_the_wrong_length():
    with pytest.raises(ValueError, match="prior"):
        CatalogScorer(_model(), np.zeros(69, dtype=np.float32), WEIGHTS)


def test_it_reports_the_catalog_size():
    assert CatalogScorer(_model(), np.zeros(70, dtype=np.float32), WEIGHTS).num_products == 70


@pytest.mark.parametrize("dot_branch", [False, True])
@pytest.mark.parametrize("block_rows", [3 * 7, 3 * 70 * 4 + 5, 3 * 69])
def test_it_gives_the_same_scores_whatever_the_block_size(monkeypatch, dot_branch, block_rows):
    # 7 products a block (the catalog in ten slices), 4 customers' whole catalogs a block,
    # and 69 products a block (a last slice of one product).
    model = _model(dot_branch=dot_branch)
    prior = np.random.default_rng(1).standard_normal(70).astype(np.float32)
    scorer = CatalogScorer(model, prior, WEIGHTS)
    customers = np.array([0, 5, 29, 5, 11, 2])
    expected = _forward_channels(model, prior, customers, np.arange(70))

    monkeypatch.setattr(scoring, "BLOCK_ROWS", block_rows)

    np.testing.assert_allclose(scorer.channel_scores(customers), expected, atol=1e-5)
    np.testing.assert_allclose(scorer.score(customers), np.einsum("bcn,c->bn", expected, WEIGHTS), atol=1e-5)
    subset = scorer.score(customers, np.array([69, 3, 40]))
    np.testing.assert_allclose(subset, scorer.score(customers)[:, [69, 3, 40]], atol=1e-6)


def test_it_scores_a_catalog_of_many_blocks_like_forward():
    model = _model(customers=4, products=20_000)
    prior = np.random.default_rng(2).standard_normal(20_000).astype(np.float32)

    scores = CatalogScorer(model, prior, WEIGHTS).score([3])

    products = np.arange(0, 20_000, 97)  # forward on a sample of the catalog, across every block
    expected = np.einsum("bcn,c->bn", _forward_channels(model, prior, np.array([3]), products), WEIGHTS)
    np.testing.assert_allclose(scores[:, products], expected, atol=1e-5)


def test_it_returns_empty_scores_for_no_customers():
    scorer = CatalogScorer(_model(), np.zeros(70, dtype=np.float32), WEIGHTS)

    assert scorer.score([]).shape == (0, 70)
    assert scorer.channel_scores(np.array([], dtype=np.int64)).shape == (0, 3, 70)


def test_without_copy_it_uses_the_models_customer_embeddings_as_they_are():
    model = _model(dot_branch=True)
    prior = np.zeros(70, dtype=np.float32)

    shared = CatalogScorer(model, prior, WEIGHTS, copy=False)
    copied = CatalogScorer(model, prior, WEIGHTS)

    np.testing.assert_array_equal(shared.score([4, 9]), copied.score([4, 9]))
    with torch.no_grad():
        model.user_embed.weight[4] += 1.0
    assert not np.array_equal(shared.score([4]), copied.score([4]))  # it read the model's updated row
    np.testing.assert_array_equal(shared.score([9]), copied.score([9]))

"""The refit trains the chosen settings again on the training and validation rows, for the epochs kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training.ml import planted_interactions
from training.ml.data import leave_last_out, product_prior
from training.ml.loop import TrainConfig
from training.ml.model import RecommenderConfig
from training.ml.refit import refit

WEIGHTS = (0.2, 0.4, 0.4)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup():
    data = planted_interactions(num_customers=60, num_products=40, per_customer=(5, 8), seed=0)
    outer = leave_last_out(data)
    config = RecommenderConfig(
        num_customers=data.num_customers, num_products=data.num_products, embed_dim=8, customer_vector="items"
    )
    return outer, config


@pytest.mark.parametrize("epochs, expected", [(3, 3), (0, 1)])
def test_it_trains_the_epochs_it_is_given_without_validation(epochs, expected):
    outer, config = _setup()

    result, prior = refit(model_config=config, train_config=TrainConfig(epochs=20, batch_size=128, device="cpu"),
                          rows=outer.train, epochs=epochs, channel_weights=WEIGHTS)  # fmt: skip

    assert [h["epoch"] for h in result.history] == list(range(1, expected + 1))
    assert all(h["validation_ndcg@10"] is None for h in result.history)
    assert result.best_epoch == expected and not result.stopped_early


def test_it_carries_the_prior_of_its_rows_and_folds_customers_from_them():
    outer, config = _setup()
    inner = leave_last_out(outer.train)
    # Else the check below proves nothing.
    assert not np.allclose(product_prior(inner.train), product_prior(outer.train))

    result, prior = refit(model_config=config, train_config=TrainConfig(epochs=2, batch_size=128, device="cpu"),
                          rows=outer.train, epochs=2, channel_weights=WEIGHTS)  # fmt: skip

    np.testing.assert_array_equal(prior, product_prior(outer.train))
    # The served model's customers are folded from the rows it trained on.
    refolded = result.refold(outer.train)
    for mine, again in zip(result.model.customer_tables(), refolded.customer_tables(), strict=True):
        torch.testing.assert_close(mine.weight, again.weight)
    other = result.refold(inner.train)
    assert not torch.allclose(result.model.customer_tables()[0].weight, other.customer_tables()[0].weight)


def test_the_same_seed_refits_the_same_model():
    outer, config = _setup()
    cfg = TrainConfig(epochs=2, batch_size=128, device="cpu", seed=5)

    first, _ = refit(model_config=config, train_config=cfg, rows=outer.train, epochs=2, channel_weights=WEIGHTS)
    second, _ = refit(model_config=config, train_config=cfg, rows=outer.train, epochs=2, channel_weights=WEIGHTS)

    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)

"""Customer vectors folded from their products: the history, the fold, leave-one-out in training, refolding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training.ml import planted_interactions
from training.ml.customers import HistoryTensors, customer_history, fold_customers, fold_examples, fold_products
from training.ml.data import Interactions, Split, leave_last_out, product_prior
from training.ml.loop import TrainConfig, train
from training.ml.metrics import evaluate_split, popularity_scores
from training.ml.model import RecommenderConfig, RecommenderNN
from training.ml.scoring import CatalogScorer

WEIGHTS = (0.2, 0.4, 0.4)


def _rows(customers, products, timestamps, *, num_customers=3, num_products=6) -> Interactions:
    n = len(customers)
    return Interactions(
        customer_idx=np.asarray(customers),
        product_idx=np.asarray(products),
        targets=np.full((n, 3), 0.5, dtype=np.float32),
        dwell_ms=np.zeros(n),
        timestamp=np.asarray(timestamps, dtype=float),
        num_customers=num_customers,
        num_products=num_products,
    )


def test_history_keeps_each_customers_most_recent_products_newest_first():
    rows = _rows([0, 0, 0, 2, 0], [1, 4, 2, 5, 3], [10, 30, 20, 5, 30])

    history = customer_history(rows, length=3)

    assert history.indptr.tolist() == [0, 3, 3, 4]  # customer 1 has none
    # Customer 0: newest first; the tie at t=30 goes to the larger product; the oldest (1) is cut.
    assert history.products[:3].tolist() == [4, 3, 2]
    assert history.products[3:].tolist() == [5]


def test_folded_vector_is_the_mean_of_the_context_rows_and_zero_without_products():
    torch.manual_seed(0)
    model = RecommenderNN(RecommenderConfig(num_customers=3, num_products=6, embed_dim=4, customer_vector="items"))
    rows = _rows([0, 0, 2], [1, 4, 5], [1, 2, 3])

    folded = fold_customers(model, customer_history(rows, length=10))

    context = model.context_embed.weight.detach()
    assert torch.allclose(folded.user_embed.weight[0], (context[1] + context[4]) / 2)
    assert torch.allclose(folded.user_embed.weight[2], context[5])
    assert torch.equal(folded.user_embed.weight[1], torch.zeros(4))
    gmf_context = model.gmf_context_embed.weight.detach() if model.config.dot_branch else None
    if gmf_context is not None:
        assert torch.allclose(folded.gmf_user_embed.weight[0], (gmf_context[1] + gmf_context[4]) / 2)
    # The original model is untouched (its customer tables start at zero).
    assert torch.equal(model.user_embed.weight, torch.zeros_like(model.user_embed.weight))


def test_training_folds_each_example_without_its_own_product():
    torch.manual_seed(1)
    model = RecommenderNN(RecommenderConfig(num_customers=3, num_products=6, embed_dim=4, customer_vector="items"))
    history = HistoryTensors(customer_history(_rows([0, 0, 0], [1, 4, 2], [1, 2, 3]), length=10))
    context = model.context_embed.weight.detach()

    # Positive (0, 4): folded from 1 and 2 only; negative (0, 5): from all three.
    vectors = fold_examples(model, history, torch.tensor([0, 0]), torch.tensor([4, 5]))[0].detach()

    assert torch.allclose(vectors[0], (context[1] + context[2]) / 2, atol=1e-6)
    assert torch.allclose(vectors[1], (context[1] + context[4] + context[2]) / 3, atol=1e-6)


def _only(split: Split, keep: np.ndarray) -> Split:
    rows = np.isin(split.test_customers, keep)
    return Split(train=split.train, test_customers=split.test_customers[rows], test_products=split.test_products[rows])


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_a_folded_model_learns_planted_tastes_and_serves_customers_it_never_trained_on(loss):
    torch.set_num_threads(1)
    data = planted_interactions(num_customers=450, num_products=120, per_customer=(5, 10), seed=3)
    outer = leave_last_out(data)
    # Every third customer is unknown to training (no rows at all): a new visitor.
    newcomers = np.arange(0, data.num_customers, 3)
    known_rows = ~np.isin(outer.train.customer_idx, newcomers)
    inner = leave_last_out(outer.train.take(known_rows))
    prior = product_prior(inner.train)
    result = train(
        model_config=RecommenderConfig(
            num_customers=data.num_customers, num_products=data.num_products, embed_dim=16, customer_vector="items"
        ),
        train_config=TrainConfig(epochs=20, batch_size=192, lr=3e-3, loss=loss, negative_exponent=0.75, device="cpu"),
        train=inner.train,
        validation=inner,
        prior=prior,
        channel_weights=WEIGHTS,
    )
    popularity = popularity_scores(outer.train)

    def ndcg(score_fn, split):
        return evaluate_split(score_fn, split=split, sampled_negatives=0, seed=0)["full"]["ndcg@10"]

    def model_ndcg(model, split):
        return ndcg(CatalogScorer(model, prior, WEIGHTS).score, split)

    def popularity_ndcg(split):
        return ndcg(lambda c: np.broadcast_to(popularity, (len(c), len(popularity))), split)

    served = result.refold(outer.train)
    assert model_ndcg(served, outer) >= 1.5 * popularity_ndcg(outer)
    # The newcomers: folded from their rows, without a single training step on them.
    new = _only(outer, newcomers)
    assert len(new.test_customers) == len(newcomers)
    assert model_ndcg(served, new) >= 1.5 * popularity_ndcg(new)
    # Control: as trained (folded from training rows only) they have no products, so no vector.
    assert model_ndcg(result.model, new) < model_ndcg(served, new)


def test_history_decay_weights_the_newest_products_most():
    torch.manual_seed(2)
    config = RecommenderConfig(num_customers=3, num_products=6, embed_dim=4, customer_vector="items", history_decay=0.5)
    model = RecommenderNN(config)
    rows = _rows([0, 0, 0], [1, 4, 2], [1, 2, 3])  # newest first: 2, 4, 1

    folded = fold_customers(model, customer_history(rows, length=10))
    context = model.context_embed.weight.detach()
    assert torch.allclose(folded.user_embed.weight[0], (context[2] + 0.5 * context[4] + 0.25 * context[1]) / 1.75)

    # In training, leaving out the newest product leaves the other two with their own weights.
    history = HistoryTensors(customer_history(rows, length=10))
    vectors = fold_examples(model, history, torch.tensor([0]), torch.tensor([2]))[0].detach()
    assert torch.allclose(vectors[0], (0.5 * context[4] + 0.25 * context[1]) / 0.75, atol=1e-6)


def test_a_fold_at_request_time_scores_as_the_trained_fold_of_the_same_products():
    data = planted_interactions(num_customers=30, num_products=25, per_customer=(3, 6), seed=4)
    config = RecommenderConfig(num_customers=30, num_products=25, embed_dim=8, customer_vector="items", dot_branch=True)
    model = RecommenderNN(config).eval()
    history = customer_history(data, config.history_length)
    folded = fold_customers(model, history)
    scorer = CatalogScorer(folded, product_prior(data), (0.2, 0.4, 0.4))

    for customer in (0, 7, 29):
        products = history.products[history.indptr[customer] : history.indptr[customer + 1]]
        vectors = fold_products(model, products.tolist())
        np.testing.assert_allclose(scorer.score_vectors(vectors), scorer.score([customer]), rtol=1e-5, atol=1e-6)
    assert fold_products(model, []) is None
    other = fold_products(model, [3, 4])
    assert not np.allclose(scorer.score_vectors(other), scorer.score([0]))

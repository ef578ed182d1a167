"""Ranking metrics on hand-made cases: known ranks, ties, excluded training items, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.training.ml import planted_interactions
from training.ml.data import Interactions, items_by_customer, leave_last_out
from training.ml.metrics import evaluate_ranking, popularity_scores, sample_negatives


def _csr(items: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.cumsum([0] + [len(row) for row in items])
    return indptr.astype(np.int64), np.array([p for row in items for p in row], dtype=np.int64)


def _evaluate(scores: np.ndarray, test_products: list[int], train_items: list[list[int]], **kwargs: int) -> dict:
    """Evaluate fixed per-customer scores; customer i's row is scores[i]."""
    indptr, indices = _csr(train_items)
    return evaluate_ranking(
        lambda customers: scores[customers],
        test_customers=np.arange(len(test_products)),
        test_products=np.array(test_products),
        train_indptr=indptr,
        train_indices=indices,
        num_products=scores.shape[1],
        **kwargs,
    )


def test_it_scores_a_known_rank():
    # Product 0 is the target; products 1, 2, 3 score higher: rank 3 (0-based).
    scores = np.array([[0.5, 0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.0, 0.05, 0.01, 0.02, 0.03]])

    metrics = _evaluate(scores, [0], [[]])

    assert metrics["customers"] == 1
    assert metrics["full"]["hr@10"] == 1.0
    assert metrics["full"]["ndcg@10"] == pytest.approx(1 / math.log2(3 + 2))
    assert metrics["full"]["recall@20"] == 1.0


def test_it_misses_beyond_the_cutoff_but_recalls_within_twenty():
    scores = np.linspace(1.0, 0.0, 30)[None, :]  # product i has rank i

    at_twelve = _evaluate(scores, [12], [[]])
    at_twenty = _evaluate(scores, [20], [[]])

    assert at_twelve["full"] == {"hr@10": 0.0, "ndcg@10": 0.0, "recall@20": 1.0}
    assert at_twenty["full"]["recall@20"] == 0.0


def test_it_counts_ties_against_the_target():
    # A model that scores everything the same must not look perfect: the target ranks last.
    flat = np.full((1, 15), 0.5)
    tied_with_two = np.array([[0.5, 0.5, 0.5, 0.1, 0.1]])

    assert _evaluate(flat, [3], [[]])["full"]["hr@10"] == 0.0
    assert _evaluate(tied_with_two, [0], [[]])["full"]["ndcg@10"] == pytest.approx(1 / math.log2(2 + 2))


def test_it_leaves_the_customers_training_items_out_of_the_ranking():
    scores = np.array([[0.5, 0.9, 0.8, 0.7, 0.6, 0.1]])

    with_training = _evaluate(scores, [0], [[1, 2, 3]])
    without = _evaluate(scores, [0], [[]])

    assert with_training["full"]["ndcg@10"] == pytest.approx(1 / math.log2(1 + 2))  # only product 4 beats it
    assert without["full"]["ndcg@10"] == pytest.approx(1 / math.log2(4 + 2))


def test_it_ranks_a_nan_target_last():
    scores = np.array([[np.nan, 0.2, 0.1]])

    metrics = _evaluate(scores, [0], [[]])

    assert metrics["full"]["ndcg@10"] == pytest.approx(1 / math.log2(2 + 2))


def test_it_averages_over_customers():
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.9, 0.1]])

    metrics = _evaluate(scores, [0, 0], [[], []])

    assert metrics["full"]["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert metrics["customers"] == 2


def test_it_reports_zeros_for_no_test_customers():
    metrics = _evaluate(np.zeros((0, 4)), [], [])

    assert metrics == {
        "sampled": {"hr@10": 0.0, "ndcg@10": 0.0},
        "full": {"hr@10": 0.0, "ndcg@10": 0.0, "recall@20": 0.0},
        "customers": 0,
    }


def test_it_refuses_scores_of_the_wrong_shape():
    indptr, indices = _csr([[]])
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(
            lambda customers: np.zeros((len(customers), 3)),
            test_customers=np.array([0]),
            test_products=np.array([1]),
            train_indptr=indptr,
            train_indices=indices,
            num_products=5,
        )


def test_it_draws_sampled_negatives_only_from_unseen_products_other_than_the_target():
    train_items = [[0, 1, 2], [5], [], [0, 1, 2, 3, 4, 6, 7]]
    indptr, indices = _csr(train_items)
    targets = np.array([3, 6, 0, 5])

    negatives = sample_negatives(np.arange(4), targets, indptr, indices, 10, count=5, seed=0)

    assert negatives.shape == (4, 5)
    for customer, row in enumerate(negatives):
        drawn = row[row >= 0].tolist()
        assert len(set(drawn)) == len(drawn)
        assert not set(drawn) & (set(train_items[customer]) | {targets[customer]})
    # Customer 3 has 10 - 7 seen - 1 target = 2 products left: both, then padding.
    assert sorted(negatives[3][negatives[3] >= 0].tolist()) == [8, 9]
    assert (negatives[3] == -1).sum() == 3
    assert (negatives[:3] >= 0).all()


def test_it_draws_the_same_negatives_for_the_same_seed_and_spreads_them_evenly():
    indptr, indices = _csr([[1, 4]] * 2000)
    targets = np.full(2000, 7)

    first = sample_negatives(np.arange(2000), targets, indptr, indices, 10, count=3, seed=1)
    again = sample_negatives(np.arange(2000), targets, indptr, indices, 10, count=3, seed=1)
    other = sample_negatives(np.arange(2000), targets, indptr, indices, 10, count=3, seed=2)

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    counts = np.bincount(first.ravel(), minlength=10)
    assert counts[[1, 4, 7]].tolist() == [0, 0, 0]
    # 6000 draws over 7 products, about 857 each.
    assert np.all(np.abs(counts[[0, 2, 3, 5, 6, 8, 9]] - 6000 / 7) < 120)


def test_it_ranks_the_target_among_the_sampled_negatives():
    # 200 products, target 0 scores above exactly half of the others: among 99 random
    # unseen products it ranks around 50, and everything it beats outright ranks below.
    scores = np.concatenate([[0.5], np.linspace(1.0, 0.0, 199)])[None, :]
    best = np.concatenate([[2.0], np.linspace(1.0, 0.0, 199)])[None, :]

    middle = _evaluate(scores, [0], [[]], sampled_negatives=99)
    top = _evaluate(best, [0], [[]], sampled_negatives=99)

    assert middle["sampled"]["hr@10"] == 0.0
    assert top["sampled"] == {"hr@10": 1.0, "ndcg@10": 1.0}


def test_it_counts_ties_against_the_target_among_sampled_negatives():
    metrics = _evaluate(np.full((1, 200), 0.3), [5], [[]])

    assert metrics["sampled"] == {"hr@10": 0.0, "ndcg@10": 0.0}


def test_it_scores_popularity_by_distinct_customers():
    data = Interactions(
        customer_idx=[0, 1, 1, 2, 2],
        product_idx=[2, 2, 0, 2, 0],
        targets=np.zeros((5, 3)),
        dwell_ms=np.zeros(5),
        timestamp=np.arange(5.0),
        num_customers=3,
        num_products=4,
    )

    assert popularity_scores(data).tolist() == [2.0, 0.0, 3.0, 0.0]


def test_it_gives_popularity_the_same_protocol_as_any_model():
    data = planted_interactions(num_customers=100, num_products=80)
    split = leave_last_out(data)
    indptr, indices = items_by_customer(split.train)
    popularity = popularity_scores(split.train)

    metrics = evaluate_ranking(
        lambda customers: np.broadcast_to(popularity, (len(customers), len(popularity))),
        test_customers=split.test_customers,
        test_products=split.test_products,
        train_indptr=indptr,
        train_indices=indices,
        num_products=data.num_products,
        batch_size=7,
    )

    assert metrics["customers"] == 100
    assert 0 < metrics["full"]["hr@10"] <= metrics["full"]["recall@20"] <= 1
    assert metrics["full"]["hr@10"] <= metrics["sampled"]["hr@10"]

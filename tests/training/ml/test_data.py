"""Ids, the leave-last-out split, the product prior and negative sampling."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.ml import planted_interactions
from training.ml.data import (
    Interactions,
    index_ids,
    items_by_customer,
    leave_last_out,
    product_prior,
    sample_examples,
)


def _rows(
    rows: list[tuple[int, int, float]], *, num_customers: int, num_products: int, dwell_ms: list[float] | None = None
) -> Interactions:
    """Build interactions from (customer, product, timestamp) triples."""
    n = len(rows)
    customers, products, timestamps = (np.array(column) for column in zip(*rows, strict=True))
    return Interactions(
        customer_idx=customers,
        product_idx=products,
        targets=np.tile([0.5, 0.25, 1.0], (n, 1)),
        dwell_ms=np.array(dwell_ms if dwell_ms is not None else [1000.0] * n),
        timestamp=timestamps.astype(float),
        num_customers=num_customers,
        num_products=num_products,
    )


def test_it_gives_ids_contiguous_indices_in_sorted_order():
    indices, ids = index_ids(["p9", "p1", "p9", "p5"])

    assert ids == ["p1", "p5", "p9"]
    assert indices.tolist() == [2, 0, 2, 1]
    assert indices.dtype == np.int64


def test_it_indexes_into_the_whole_catalog_when_given_one():
    indices, ids = index_ids(["b", "d"], universe=["a", "b", "c"])

    assert ids == ["a", "b", "c", "d"]
    assert indices.tolist() == [1, 3]


def test_it_holds_out_each_customers_latest_row():
    data = _rows([(0, 0, 10), (0, 1, 30), (0, 2, 20), (1, 3, 5), (1, 0, 50)], num_customers=2, num_products=4)

    split = leave_last_out(data)

    assert split.test_customers.tolist() == [0, 1]
    assert split.test_products.tolist() == [1, 0]
    assert sorted(zip(split.train.customer_idx.tolist(), split.train.product_idx.tolist(), strict=True)) == [
        (0, 0),
        (0, 2),
        (1, 3),
    ]


def test_it_breaks_a_timestamp_tie_towards_the_larger_product():
    data = _rows([(0, 2, 30), (0, 3, 30), (0, 1, 30), (0, 0, 10)], num_customers=1, num_products=4)

    assert leave_last_out(data).test_products.tolist() == [3]


def test_it_keeps_customers_below_min_positives_in_training_only():
    data = _rows([(0, 0, 1), (1, 0, 1), (1, 1, 2), (2, 0, 1), (2, 1, 2), (2, 2, 3)], num_customers=3, num_products=3)

    default = leave_last_out(data)
    strict = leave_last_out(data, min_positives=3)

    assert default.test_customers.tolist() == [1, 2]
    assert len(default.train) == 4
    assert strict.test_customers.tolist() == [2]
    assert (strict.train.customer_idx == 0).sum() == 1
    assert (strict.train.customer_idx == 1).sum() == 2


def test_it_splits_a_large_dataset_without_losing_rows():
    data = planted_interactions(num_customers=2000, num_products=300, seed=3)

    split = leave_last_out(data)

    assert len(split.train) + len(split.test_customers) == len(data)
    assert len(np.unique(split.test_customers)) == len(split.test_customers)
    latest = np.full(data.num_customers, -np.inf)
    np.maximum.at(latest, split.train.customer_idx, split.train.timestamp)
    held_out_time = {
        (c, p): t
        for c, p, t in zip(data.customer_idx.tolist(), data.product_idx.tolist(), data.timestamp.tolist(), strict=True)
    }
    for customer, product in zip(split.test_customers.tolist(), split.test_products.tolist(), strict=True):
        assert held_out_time[customer, product] >= latest[customer]


def test_it_computes_the_prior_from_training_rows_only():
    # Customer 0's last row (product 3, a tab left open for hours) is held out; customer 1 has one row.
    data = _rows(
        [(0, 0, 1), (0, 1, 2), (0, 3, 9), (1, 2, 1)],
        num_customers=2,
        num_products=5,
        dwell_ms=[1000, 5000, 10_000_000, 20_000],
    )
    split = leave_last_out(data)
    assert split.test_products.tolist() == [3]

    prior = product_prior(split.train)

    seconds = np.log1p([1.0, 5.0, 20.0])
    assert prior.dtype == np.float32
    np.testing.assert_allclose(prior[:3], (seconds - seconds.mean()) / seconds.std(), rtol=1e-5)
    # Product 3's only row is the held-out one, product 4 has none: both are "average".
    assert prior[3:].tolist() == [0.0, 0.0]


def test_it_gives_products_without_training_rows_a_zero_prior():
    data = _rows([(0, 1, 1), (1, 1, 1), (1, 4, 2)], num_customers=2, num_products=6, dwell_ms=[500, 700, 90_000])

    prior = product_prior(data)

    assert prior[[0, 2, 3, 5]].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert prior[1] < 0 < prior[4]
    assert prior[[1, 4]].mean() == pytest.approx(0.0, abs=1e-6)


def test_it_gives_a_single_product_a_zero_prior():
    assert product_prior(_rows([(0, 0, 1)], num_customers=1, num_products=1)).tolist() == [0.0]


def test_it_lists_each_customers_products_as_csr():
    data = _rows([(2, 3, 1), (0, 1, 1), (2, 0, 1), (0, 2, 1)], num_customers=4, num_products=5)

    indptr, indices = items_by_customer(data)

    assert indptr.tolist() == [0, 2, 2, 4, 4]
    assert indices.tolist() == [1, 2, 0, 3]


def test_it_samples_the_right_number_of_examples_with_their_targets():
    data = planted_interactions(num_customers=40, num_products=60, seed=1)

    examples = sample_examples(data, negatives_per_positive=4, rng=np.random.default_rng(0))

    n = len(data)
    assert len(examples) == 3 * n * (1 + 4)
    positives = slice(0, 3 * n)
    np.testing.assert_array_equal(examples.targets[positives].reshape(n, 3), data.targets)
    np.testing.assert_array_equal(examples.interactions[positives].reshape(n, 3), np.tile([0, 1, 2], (n, 1)))
    np.testing.assert_array_equal(examples.customers[positives].reshape(n, 3)[:, 0], data.customer_idx)
    negatives = slice(3 * n, None)
    assert np.all(examples.targets[negatives] == 0)
    assert np.bincount(examples.interactions[negatives]).tolist() == [4 * n] * 3
    assert (
        np.bincount(examples.customers[negatives], minlength=40).tolist()
        == (12 * np.bincount(data.customer_idx, minlength=40)).tolist()
    )


def test_it_never_samples_a_product_the_customer_engaged_with_as_a_negative():
    # Dense: each customer touched about half the catalog, so collisions would be frequent.
    data = planted_interactions(num_customers=30, num_products=24, per_customer=(8, 16), seed=2)
    seen = set(zip(data.customer_idx.tolist(), data.product_idx.tolist(), strict=True))

    examples = sample_examples(data, negatives_per_positive=10, rng=np.random.default_rng(5))

    negatives = examples.targets == 0
    negatives[: 3 * len(data)] = False
    drawn = set(zip(examples.customers[negatives].tolist(), examples.products[negatives].tolist(), strict=True))
    assert drawn and not drawn & seen


def test_it_samples_negatives_uniformly_over_unseen_products():
    data = _rows([(0, 1, 1), (0, 3, 2), (0, 4, 3)], num_customers=1, num_products=6)

    examples = sample_examples(data, negatives_per_positive=2000, rng=np.random.default_rng(0))

    counts = np.bincount(examples.products[3 * 3 :: 3], minlength=6)
    assert counts[[1, 3, 4]].tolist() == [0, 0, 0]
    assert counts.sum() == 6000
    assert np.all(np.abs(counts[[0, 2, 5]] - 2000) < 200)


def test_it_draws_no_negatives_for_a_customer_who_saw_every_product():
    data = _rows([(0, 0, 1), (0, 1, 2), (1, 0, 1)], num_customers=2, num_products=2)

    examples = sample_examples(data, negatives_per_positive=3, rng=np.random.default_rng(0))

    negatives = slice(9, None)
    assert examples.customers[negatives].tolist() == [1] * 9
    assert examples.products[negatives].tolist() == [1] * 9


def test_it_samples_the_same_negatives_from_the_same_seed():
    data = planted_interactions(num_customers=20, num_products=50)

    first = sample_examples(data, negatives_per_positive=4, rng=np.random.default_rng(7))
    second = sample_examples(data, negatives_per_positive=4, rng=np.random.default_rng(7))
    third = sample_examples(data, negatives_per_positive=4, rng=np.random.default_rng(8))

    np.testing.assert_array_equal(first.products, second.products)
    assert not np.array_equal(first.products, third.products)


def test_it_refuses_rows_that_do_not_line_up():
    with pytest.raises(ValueError, match="one row each"):
        Interactions(
            customer_idx=[0, 1],
            product_idx=[0],
            targets=np.zeros((2, 3)),
            dwell_ms=[0, 0],
            timestamp=[0, 0],
            num_customers=2,
            num_products=1,
        )
    with pytest.raises(ValueError, match="product_idx"):
        _rows([(0, 5, 1)], num_customers=1, num_products=5)


def test_a_positive_floor_lifts_every_engaged_target_and_leaves_negatives_at_zero():
    data = planted_interactions(num_customers=20, num_products=50, seed=3)
    n = len(data)

    soft = sample_examples(data, negatives_per_positive=2, rng=np.random.default_rng(1))
    floored = sample_examples(data, negatives_per_positive=2, rng=np.random.default_rng(1), positive_floor=0.5)
    binary = sample_examples(data, negatives_per_positive=2, rng=np.random.default_rng(1), positive_floor=1.0)

    np.testing.assert_allclose(floored.targets[: 3 * n], 0.5 + 0.5 * soft.targets[: 3 * n], rtol=1e-6)
    assert np.all(binary.targets[: 3 * n] == 1.0)
    for examples in (floored, binary):
        np.testing.assert_array_equal(examples.products, soft.products)
        assert np.all(examples.targets[3 * n :] == 0.0)
    with pytest.raises(ValueError, match="positive_floor"):
        sample_examples(data, negatives_per_positive=2, rng=np.random.default_rng(1), positive_floor=1.5)


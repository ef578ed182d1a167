"""top_k: the one ranking rule (by score, ties to the lower index), also at the k-th place."""

import numpy as np
import pytest

from training.ml.topk import top_k


def by_sorting(row: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]


def test_it_agrees_with_a_full_sort_on_rows_full_of_ties():
    rng = np.random.default_rng(7)
    for _ in range(500):
        n = int(rng.integers(1, 15))
        rows = rng.integers(0, 4, size=(3, n)).astype(np.float32)  # few values: ties everywhere
        k = int(rng.integers(1, n + 1))
        assert top_k(rows, k).tolist() == [by_sorting(row, k) for row in rows]
        assert top_k(rows[0], k).tolist() == by_sorting(rows[0], k)


def test_ties_at_the_kth_place_go_to_the_lower_index():
    # argpartition alone may keep any of the tied 3.0s; the rule keeps indices 1 and 2.
    scores = np.array([1.0, 3.0, 3.0, 3.0, 0.0, 3.0] * 50)
    assert top_k(scores, 2).tolist() == [1, 2]


def test_masked_scores_rank_last_and_k_is_capped():
    scores = np.array([0.5, -np.inf, 2.0])
    assert top_k(scores, 10).tolist() == [2, 0, 1]
    assert top_k(scores, 0).shape == (0,)
    assert top_k(np.zeros((2, 3)), 0).shape == (2, 0)


@pytest.mark.parametrize("k", [1, 20])
def test_random_float_scores_match_a_full_sort(k):
    scores = np.random.default_rng(k).standard_normal((4, 1_000)).astype(np.float32)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    assert (top_k(scores, k) == expected).all()

"""The neighbour blend: co-engaged products, their scores, the blend and its choice on validation."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.ml import planted_interactions
from training.ml.artifact import ArtifactError, load_artifact, save_artifact
from training.ml.data import Interactions, leave_last_out
from training.ml.metrics import popularity_scores
from training.ml.model import RecommenderConfig, RecommenderNN
from training.ml.neighbours import (
    DECAYS,
    WEIGHTS,
    Blend,
    blend_choose,
    blended_score_fn,
    neighbours_build,
    standardised,
)


def _rows(pairs: list[tuple[int, int]], customers: int, products: int) -> Interactions:
    c, p = (np.array(v, dtype=np.int64) for v in zip(*pairs, strict=True))
    n = len(c)
    return Interactions(customer_idx=c, product_idx=p, targets=np.ones((n, 3), dtype=np.float32),
                        dwell_ms=np.zeros(n), timestamp=np.arange(n, dtype=np.float64),
                        num_customers=customers, num_products=products)  # fmt: skip


def test_similarity_is_shrunk_cosine_of_customer_sets_best_first_without_the_product_itself():
    # Products 0 and 1: three customers share them; 0 and 2: one; 3: nobody's with 0.
    rows = _rows([(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 3)], customers=4, products=4)

    n = neighbours_build(rows, per_product=2, shrink=1.0)

    assert n.indices[0].tolist() == [1, 2]  # 3 / (sqrt(3 * 3) + 1) = 0.75 before 1 / (sqrt(3) + 1)
    assert n.similarity[0, 0] == pytest.approx(3 / (3 + 1))
    assert n.similarity[0, 1] == pytest.approx(1 / (np.sqrt(3) + 1))
    assert n.indices[3].tolist() == [-1, -1] and n.similarity[3].tolist() == [0, 0]  # engaged alone
    assert (n.indices != np.arange(4)[:, None]).all()


def test_a_product_keeps_only_its_best_neighbours():
    rows = planted_interactions(num_customers=80, num_products=30, per_customer=(4, 8), seed=1)
    everything = neighbours_build(rows, per_product=30).matrix.toarray()
    kept = neighbours_build(rows, per_product=3)

    for product in range(30):
        best = np.sort(everything[product])[::-1][:3]
        assert np.allclose(np.sort(kept.similarity[product])[::-1], best)


def test_scores_sum_each_history_products_neighbours_decayed_by_recency():
    rows = planted_interactions(num_customers=50, num_products=20, per_customer=(3, 6), seed=2)
    n = neighbours_build(rows)
    similarity = n.matrix.toarray()

    scores = n.scores([[4, 7, 1], []], decay=0.5)

    assert scores.shape == (2, 20) and scores.dtype == np.float32
    assert np.allclose(scores[0], similarity[4] + 0.5 * similarity[7] + 0.25 * similarity[1], atol=1e-6)
    assert not scores[1].any()  # no history, no neighbour score


def test_the_blend_is_the_standardised_sum_and_a_row_with_no_neighbours_keeps_the_models_order():
    rows = planted_interactions(num_customers=50, num_products=20, per_customer=(3, 6), seed=3)
    blend = Blend(neighbours_build(rows), weight=0.5, decay=1.0)
    model = np.random.default_rng(0).random((2, 20)).astype(np.float32)

    blended = blend.apply(model, [[3, 9], []])

    expected = standardised(model[:1]) + 0.5 * standardised(blend.neighbours.scores([[3, 9]], 1.0))
    assert np.allclose(blended[0], expected[0], atol=1e-6)
    assert (np.argsort(-blended[1], kind="stable") == np.argsort(-model[1], kind="stable")).all()
    z = standardised(model)
    assert np.allclose(z.mean(axis=1), 0, atol=1e-6) and np.allclose(z.std(axis=1), 1, atol=1e-5)
    assert not standardised(np.ones((1, 5))).any()  # a constant row: 0, not NaN


def _planted_split():
    rows = planted_interactions(num_customers=200, num_products=60, per_customer=(5, 10), seed=4)
    return leave_last_out(leave_last_out(rows).train)


def test_the_choice_keeps_the_model_alone_when_the_model_already_ranks_perfectly():
    inner = _planted_split()
    answer = np.zeros(inner.train.num_customers, dtype=np.int64)
    answer[inner.test_customers] = inner.test_products

    def oracle(customers):  # the held-out product far above everything else
        scores = np.zeros((len(customers), inner.train.num_products), dtype=np.float32)
        scores[np.arange(len(customers)), answer[customers]] = 1e3
        return scores

    chosen, trials = blend_choose(oracle, inner, sampled_negatives=20, seed=0, max_customers=2000)

    assert chosen is None
    assert len(trials) == 1 + (len(WEIGHTS) - 1) * len(DECAYS) and trials[0].weight == 0


def test_the_choice_blends_neighbours_in_when_the_model_knows_only_popularity():
    inner = _planted_split()
    popularity = popularity_scores(inner.train).astype(np.float32)

    def popular(customers):
        return np.broadcast_to(popularity, (len(customers), len(popularity))).copy()

    chosen, trials = blend_choose(popular, inner, sampled_negatives=20, seed=0, max_customers=50)

    assert chosen is not None and chosen["weight"] > 0
    best = max(t.validation_ndcg for t in trials)
    assert best > trials[0].validation_ndcg  # measured better than the model alone, on validation
    # and the chosen blend, applied as serving applies it, gives that figure's ranking
    fn = blended_score_fn(popular, Blend(neighbours_build(inner.train), **chosen), inner.train)
    assert fn(inner.test_customers[:3]).shape == (3, inner.train.num_products)


def _artifact(tmp_path, blend):
    config = RecommenderConfig(num_customers=3, num_products=20, embed_dim=4)
    path = tmp_path / "m.pt"
    sha = save_artifact(path, model=RecommenderNN(config), config=config, prior=np.zeros(20, dtype=np.float32),
                        customer_ids=["a", "b", "c"], product_ids=[f"p{i}" for i in range(20)],
                        channel_weights=(0.2, 0.4, 0.4), metrics={}, blend=blend)  # fmt: skip
    return path, sha


def test_an_artifact_keeps_its_blend_and_one_without_serves_the_model_alone(tmp_path):
    rows = planted_interactions(num_customers=40, num_products=20, per_customer=(3, 6), seed=5)
    blend = Blend(neighbours_build(rows), weight=0.25, decay=0.5)

    loaded = load_artifact(*_artifact(tmp_path, blend)[:1], sha256=_artifact(tmp_path, blend)[1])

    assert (loaded.blend.weight, loaded.blend.decay) == (0.25, 0.5)
    assert (loaded.blend.neighbours.indices == blend.neighbours.indices).all()
    assert np.array_equal(loaded.blend.neighbours.similarity, blend.neighbours.similarity)
    path, sha = _artifact(tmp_path, None)
    assert load_artifact(path, sha256=sha).blend is None


def test_an_artifact_whose_blend_names_a_product_out_of_range_is_refused(tmp_path):
    rows = planted_interactions(num_customers=40, num_products=20, per_customer=(3, 6), seed=5)
    neighbours = neighbours_build(rows)
    neighbours.indices[0, 0] = 20
    path, sha = _artifact(tmp_path, Blend(neighbours, weight=0.25, decay=0.5))

    with pytest.raises(ArtifactError, match="does not have"):
        load_artifact(path, sha256=sha)

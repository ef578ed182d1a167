"""The training loop learns planted tastes, repeats itself under a seed, stops early and on request."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.training.ml import planted_interactions
from training.ml.data import (
    Interactions,
    Split,
    leave_last_out,
    product_prior,
)
from training.ml.loop import (
    Progress,
    TrainConfig,
    TrainingCancelled,
    TrainResult,
    train,
)
from training.ml.metrics import evaluate_split, popularity_scores
from training.ml.model import RecommenderConfig
from training.ml.scoring import CatalogScorer

WEIGHTS = (0.2, 0.4, 0.4)
# Small data gives few steps per epoch; a smaller batch and a larger step get the MLP past
# its first plateau (where it only knows popularity) within a few epochs.
PLANTED_TRAINING = TrainConfig(epochs=15, batch_size=256, lr=3e-3, patience=3, seed=42, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Train these tests on one thread."""
    # Batches this small gain nothing from two threads, and when another torch process shares
    # the 2 cores, OpenMP's waits at every step made two threads ~20x slower (70 s vs 4 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclasses.dataclass
class PlantedRun:
    outer: Split
    prior: np.ndarray
    result: TrainResult


@pytest.fixture(scope="module")
def planted_run() -> PlantedRun:
    """Train once on the planted data, the way the retrain task does: outer split for the test, inner for stopping."""
    data = planted_interactions()
    outer = leave_last_out(data)
    inner = leave_last_out(outer.train)
    prior = product_prior(outer.train)
    result = train(
        model_config=RecommenderConfig(num_customers=data.num_customers, num_products=data.num_products),
        train_config=PLANTED_TRAINING,
        train=inner.train,
        validation=inner,
        prior=prior,
        channel_weights=WEIGHTS,
    )
    return PlantedRun(outer=outer, prior=prior, result=result)


def _full_ranking(split: Split, score_fn) -> dict:
    return evaluate_split(score_fn, split=split, sampled_negatives=99, seed=0)


def _tiny(seed: int = 0) -> tuple[Interactions, Split, np.ndarray]:
    data = planted_interactions(num_customers=60, num_products=40, per_customer=(5, 8), seed=seed)
    inner = leave_last_out(data)
    return inner.train, inner, product_prior(inner.train)


def _run(
    train_config: TrainConfig, *, validation: bool = True, on_progress=None, seed: int = 0, deadline=None
) -> TrainResult:
    rows, split, prior = _tiny(seed)
    return train(
        model_config=RecommenderConfig(num_customers=rows.num_customers, num_products=rows.num_products, embed_dim=8),
        train_config=train_config,
        train=rows,
        validation=split if validation else None,
        prior=prior,
        channel_weights=WEIGHTS,
        on_progress=on_progress,
        deadline=deadline,
    )


def test_it_beats_popularity_by_a_wide_margin_on_planted_tastes(planted_run):
    popularity = popularity_scores(planted_run.outer.train)
    scorer = CatalogScorer(planted_run.result.model, planted_run.prior, WEIGHTS)

    model = _full_ranking(planted_run.outer, scorer.score)
    baseline = _full_ranking(planted_run.outer, lambda c: np.broadcast_to(popularity, (len(c), len(popularity))))

    assert model["customers"] == baseline["customers"] == 300
    assert model["full"]["hr@10"] >= 1.5 * baseline["full"]["hr@10"]
    assert model["full"]["hr@10"] - baseline["full"]["hr@10"] >= 0.12
    assert model["full"]["ndcg@10"] >= 1.5 * baseline["full"]["ndcg@10"]
    assert model["sampled"]["hr@10"] > baseline["sampled"]["hr@10"]


def test_it_lowers_the_loss_over_the_epochs(planted_run):
    losses = [epoch["loss"] for epoch in planted_run.result.history]

    assert losses[-1] < 0.85 * losses[0]
    assert min(losses[1:]) < losses[0]


def test_it_returns_the_best_epochs_model_on_the_cpu_in_eval_mode(planted_run):
    result = planted_run.result
    history = result.history
    best = max(history, key=lambda epoch: epoch["validation_ndcg@10"])

    assert result.best_epoch == best["epoch"]
    assert not result.model.training
    assert all(p.device.type == "cpu" for p in result.model.parameters())
    assert result.device == "cpu"
    assert result.examples_per_second > 0
    assert [epoch["epoch"] for epoch in history] == list(range(1, len(history) + 1))
    assert set(history[0]) == {"epoch", "loss", "validation_ndcg@10", "seconds"}


def test_it_gives_the_same_history_and_weights_for_the_same_seed():
    config = TrainConfig(epochs=3, batch_size=64, seed=5, device="cpu")

    first, second = _run(config), _run(config)
    other = _run(dataclasses.replace(config, seed=6))

    def without_time(history):
        return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]

    assert without_time(first.history) == without_time(second.history)
    first_state, second_state = first.model.state_dict(), second.model.state_dict()
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[name], second_state[name]) for name in first_state)
    assert not torch.equal(first_state["user_embed.weight"], other.model.state_dict()["user_embed.weight"])


def test_it_stops_after_patience_epochs_without_improvement():
    # A step this small leaves the ranking unchanged, so no epoch after the first improves it.
    result = _run(TrainConfig(epochs=10, lr=1e-12, patience=2, batch_size=128, device="cpu"))

    assert len(result.history) == 3
    assert result.best_epoch == 1
    assert result.stopped_early


def test_it_keeps_the_best_epochs_weights_not_the_last():
    rows, split, prior = _tiny()
    result = train(
        model_config=RecommenderConfig(num_customers=rows.num_customers, num_products=rows.num_products, embed_dim=8),
        train_config=TrainConfig(epochs=10, lr=1e-12, patience=2, batch_size=128, device="cpu"),
        train=rows,
        validation=split,
        prior=prior,
        channel_weights=WEIGHTS,
    )

    ndcg = _full_ranking(split, CatalogScorer(result.model, prior, WEIGHTS).score)["full"]["ndcg@10"]
    assert ndcg == pytest.approx(result.history[0]["validation_ndcg@10"])


def test_it_runs_every_epoch_and_keeps_the_last_without_validation():
    result = _run(TrainConfig(epochs=3, batch_size=128, patience=1, device="cpu"), validation=False)

    assert [epoch["validation_ndcg@10"] for epoch in result.history] == [None, None, None]
    assert result.best_epoch == 3
    assert not result.stopped_early


def test_it_reports_progress_after_every_step():
    seen: list[Progress] = []

    result = _run(TrainConfig(epochs=2, batch_size=256, device="cpu"), on_progress=seen.append)

    steps = seen[0].steps
    assert len(seen) == 2 * steps
    assert [(p.epoch, p.step) for p in seen] == [(e, s) for e in (1, 2) for s in range(1, steps + 1)]
    assert all(p.epochs == 2 and p.loss > 0 and p.eta_seconds >= 0 for p in seen)
    assert seen[0].validation_ndcg is None
    assert seen[-1].validation_ndcg == result.history[0]["validation_ndcg@10"]
    assert seen[steps - 1].loss == pytest.approx(result.history[0]["loss"])
    assert seen[-1].eta_seconds < seen[0].eta_seconds
    # Early stopping's state: nothing validated in epoch 1; in epoch 2, epoch 1 is the best so far.
    assert (seen[0].best_epoch, seen[-1].best_epoch) == (0, 1) and seen[-1].patience == 3


def test_it_lets_a_cancellation_from_the_progress_callback_through():
    calls = []

    def cancel_at_third_step(progress: Progress) -> None:
        calls.append(progress)
        if progress.step == 3:
            raise TrainingCancelled("admin pressed cancel")

    with pytest.raises(TrainingCancelled, match="admin pressed cancel"):
        _run(TrainConfig(epochs=5, batch_size=64, device="cpu"), on_progress=cancel_at_third_step)
    assert len(calls) == 3


def test_it_refuses_data_that_does_not_match_the_model_config():
    rows, split, prior = _tiny()
    with pytest.raises(ValueError, match="customers"):
        train(
            model_config=RecommenderConfig(num_customers=rows.num_customers + 1, num_products=rows.num_products),
            train_config=TrainConfig(epochs=1, device="cpu"),
            train=rows,
            validation=split,
            prior=prior,
            channel_weights=WEIGHTS,
        )


def test_it_round_trips_the_train_config_and_refuses_unknown_keys():
    config = TrainConfig(epochs=3, lr=0.01, device="cpu")

    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict({"epochs": 4}) == TrainConfig(epochs=4)
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(device="tpu")


def test_an_embedding_l2_keeps_the_embeddings_smaller():
    config = TrainConfig(epochs=3, batch_size=64, seed=5, device="cpu")

    plain = _run(config).model
    shrunk = _run(dataclasses.replace(config, embedding_l2=0.1)).model

    for name in ("user_embed", "product_embed"):
        assert getattr(shrunk, name).weight.norm() < 0.8 * getattr(plain, name).weight.norm()
    with pytest.raises(ValueError, match="embedding_l2"):
        TrainConfig(embedding_l2=-1.0)
    with pytest.raises(ValueError, match="positive_floor"):
        TrainConfig(positive_floor=1.5)


def test_it_starts_no_epoch_past_its_deadline_and_keeps_the_best_so_far():
    result = _run(TrainConfig(epochs=6, batch_size=64, seed=5, device="cpu"), deadline=0.0)  # long past

    assert len(result.history) == 1 and result.stopped_early and result.best_epoch == 1

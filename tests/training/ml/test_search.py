"""The settings search: which candidates, the time budget, and which one it keeps."""

from __future__ import annotations

import pytest

from training.ml.loop import TrainResult
from training.ml.search import VARIATIONS, candidates, search

RESOLVED = {"lr": 3e-3, "embedding_l2": 1e-3, "embed_dim": 32, "loss": "softmax", "negative_exponent": 0.75}


def test_candidates_start_with_the_base_and_vary_around_the_resolved_values():
    tried = candidates({"epochs": 5}, RESOLVED)

    assert tried[0] == {"epochs": 5}
    assert {"epochs": 5, "lr": 1.5e-3} in tried and {"epochs": 5, "lr": 6e-3} in tried
    assert {"epochs": 5, "embedding_l2": pytest.approx(1e-2)} in tried
    doubled = next(t for t in tried if "embed_dim" in t)
    assert doubled == {"epochs": 5, "embed_dim": 64} and isinstance(doubled["embed_dim"], int)
    assert {"epochs": 5, "loss": "bce"} in tried and {"epochs": 5, "negative_exponent": 0.0} in tried
    assert len(tried) == 1 + len(VARIATIONS)


def test_a_variation_that_changes_nothing_is_left_out():
    tried = candidates({}, RESOLVED | {"loss": "bce", "negative_exponent": 0.0})

    assert {"loss": "bce"} not in tried and {"negative_exponent": 0.0} not in tried
    assert len(tried) == 1 + len(VARIATIONS) - 2


def _result(score: float) -> TrainResult:
    return TrainResult(model=None, history=[{"epoch": 1, "loss": 1.0, "validation_ndcg@10": score, "seconds": 1}],
                       best_epoch=1)  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_it_keeps_the_best_on_validation_and_the_earlier_on_a_tie():
    scores = {"a": 0.1, "b": 0.3, "c": 0.3, "d": 0.2}
    found = search(lambda o, deadline: _result(scores[o["name"]]), [{"name": n} for n in "abcd"], budget_seconds=100)

    assert found.chosen == {"name": "b"}
    assert found.best.history[0]["validation_ndcg@10"] == 0.3
    assert [t.options["name"] for t in found.trials] == list("abcd") and not found.skipped


def test_it_stops_before_a_trial_that_would_overrun_the_budget_but_always_runs_the_base():
    clock = FakeClock()

    deadlines = []

    def fit(options, deadline):
        deadlines.append(deadline)
        clock.now += 40  # every trial takes 40 s
        return _result(options["score"])

    found = search(fit, [{"score": s} for s in (0.1, 0.5, 0.9, 0.95)], budget_seconds=100, clock=clock)

    # 40 s spent + 40 s (slowest) <= 100: the second runs; 80 + 40 > 100: the rest are skipped.
    assert [t.options["score"] for t in found.trials] == [0.1, 0.5]
    assert found.skipped == [{"score": 0.9}, {"score": 0.95}]
    assert found.chosen == {"score": 0.5} and found.seconds == 80
    # The base runs whole; a variation stops its epochs at the budget's end.
    assert deadlines == [None, 100]

    alone = search(fit, [{"score": 0.2}, {"score": 0.3}], budget_seconds=0, clock=clock)
    assert [t.options for t in alone.trials] == [{"score": 0.2}] and alone.chosen == {"score": 0.2}

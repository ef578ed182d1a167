"""The promotion gate: beat popularity, and don't fall behind the serving model."""

import pytest

from training.services import gate_decide


def metrics(ndcg: float) -> dict:
    return {"full": {"ndcg@10": ndcg, "hr@10": 0.0, "recall@20": 0.0}, "sampled": {"hr@10": 0.0, "ndcg@10": 0.0}}


def test_it_promotes_a_first_model_that_beats_popularity():
    decision = gate_decide(candidate=metrics(0.20), popularity=metrics(0.10), champion=None, tolerance=0.01)

    assert decision.promote
    assert "beats popularity" in decision.reason


@pytest.mark.parametrize("candidate", [0.10, 0.05])
def test_it_rejects_a_model_that_does_not_beat_popularity(candidate):
    decision = gate_decide(candidate=metrics(candidate), popularity=metrics(0.10), champion=None, tolerance=0.01)

    assert not decision.promote
    assert "does not beat popularity" in decision.reason


def test_it_rejects_a_model_more_than_the_tolerance_below_the_promoted_one():
    decision = gate_decide(candidate=metrics(0.28), popularity=metrics(0.10), champion=metrics(0.30), tolerance=0.01)

    assert not decision.promote
    assert "below the promoted model's 0.3000" in decision.reason


@pytest.mark.parametrize("candidate", [0.295, 0.30, 0.35])
def test_it_promotes_a_model_within_the_tolerance_of_the_promoted_one_or_better(candidate):
    decision = gate_decide(
        candidate=metrics(candidate), popularity=metrics(0.10), champion=metrics(0.30), tolerance=0.01
    )

    assert decision.promote


def test_it_checks_popularity_even_when_the_promoted_model_is_worse():
    decision = gate_decide(candidate=metrics(0.09), popularity=metrics(0.10), champion=metrics(0.05), tolerance=0.01)

    assert not decision.promote

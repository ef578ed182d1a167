"""Training options have bounds, and a run whose loss diverges fails saying so (issue 17, row 6).

Seen: ``embed_dim: 8192`` took a worker from 0.6 to 2.1 GB with a 40-minute epoch, a
seed past 2**64 was accepted and then crashed torch, and ``lr: 1e30`` ended in an
IntegrityError writing NaN into the run's progress.
"""

import math

import pytest

from tests.training.ml import planted_interactions
from training.ml.data import product_prior
from training.ml.loop import TrainConfig, TrainingDiverged, train
from training.ml.model import RecommenderConfig
from training.ml.search import candidates
from training.models import ModelVersion, TrainingRun
from training.services import TrainingOptionsInvalid, training_options_validate, training_run_execute
from training.services.options import BOUNDS
from training.services.run_state import finite_or_null

RUNS = "/api/v1/training-runs/"

# Each just past its bound: (option, value).
PAST_A_BOUND = [
    ("embed_dim", 8192),
    ("embed_dim", 257),
    ("epochs", 201),
    ("batch_size", 65_537),
    ("lr", 1e30),
    ("lr", 1.5),
    ("lr", 1e-9),
    ("weight_decay", 2.0),
    ("embedding_l2", 1e6),
    ("negatives_per_positive", 51),
    ("patience", 201),
    ("seed", 2**32),
    ("seed", 10**30),
    ("max_validation_customers", 20_001),
    ("history_length", 1_001),
    ("softmax_negatives", 4097),
    ("negative_exponent", 2.5),
    ("positive_floor", 1.5),
    ("history_decay", 0.001),
]


@pytest.fixture
def sent(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr("training.queue.retrain_send", lambda run_id, task_id: calls.append(run_id))
    return calls


@pytest.mark.parametrize("name, value", PAST_A_BOUND)
def test_an_option_past_its_bound_gets_a_400_naming_it_and_starts_nothing(admin_client, sent, name, value):
    response = admin_client.post(RUNS, {"options": {name: value}}, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()["options"]) == [name]
    assert not TrainingRun.objects.exists() and sent == []


@pytest.mark.parametrize("name, value", PAST_A_BOUND)
def test_the_service_refuses_an_option_past_its_bound_too_for_the_train_command(db, name, value):
    with pytest.raises(TrainingOptionsInvalid, match=f"^{name} must be"):
        training_options_validate({name: value})


def test_every_bound_itself_is_accepted(admin_client, sent, django_capture_on_commit_callbacks):
    at_bounds = {name: high for name, (_, high) in BOUNDS.items()}

    assert training_options_validate(at_bounds) == at_bounds
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(RUNS, {"options": at_bounds}, format="json")
    assert response.status_code == 201, response.content


def test_the_schema_states_each_numeric_options_bounds(admin_client):
    schema = admin_client.get("/api/schema/", {"format": "json"}).json()
    options = schema["components"]["schemas"]["TrainingOptions"]["properties"]

    for name, (low, high) in BOUNDS.items():
        assert (options[name]["minimum"], options[name]["maximum"]) == (low, high), name


def test_the_search_does_not_double_an_embedding_size_past_its_cap():
    base = {"embed_dim": 200}
    resolved = {"embed_dim": 200, "lr": 3e-3, "embedding_l2": 1e-3, "loss": "bce", "negative_exponent": 0.0}

    tried = candidates(base, resolved, bounds=BOUNDS)

    assert max(options["embed_dim"] for options in tried) == 256


def test_a_loss_that_becomes_nan_stops_training_with_training_diverged():
    data = planted_interactions()
    reported = []

    with pytest.raises(TrainingDiverged, match="The loss diverged") as raised:
        train(
            model_config=RecommenderConfig(num_customers=data.num_customers, num_products=data.num_products, embed_dim=8),
            train_config=TrainConfig(epochs=3, batch_size=256, lr=1e30, seed=1, device="cpu"),
            train=data, validation=None, prior=product_prior(data), channel_weights=(0.2, 0.4, 0.4),
            on_progress=reported.append,
        )  # fmt: skip

    assert not math.isfinite(raised.value.loss)
    assert all(math.isfinite(progress.loss) for progress in reported)  # NaN was never reported


def test_without_a_progress_callback_a_diverged_epoch_still_raises():
    data = planted_interactions()

    with pytest.raises(TrainingDiverged):
        train(
            model_config=RecommenderConfig(num_customers=data.num_customers, num_products=data.num_products, embed_dim=8),
            train_config=TrainConfig(epochs=2, batch_size=256, lr=1e30, seed=1, device="cpu"),
            train=data, validation=None, prior=product_prior(data), channel_weights=(0.2, 0.4, 0.4),
        )  # fmt: skip


def test_a_run_whose_loss_diverges_ends_failed_saying_the_loss_diverged(small_shop):
    # Made as a run from before the bounds were (or one whose options came from elsewhere):
    # the API no longer takes lr 1e30, so the row is written directly.
    run = TrainingRun.objects.create(
        triggered_by="test", options={"lr": 1e30, "epochs": 2, "max_validation_customers": 100, "refit": False}
    )

    run = training_run_execute(run_id=run.pk, worker="test")

    assert run.status == TrainingRun.Status.FAILED
    assert run.error.startswith("TrainingDiverged: The loss diverged (nan) at epoch 1"), run.error
    assert "lr 1e+30" in run.error
    assert not ModelVersion.objects.exists()


def test_numbers_no_json_column_takes_are_written_as_null():
    value = {"loss": float("nan"), "eta": float("inf"), "history": [{"loss": -float("inf"), "epoch": 1}], "ok": 0.5}

    assert finite_or_null(value) == {"loss": None, "eta": None, "history": [{"loss": None, "epoch": 1}], "ok": 0.5}

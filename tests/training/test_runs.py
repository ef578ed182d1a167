"""Training runs through their services: single flight, the gate, cancel, failure, the sweeper."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from engagement.models import Engagement, EngagementWatermark
from tests.training.conftest import seed_small_shop
from training.artifacts import model_version_load
from training.models import ModelPromotion, ModelVersion, TrainingRun
from training.services import (
    TrainingOptionsInvalid,
    model_version_promoted,
    training_run_cancel,
    training_run_execute,
    training_run_start,
    training_runs_sweep,
)
from training.tasks import scheduled_retrain

FAST = {"epochs": 6, "max_validation_customers": 200}


def run_now(options=None, **kwargs) -> TrainingRun:
    run, created = training_run_start(triggered_by="test", options={**FAST, **(options or {})}, enqueue=False)
    assert created
    return training_run_execute(run_id=run.pk, worker="test", **kwargs)


def test_it_trains_evaluates_and_promotes_a_first_model(small_shop):
    run = run_now()

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    version = run.model_version
    assert version.status == ModelVersion.Status.PROMOTED and model_version_promoted() == version
    for name in ("model", "popularity"):
        assert set(run.metrics[name]["full"]) == {"hr@10", "ndcg@10", "recall@20"}
        assert set(run.metrics[name]["sampled"]) == {"hr@10", "ndcg@10"}
    assert run.metrics["model"]["full"]["ndcg@10"] > run.metrics["popularity"]["full"]["ndcg@10"]
    assert run.metrics["gate"]["promote"] is True
    assert version.metrics["model"] == run.metrics["model"]
    assert 1 <= len(run.history) <= FAST["epochs"] and {"epoch", "loss"} <= set(run.history[0])
    assert run.started_at <= run.finished_at and run.worker == "test"
    assert len(version.sha256) == 64 and version.customer_ids and version.product_ids
    assert ModelPromotion.objects.get().actor == f"training-run:{run.pk}"


def test_it_compares_a_new_model_with_the_promoted_one_on_the_same_split(small_shop, settings):
    first = run_now()
    # A tolerance no model can meet: it must beat the promoted one by a whole point.
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "PROMOTION_TOLERANCE": -1.0}

    second = run_now({"seed": 1})

    assert second.status == TrainingRun.Status.REJECTED
    assert "below the promoted model's" in second.error
    assert second.metrics["champion"]["version"] == first.model_version.pk
    assert second.model_version.status == ModelVersion.Status.REJECTED
    assert model_version_promoted() == first.model_version  # the old model keeps serving


def test_it_rejects_a_run_with_too_little_data_to_evaluate(db):
    run = run_now()

    assert run.status == TrainingRun.Status.REJECTED
    assert "Not enough data" in run.error
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_a_second_trigger_gets_the_run_already_in_flight():
    first, created = training_run_start(triggered_by="click 1", enqueue=False)
    second, created_again = training_run_start(triggered_by="click 2", enqueue=False)

    assert created and not created_again
    assert second.pk == first.pk
    assert TrainingRun.objects.count() == 1


@pytest.mark.django_db
def test_the_database_allows_one_run_in_flight():
    TrainingRun.objects.create(triggered_by="a", status=TrainingRun.Status.RUNNING)
    TrainingRun.objects.create(triggered_by="b", status=TrainingRun.Status.SUCCEEDED)
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(triggered_by="c", status=TrainingRun.Status.QUEUED)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options",
    [
        {"epochs": "3"}, {"epochs": True}, {"nope": 1}, {"lr": -1.0}, {"dot_branch": 1}, {"epochs": 0},
        {"search": "yes"}, {"loss": "hinge"}, {"customer_vector": "both"}, {"history_decay": 0.0},
    ],
)
def test_it_refuses_unknown_or_ill_typed_options(options):
    with pytest.raises(TrainingOptionsInvalid):
        training_run_start(triggered_by="test", options=options, enqueue=False)
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_it_cancels_a_queued_run_at_once():
    run, _ = training_run_start(triggered_by="test", enqueue=False)

    run = training_run_cancel(run_id=run.pk)

    assert run.status == TrainingRun.Status.CANCELLED and run.finished_at is not None
    assert training_run_execute(run_id=run.pk).status == TrainingRun.Status.CANCELLED  # a late task does nothing


def test_it_stops_a_running_run_when_cancelled(small_shop):
    run, _ = training_run_start(triggered_by="test", options={**FAST, "epochs": 50, "patience": 50}, enqueue=False)

    def cancel_in_epoch_two(progress):
        if progress.epoch == 2 and progress.step == 1:
            training_run_cancel(run_id=run.pk)

    run = training_run_execute(run_id=run.pk, worker="test", echo=cancel_in_epoch_two)

    assert run.status == TrainingRun.Status.CANCELLED
    assert not ModelVersion.objects.exists()
    assert training_run_start(triggered_by="next", enqueue=False)[1]  # the slot is free again


def test_it_records_a_crash_and_frees_the_slot(small_shop, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr("training.services.pipeline.train", broken)

    run = run_now()

    assert run.status == TrainingRun.Status.FAILED
    assert "RuntimeError: CUDA out of memory (simulated)" in run.error
    assert training_run_start(triggered_by="next", enqueue=False)[1]


@pytest.mark.django_db
def test_the_sweeper_fails_a_running_run_without_a_heartbeat_and_spares_a_live_one(settings):
    now = timezone.now()
    stale_after = settings.RECSITE_TRAINING["STALE_SECONDS"]
    dead = TrainingRun.objects.create(
        triggered_by="dead", status=TrainingRun.Status.RUNNING, worker="w1:123",
        started_at=now - timedelta(minutes=10), heartbeat_at=now - timedelta(seconds=stale_after + 1),
    )  # fmt: skip

    assert training_runs_sweep(now=now) == 1

    dead.refresh_from_db()
    assert dead.status == TrainingRun.Status.FAILED and "w1:123" in dead.error
    live = TrainingRun.objects.create(
        triggered_by="live", status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now
    )
    assert training_runs_sweep(now=now + timedelta(seconds=stale_after - 1)) == 0
    live.refresh_from_db()
    assert live.status == TrainingRun.Status.RUNNING


@pytest.mark.django_db
def test_the_sweeper_fails_a_run_no_worker_picked_up(settings):
    run, _ = training_run_start(triggered_by="test", enqueue=False)
    later = run.created_at + timedelta(seconds=settings.RECSITE_TRAINING["QUEUED_TIMEOUT_SECONDS"] + 1)

    assert training_runs_sweep(now=run.created_at) == 0
    assert training_runs_sweep(now=later) == 1

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "No worker picked it up" in run.error


@pytest.mark.django_db
def test_a_task_for_a_run_someone_else_claimed_does_nothing():
    run = TrainingRun.objects.create(triggered_by="a", status=TrainingRun.Status.RUNNING, worker="first")

    assert training_run_execute(run_id=run.pk, worker="second").worker == "first"


def test_it_folds_events_the_periodic_fold_has_not_reached_before_training(db):
    seed_small_shop()
    Engagement.objects.all().delete()  # as if beat had not folded yet
    EngagementWatermark.objects.all().delete()

    run = run_now()

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.metrics["data"]["pairs"] == Engagement.objects.count() > 0
    assert run.progress == {"phase": "finished"}


@pytest.mark.usefixtures("transactional_db")
def test_the_schedule_starts_a_run_or_leaves_the_one_in_flight(monkeypatch):
    sent = []
    monkeypatch.setattr("training.queue.retrain_send", lambda run_id, task_id: sent.append(run_id))

    first = scheduled_retrain.run()
    second = scheduled_retrain.run()

    assert first == second and sent == [first]
    assert TrainingRun.objects.get().triggered_by == "schedule"


def test_a_cancel_that_arrives_while_the_model_is_verified_stops_its_promotion(small_shop, monkeypatch):
    from training.services import pipeline as runs

    real_verify = runs.model_version_verify

    def verify_then_cancel(version):
        real_verify(version)
        training_run_cancel(run_id=version.training_run_id)

    monkeypatch.setattr(runs, "model_version_verify", verify_then_cancel)

    run = run_now()

    assert run.status == TrainingRun.Status.CANCELLED
    assert run.model_version.status == ModelVersion.Status.CANDIDATE and model_version_promoted() is None


def test_the_promoted_model_is_compared_with_its_customers_folded_from_the_same_rows(small_shop):
    # The saved model folds each customer from every row, this split's test items among
    # them; compared as saved it would look better than it is. Refolded from the split's
    # training rows, the same model trained again on the same data scores exactly the same.
    first = run_now()
    # As if stored before runs were fingerprinted: the same data trains again (else it is "unchanged").
    version = first.model_version
    del version.config["fingerprint"]
    version.save(update_fields=["config"])
    second = run_now()

    assert second.metrics["champion"]["version"] == first.model_version.pk
    assert second.metrics["champion"]["full"] == second.metrics["model"]["full"]
    assert second.metrics["champion"]["sampled"] == second.metrics["model"]["sampled"]
    assert second.status == TrainingRun.Status.SUCCEEDED, second.error


def test_the_served_model_is_refit_on_the_validation_rows_too_for_the_epochs_early_stopping_kept(small_shop, settings):
    # The small shop's validation rows are few against its training rows: refit whatever they add.
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "REFIT_MIN_SHARE": 0.0}
    refit_run = run_now()
    stopped_run = run_now({"refit": False, "seed": 1})

    refit = refit_run.metrics["training"]["refit"]
    assert refit["epochs"] == refit_run.metrics["training"]["best_epoch"] >= 1
    # Every pair but the test items: the inner training rows and the validation items.
    assert refit["rows"] == refit_run.metrics["data"]["pairs"] - refit_run.metrics["data"]["test_customers"]
    assert len(refit_run.history) == refit_run.metrics["training"]["epochs_run"]  # the chart shows early stopping
    assert refit_run.model_version.config["train"]["refit"] is True
    assert stopped_run.metrics["training"]["refit"] is None
    assert stopped_run.model_version.config["train"]["refit"] is False


def test_the_refit_is_skipped_where_the_validation_rows_add_too_little(small_shop, settings):
    # A shop whose customers have dozens of rows each: one more row a customer is not
    # worth training again (REFIT_MIN_SHARE); the early-stopped model is served.
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "REFIT_MIN_SHARE": 10.0}
    run = run_now()

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    refit = run.metrics["training"]["refit"]
    assert set(refit) == {"skipped"} and "RECSITE_TRAINING_REFIT_MIN_SHARE" in refit["skipped"]
    assert run.model_version.config["train"]["refit"] is True  # asked for, and declined by the rule


def test_a_run_chooses_its_neighbour_blend_on_validation_and_serves_what_it_chose(small_shop):
    run = run_now()
    off = run_now({"neighbours": False, "seed": 1})

    blend = run.metrics["blend"]
    assert [(t["weight"], t["decay"]) for t in blend["tried"]][0] == (0.0, 0.5)  # the model alone first
    assert len(blend["tried"]) == 7 and blend["seconds"] >= 0
    best = max(blend["tried"], key=lambda t: t["validation_ndcg"])
    loaded = model_version_load(run.model_version)
    if blend["chosen"] is None:
        assert best["weight"] == 0 and loaded.blend is None
    else:
        assert blend["chosen"] == {"weight": best["weight"], "decay": best["decay"]}
        assert (loaded.blend.weight, loaded.blend.decay) == (best["weight"], best["decay"])
        assert loaded.blend.neighbours.num_products == len(run.model_version.product_ids)
    assert off.metrics["blend"] is None and model_version_load(off.model_version).blend is None

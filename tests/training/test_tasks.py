"""The retrain task in a real Celery worker: the API starts it, a killed worker is swept.

These tests commit rows (``transactional_db``): the worker is another process.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from celery.result import AsyncResult
from django.conf import settings as django_settings

from engagement.demo import demo_taste_categories
from engagement.models import Product
from recsite.celery import app
from tests.celery_worker import start_worker, stop_process, worker_env
from tests.training.conftest import seed_small_shop
from training.models import ModelVersion, TrainingRun
from training.services import training_run_start, training_runs_sweep
from training.tasks import retrain

TASK_TIMEOUT_SECONDS = 240


@pytest.mark.usefixtures("transactional_db", "celery_worker_process")
def test_a_retrain_started_over_the_api_ends_promoted_and_recommendations_follow_the_planted_taste(
    admin_client, shop_client, settings
):
    # The worker reads artifacts from the configured directory, and so must the API here.
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "MODEL_DIR": django_settings.VAR_DIR / "models"}
    seed_small_shop()

    started = admin_client.post("/api/v1/training-runs/", {}, format="json")  # the defaults
    assert started.status_code == 201, started.content
    run_id = started.json()["id"]
    AsyncResult(started.json()["task_id"], app=app).get(timeout=TASK_TIMEOUT_SECONDS)

    run = admin_client.get(f"/api/v1/training-runs/{run_id}/").json()
    assert run["status"] == "succeeded", (run["error"], run["metrics"])
    assert run["history"] and run["metrics"]["model"]["full"]["ndcg@10"] > run["metrics"]["popularity"]["full"]["ndcg@10"]
    assert ModelVersion.objects.get(pk=run["model_version"]).status == ModelVersion.Status.PROMOTED

    category = dict(Product.objects.values_list("external_id", "category"))
    shares = []
    for customer in [f"demo-c{i:05d}" for i in range(40)]:
        body = shop_client.get(f"/api/v1/recommendations/{customer}/").json()
        assert body["strategy"] == "model" and body["model_version"] == run["model_version"]
        assert len(body["items"]) == 10
        taste = demo_taste_categories(customer)
        shares.append(sum(category[item["product"]] in taste for item in body["items"]) / 10)
    # Planted: ~80% of each customer's events fall in 2 of the 10 categories, so a
    # taste-blind list (popular, random) has about 2 of 10 there; the model has most.
    assert sum(shares) / len(shares) >= 0.6, shares


def _wait_for(condition, *, what: str, timeout: float, log_path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out waiting for {what}. Worker log:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.1)  # polling the database for another process's write


@pytest.mark.usefixtures("transactional_db")
def test_a_run_whose_worker_is_killed_is_swept_as_failed_and_frees_the_slot(settings, tmp_path):
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "STALE_SECONDS": 2.0, "HEARTBEAT_SECONDS": 0.5}
    seed_small_shop()
    queue = "training-kill-test"
    app.control.purge()
    log_path = tmp_path / "worker.log"
    # Prefork, as in production: the pool child runs the task and is the one killed.
    worker = start_worker(
        log_path=log_path, queues=queue, hostname=f"{queue}@%h", pool="prefork",
        env=worker_env(RECSITE_TRAINING_HEARTBEAT_SECONDS="0.5", RECSITE_TRAINING_STALE_SECONDS="2"),
    )  # fmt: skip
    try:
        run, _ = training_run_start(
            # The options' upper bounds: long enough to be killed mid-training.
            triggered_by="test", options={"epochs": 200, "patience": 200}, enqueue=False
        )
        retrain.apply_async(args=[run.pk], queue=queue)

        def training() -> bool:
            run.refresh_from_db()
            return run.status == TrainingRun.Status.RUNNING and run.progress.get("phase") == "training"

        _wait_for(training, what="the run to be training", timeout=120, log_path=log_path)
        assert training_runs_sweep() == 0  # alive: its heartbeat is fresh
        child_pid = int(run.worker.rsplit(":", 1)[1])
        assert child_pid != worker.pid  # the pool child runs the task, as in production

        os.kill(child_pid, signal.SIGKILL)

        def swept() -> bool:
            training_runs_sweep()
            run.refresh_from_db()
            return run.status == TrainingRun.Status.FAILED

        _wait_for(swept, what="the sweeper to fail the run", timeout=60, log_path=log_path)
        assert "stopped responding" in run.error
        assert not ModelVersion.objects.exists()
        assert training_run_start(triggered_by="next", enqueue=False)[1]  # the slot is free
    finally:
        stop_process(worker)

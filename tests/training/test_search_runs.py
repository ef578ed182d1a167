"""The settings search inside a training run: logged on the run and its page, reused, rerun when due or asked."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from training.models import TrainingRun
from training.services import training_run_execute, training_run_start

FAST = {"epochs": 2, "max_validation_customers": 200}


@pytest.fixture
def search_on(settings):
    # Room for the base options alone: the budget cuts every variation (the cheapest search).
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "SEARCH_SECONDS": 0.5, "SEARCH_EVERY_DAYS": 7.0}
    return settings


def run_now(options=None) -> TrainingRun:
    run, created = training_run_start(triggered_by="test", options={**FAST, **(options or {})}, enqueue=False)
    assert created
    return training_run_execute(run_id=run.pk, worker="test")


def test_the_first_run_searches_logs_every_trial_and_serves_the_best(small_shop, search_on, monkeypatch):
    # Every candidate fits the budget; two variations keep the test short.
    search_on.RECSITE_TRAINING = {**search_on.RECSITE_TRAINING, "SEARCH_SECONDS": 3600.0}
    monkeypatch.setattr("training.ml.search.VARIATIONS", ({"lr_scale": 0.5}, {"loss": "bce"}))
    run = run_now()

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    search = run.metrics["search"]
    assert search["why"] == "no search has run yet"
    tried = search["tried"]
    assert [t["options"] for t in tried] == [FAST, FAST | {"lr": pytest.approx(1.5e-3)}, FAST | {"loss": "bce"}]
    assert search["skipped"] == []
    assert search["chosen"] in [t["options"] for t in tried]
    best = max(t["validation_ndcg"] for t in tried)
    assert next(t for t in tried if t["options"] == search["chosen"])["validation_ndcg"] == best
    assert run.metrics["settings"] == {"options": search["chosen"], "searched": True}
    # The run's history is the chosen trial's epochs.
    assert len(run.history) == next(t for t in tried if t["options"] == search["chosen"])["epochs_run"]
    assert search["seconds"] >= sum(t["seconds"] for t in tried) - 1


def test_the_budget_leaves_out_what_does_not_fit(small_shop, search_on):
    run = run_now()  # a 0.5 s budget: the base options alone

    search = run.metrics["search"]
    assert [t["options"] for t in search["tried"]] == [FAST]
    assert len(search["skipped"]) >= 1 and search["chosen"] == FAST


def test_a_plain_retrain_reuses_the_choice_and_a_stale_or_asked_search_reruns(small_shop, search_on):
    first = run_now()
    chosen = first.metrics["search"]["chosen"]

    plain = run_now()
    assert "search" not in plain.metrics
    assert plain.metrics["settings"] == {"options": chosen, "searched": False}

    asked = run_now({"search": True})
    assert asked.metrics["search"]["why"] == "asked for"

    TrainingRun.objects.filter(pk=asked.pk).update(finished_at=asked.finished_at - timedelta(days=8))
    TrainingRun.objects.filter(pk=first.pk).update(finished_at=first.finished_at - timedelta(days=9))
    stale = run_now()
    assert stale.metrics["search"]["why"].startswith(f"the last search (run {asked.pk}) is 8 days old")

    skipped = run_now({"search": False})
    assert "search" not in skipped.metrics


def test_the_api_and_the_run_page_show_the_configurations_tried(small_shop, search_on, admin_client):
    run = run_now()

    body = admin_client.get(f"/api/v1/training-runs/{run.pk}/").json()
    assert body["metrics"]["search"]["tried"] == run.metrics["search"]["tried"]

    client = Client()
    # force_login: django-axes' backend needs the request that Client.login() does not pass.
    client.force_login(User.objects.create_user("boss", password="x", is_staff=True))
    page = client.get(reverse("dashboard:run_detail", args=[run.pk])).content.decode()
    assert 'id="run-search"' in page
    assert page.count("<tr") - page.count("<thead><tr") >= len(run.metrics["search"]["tried"])
    assert "(chosen)" in page


def test_a_run_may_ask_for_the_search_by_option_only_as_a_bool(db, admin_client):
    answer = admin_client.post("/api/v1/training-runs/", {"options": {"search": "yes"}}, format="json")

    assert answer.status_code == 400
    assert "search" in answer.json()["options"]

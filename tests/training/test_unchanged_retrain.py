"""A retrain on unchanged data and settings trains nothing and stores no version (training/services/fingerprint.py)."""

import uuid
from dataclasses import replace

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from engagement.models import Engagement
from engagement.services import engagement_fold
from engagement.services.events import EventIn, events_ingest
from tests.training.conftest import seed_small_shop
from tests.training.test_runs import FAST, run_now
from training.artifacts import artifact_abspath
from training.models import ModelPromotion, ModelVersion, TrainingRun
from training.services import model_version_promoted, training_data_load
from training.services.fingerprint import FINGERPRINT, training_fingerprint
from training.services.options import _configs


def _trained(run: TrainingRun) -> ModelVersion:
    assert run.status == TrainingRun.Status.SUCCEEDED and "unchanged" not in run.metrics, (run.status, run.error)
    return run.model_version


def test_a_second_run_on_the_same_data_trains_nothing_and_names_the_version_that_keeps_serving(
    small_shop, admin_client
):
    version = _trained(run_now())

    second = run_now()

    assert second.status == TrainingRun.Status.SUCCEEDED
    assert second.error == (
        f"Nothing changed since model version {version.pk} (the same data and settings): no new version was "
        f"trained, and version {version.pk} keeps serving."
    )  # fmt: skip
    assert second.metrics["unchanged"] == version.pk and second.metrics["fingerprint"] == version.config[FINGERPRINT]
    assert second.metrics["data"]["pairs"] == Engagement.objects.count()
    assert second.history == [] and second.progress == {"phase": "finished"}
    assert ModelVersion.objects.count() == 1 and ModelPromotion.objects.count() == 1
    assert model_version_promoted() == version
    # The API and the run page show why.
    body = admin_client.get(f"/api/v1/training-runs/{second.pk}/").json()
    assert (body["status"], body["model_version"]) == ("succeeded", None)
    assert body["error"] == second.error and body["metrics"]["unchanged"] == version.pk
    client = Client()
    client.force_login(User.objects.create_user("boss", password="x", is_staff=True))
    page = client.get(reverse("dashboard:run_detail", args=[second.pk])).content.decode()
    assert f"Nothing changed since model version {version.pk}" in page


def test_new_events_folded_in_between_make_a_new_version(small_shop):
    first = _trained(run_now())
    engaged = Engagement.objects.select_related("customer", "product").order_by("pk").first()
    event = EventIn(event_id=uuid.uuid4(), customer=engaged.customer.external_id, product=engaged.product.external_id,
                    hover_ms=900, dwell_ms=30_000, clicked=True, occurred_at=timezone.now())  # fmt: skip
    assert events_ingest(events=[event]).accepted == 1
    engagement_fold()

    second = run_now()

    assert _trained(second).pk != first.pk
    assert second.model_version.config[FINGERPRINT] != first.config[FINGERPRINT]
    assert ModelVersion.objects.count() == 2


def test_a_run_with_another_seed_makes_a_new_version(small_shop):
    first = _trained(run_now())

    second = run_now({"seed": 1})

    assert _trained(second).pk != first.pk and ModelVersion.objects.count() == 2
    assert second.model_version.config["train"]["seed"] == 1


def test_a_run_trains_again_when_the_promoted_versions_artifact_is_lost_or_it_has_no_fingerprint(small_shop):
    first = _trained(run_now())
    artifact_abspath(first).unlink()  # a lost artifact: the promoted version cannot serve, so train one that can

    second = _trained(run_now())
    # A version stored before runs were fingerprinted: nothing says what it was trained on.
    ModelVersion.objects.filter(pk=second.pk).update(config={"model": second.config["model"]})

    third = run_now()

    assert second.pk != first.pk and _trained(third).pk not in (first.pk, second.pk)
    assert model_version_promoted() == third.model_version


def test_a_run_that_searches_its_settings_trains_even_on_unchanged_data(small_shop, settings):
    # Room for the base options alone (as tests/training/test_search_runs.py): the cheapest search.
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "SEARCH_SECONDS": 0.5}
    fast = {**FAST, "epochs": 2}
    first = run_now({**fast, "search": False})
    _trained(first)

    searched = run_now({**fast, "search": True})

    assert searched.metrics["search"]["why"] == "asked for" and searched.model_version is not None
    assert searched.model_version.config[FINGERPRINT] != first.model_version.config[FINGERPRINT]


def test_the_fingerprint_follows_the_rows_the_configs_the_search_and_the_settings(db, settings):
    seed_small_shop(n_customers=60, n_products=40, n_events=1500)
    data = training_data_load()
    sizes = {"num_customers": len(data.customer_ids), "num_products": len(data.product_ids)}
    model_config, train_config = _configs({}, **sizes)

    def fingerprint(data=data, model_config=model_config, train_config=train_config, searched=False) -> str:
        return training_fingerprint(data=data, model_config=model_config, train_config=train_config,
                                    searched=searched)  # fmt: skip

    same = fingerprint()
    assert len(same) == 64 and fingerprint(data=training_data_load()) == same
    targets = data.interactions.targets.copy()
    targets[0, 1] += 0.25
    differing = [
        fingerprint(data=replace(data, interactions=replace(data.interactions, targets=targets))),
        fingerprint(data=replace(data, product_ids=list(reversed(data.product_ids)))),
        fingerprint(data=replace(data, folded_through=data.folded_through + 1)),
        fingerprint(train_config=replace(train_config, seed=train_config.seed + 1)),
        fingerprint(model_config=replace(model_config, embed_dim=model_config.embed_dim * 2)),
        fingerprint(searched=True),
    ]
    settings.RECSITE_TRAINING = {**settings.RECSITE_TRAINING, "TARGET_RECENCY": "shop"}
    differing.append(fingerprint())
    assert same not in differing and len(set(differing)) == len(differing)

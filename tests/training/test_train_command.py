"""manage.py train: the synchronous path, same service as the Celery task."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from engagement.models import ShopApiKey
from training.models import ModelVersion, TrainingRun
from training.services import training_run_start


def test_it_trains_and_prints_its_metrics_next_to_popularitys(small_shop):
    out = StringIO()

    call_command("train", epochs=4, max_validation_customers=200, stdout=out, stderr=StringIO())

    text = out.getvalue()
    assert "RecommenderNN" in text and "popularity" in text and "Recall@20" in text
    run = TrainingRun.objects.get()
    assert run.triggered_by == "command:train" and run.options == {"epochs": 4, "max_validation_customers": 200}
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert f"Promoted: model version {run.model_version.pk} now serves." in text
    assert f"{run.metrics['model']['full']['ndcg@10']:.4f}" in text


@pytest.mark.django_db
def test_it_refuses_to_start_beside_a_run_in_flight():
    in_flight, _ = training_run_start(triggered_by="api-key:ci", enqueue=False)

    with pytest.raises(CommandError, match=f"Training run {in_flight.pk} is already queued"):
        call_command("train", stdout=StringIO(), stderr=StringIO())
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_it_refuses_bad_options_with_their_names():
    with pytest.raises(CommandError, match="epochs must be a positive integer"):
        call_command("train", epochs=0, stdout=StringIO(), stderr=StringIO())


@pytest.mark.django_db
def test_create_api_key_makes_an_admin_key_only_when_asked():
    call_command("create_api_key", "storefront", stdout=StringIO(), stderr=StringIO())
    call_command("create_api_key", "ci", "--admin", stdout=StringIO(), stderr=StringIO())

    assert dict(ShopApiKey.objects.values_list("name", "scopes")) == {
        "storefront": ["ingest", "recommend"], "ci": ["ingest", "recommend", "admin"]
    }  # fmt: skip

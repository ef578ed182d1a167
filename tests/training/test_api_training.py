"""Training runs and model versions over the API: who may do what, and the answers."""

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from training.models import ModelVersion, TrainingRun
from training.services import artifact_abspath, model_version_promote

RUNS = "/api/v1/training-runs/"


@pytest.fixture
def sent(monkeypatch) -> list:
    """Record retrain tasks instead of sending them: no worker runs in these tests."""
    calls = []
    monkeypatch.setattr("training.queue.retrain_send", lambda run_id, task_id: calls.append((run_id, task_id)))
    return calls


def test_an_admin_key_starts_a_run_and_a_second_start_gets_409_with_it(
    admin_client, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = admin_client.post(RUNS, {"options": {"epochs": 2}}, format="json")
        second = admin_client.post(RUNS, {}, format="json")

    assert first.status_code == 201, first.content
    assert first.json()["status"] == "queued" and first.json()["options"] == {"epochs": 2}
    assert first.json()["triggered_by"] == "api-key:test admin"
    assert second.status_code == 409 and second.json()["id"] == first.json()["id"]
    assert sent == [(first.json()["id"], first.json()["task_id"])] and first.json()["task_id"]


def test_bad_options_get_a_400_and_start_nothing(admin_client, sent):
    response = admin_client.post(RUNS, {"options": {"epochs": "many", "colour": 1}}, format="json")

    assert response.status_code == 400 and "options" in response.json()
    assert not TrainingRun.objects.exists() and sent == []


@pytest.mark.usefixtures("transactional_db")  # autocommit, as in production: on_commit runs in the request
def test_a_broker_outage_answers_503_and_frees_the_slot(admin_client, monkeypatch):
    def down(run_id, task_id):
        raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr("training.queue.retrain_send", down)

    response = admin_client.post(RUNS, {}, format="json")

    assert response.status_code == 503 and response["Retry-After"]
    assert TrainingRun.objects.get().status == TrainingRun.Status.FAILED


def test_a_run_can_be_followed_and_cancelled(admin_client, sent):
    run_id = admin_client.post(RUNS, {}, format="json").json()["id"]

    assert admin_client.get(f"{RUNS}{run_id}/").json()["status"] == "queued"
    assert admin_client.post(f"{RUNS}{run_id}/cancel/").json()["status"] == "cancelled"
    assert [r["id"] for r in admin_client.get(RUNS).json()] == [run_id]


@pytest.mark.parametrize(
    "who, read, start",
    [
        ("shop key", 403, 403),
        ("admin key", 200, 201),
        ("merchandiser", 200, 403),
        ("staff user", 200, 201),
        ("signed-in outsider", 403, 403),
        ("anonymous", 401, 401),
    ],
)
def test_who_may_read_and_start_training_runs(who, read, start, shop_client, admin_client, merchandiser_client, sent):
    if who in ("staff user", "signed-in outsider"):
        client = APIClient()
        client.force_login(User.objects.create_user(who.replace(" ", "-"), is_staff=who == "staff user"))
    else:
        client = {"shop key": shop_client, "admin key": admin_client, "merchandiser": merchandiser_client}.get(
            who, APIClient()
        )

    assert client.get(RUNS).status_code == read
    assert client.post(RUNS, {}, format="json").status_code == start


def test_a_session_post_without_a_csrf_token_is_refused(db, sent):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("boss", is_staff=True))

    assert client.post(RUNS, {}, format="json").status_code == 403
    assert not TrainingRun.objects.exists()


def test_an_admin_promotes_and_rolls_back_over_the_api(admin_client, shop_client, make_version):
    v1 = make_version(customer_ids=["c"], product_ids=["p"], seed=1)
    v2 = make_version(customer_ids=["c"], product_ids=["p"], seed=2)

    assert shop_client.post(f"/api/v1/model-versions/{v1.pk}/promote/").status_code == 403
    assert admin_client.post(f"/api/v1/model-versions/{v1.pk}/promote/").json()["status"] == "promoted"
    assert admin_client.post(f"/api/v1/model-versions/{v2.pk}/promote/").json()["status"] == "promoted"
    back = admin_client.post("/api/v1/model-versions/rollback/")

    assert back.status_code == 200 and back.json()["id"] == v1.pk
    listed = admin_client.get("/api/v1/model-versions/").json()
    assert {v["id"]: v["status"] for v in listed} == {v1.pk: "promoted", v2.pk: "retired"}
    assert "customer_ids" not in listed[0] and listed[0]["customers"] == 1


def test_promoting_a_tampered_artifact_gets_409_and_changes_nothing(admin_client, make_version):
    v1 = make_version(customer_ids=["c"], product_ids=["p"], seed=1)
    v2 = make_version(customer_ids=["c"], product_ids=["p"], seed=2)
    model_version_promote(version_id=v1.pk, actor="test")
    artifact_abspath(v2).write_bytes(artifact_abspath(v1).read_bytes())  # a valid file, but not v2's

    response = admin_client.post(f"/api/v1/model-versions/{v2.pk}/promote/")

    assert response.status_code == 409 and "checksum" in response.json()["detail"]
    assert ModelVersion.objects.get(status="promoted") == v1


def test_unknown_ids_get_404(admin_client):
    assert admin_client.get(f"{RUNS}999/").status_code == 404
    assert admin_client.post("/api/v1/model-versions/999/promote/").status_code == 404


def test_cancelling_a_run_that_already_ended_gets_409(admin_client):
    run = TrainingRun.objects.create(triggered_by="t", status=TrainingRun.Status.SUCCEEDED)

    response = admin_client.post(f"{RUNS}{run.pk}/cancel/")

    assert response.status_code == 409 and response.json()["status"] == "succeeded"

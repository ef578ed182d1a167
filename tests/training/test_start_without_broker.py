"""Starting a run when its task cannot be sent: 503 with Retry-After, the run failed at once (issue 17, row 1).

In-process, in both passes: the send raises what Celery raises when Redis is down (its
result consumer's RuntimeError, from redis-py's ConnectionError). The real outage, Redis
cut under gunicorn, is tests/faults/test_training_broker_loss.py (PostgreSQL pass).
"""

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from training.models import TrainingRun
from training.services import training_run_start

RUNS = "/api/v1/training-runs/"
# Autocommit, as in production: the task is sent (on_commit) inside the request.
pytestmark = pytest.mark.usefixtures("transactional_db")


@pytest.fixture
def redis_down(monkeypatch):
    """Make the send fail as Celery's Redis result backend does once it gives up reconnecting."""

    def send(run_id, task_id):
        try:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        except redis.exceptions.ConnectionError as exc:
            raise RuntimeError("Retry limit exceeded while trying to reconnect to the Celery result store") from exc

    monkeypatch.setattr("training.queue.retrain_send", send)


@pytest.fixture
def admin_browser() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("admin-web", password="unused", is_staff=True))
    return client


def test_the_api_answers_503_with_retry_after_and_the_run_is_failed_saying_why(admin_client, redis_down):
    response = admin_client.post(RUNS, {}, format="json")

    run = TrainingRun.objects.get()
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json() == {
        "detail": f"The task broker cannot be reached: training run {run.pk} was not started. Try again later."
    }
    assert run.status == TrainingRun.Status.FAILED and run.finished_at is not None
    assert run.error.startswith("Could not reach the task broker (RuntimeError: Retry limit exceeded")


def test_after_a_refused_start_the_next_start_is_not_blocked_by_the_failed_run(admin_client, redis_down, monkeypatch):
    admin_client.post(RUNS, {}, format="json")
    monkeypatch.setattr("training.queue.retrain_send", lambda run_id, task_id: None)

    again = admin_client.post(RUNS, {}, format="json")

    assert again.status_code == 201 and again.json()["status"] == "queued"


def test_retrain_on_the_dashboard_answers_the_confirm_page_again_with_503_and_the_reason(admin_browser, redis_down):
    response = admin_browser.post(reverse("dashboard:run_retrain"))

    run = TrainingRun.objects.get()
    assert response.status_code == 503 and response["Retry-After"] == "5"
    page = response.content.decode()
    assert f"the task broker cannot be reached, so training run {run.pk} was not started" in page
    assert 'id="retrain-confirm"' in page  # the button, to try again
    assert run.status == TrainingRun.Status.FAILED


def test_an_htmx_retrain_gets_503_and_reloads_the_confirm_page_which_shows_the_reason(admin_browser, redis_down):
    response = admin_browser.post(reverse("dashboard:run_retrain"), headers={"HX-Request": "true"})
    reloaded = admin_browser.get(reverse("dashboard:run_retrain"))

    assert response.status_code == 503 and response["HX-Refresh"] == "true" and response["Retry-After"] == "5"
    assert "the task broker cannot be reached" in reloaded.content.decode()


def test_a_send_that_fails_for_another_reason_fails_the_run_but_is_not_called_a_broker_outage(monkeypatch):
    def send(run_id, task_id):
        raise TypeError("Object of type set is not JSON serializable")

    monkeypatch.setattr("training.queue.retrain_send", send)

    with pytest.raises(TypeError):
        training_run_start(triggered_by="test")

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.FAILED and run.error.startswith("Could not send its task (TypeError")


def test_a_refused_send_raises_broker_unavailable_with_the_run(redis_down):
    from training.services import BrokerUnavailable  # new with the fix: the other tests run without it

    with pytest.raises(BrokerUnavailable) as raised:
        training_run_start(triggered_by="test")

    assert raised.value.run_id == TrainingRun.objects.get().pk

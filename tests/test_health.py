"""Liveness and readiness probes."""

from functools import partial
from unittest import mock

import pytest

from recsite.celery import app as celery_app

pytestmark = pytest.mark.django_db

# Nothing listens on port 1: connections are refused at once.
DEAD_BROKER_URL = "redis://127.0.0.1:1/0"


def test_it_answers_healthz_while_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_is_ready_when_the_database_and_the_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "database": "ok", "broker": "ok", "model": "none: serving popular products", "status": "ok"
    }  # fmt: skip


def test_it_is_not_ready_when_the_broker_is_unreachable(client):
    # The app's own connection machinery, aimed at a dead broker.
    dead_connection = partial(celery_app.connection_for_write, url=DEAD_BROKER_URL)
    with mock.patch.object(celery_app, "connection_for_write", dead_connection):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["broker"] != "ok"

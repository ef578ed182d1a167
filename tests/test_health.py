"""Liveness and readiness probes."""

from functools import partial
from unittest import mock

import pytest
from django.db import OperationalError, connection

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


def test_it_stays_ready_but_says_degraded_when_the_broker_is_unreachable(client):
    # The app's own connection machinery, aimed at a dead broker: the API still ingests
    # and recommends without it (tests/faults/test_broker_loss.py), so it keeps its traffic.
    dead_connection = partial(celery_app.connection_for_write, url=DEAD_BROKER_URL)
    with mock.patch.object(celery_app, "connection_for_write", dead_connection):
        response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"] == "ok"
    assert body["broker"] != "ok"
    assert "broker" in body["detail"]


def test_it_is_not_ready_when_the_database_does_not_answer(client, monkeypatch):
    # The real cut is in tests/faults/test_database_loss.py (PostgreSQL pass); here the
    # driver's error, raised where the probe asks for a cursor.
    def refused(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refused)
    response = client.get("/readyz")
    monkeypatch.undo()
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["model"] == "unknown (database down)"
    # The kind of error only: the probe is public, the driver's words are for the log.
    assert response.json()["database"] == "unavailable (OperationalError)"

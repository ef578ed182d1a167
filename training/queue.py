"""Sending training's Celery tasks, by name: the services enqueue work without importing ``tasks.py``.

``tasks.py`` imports the services (a task is a thin wrapper around one), so the services
cannot import it back; they send through here instead. The names are defined once, here,
and ``tasks.py`` registers its tasks under them. Routing (CELERY_TASK_ROUTES) applies by
name, as it does to ``task.delay``.
"""

from __future__ import annotations

from celery import group, signature
from celery.result import GroupResult

from recsite.celery import app

RETRAIN = "training.tasks.retrain"
SWEEP_TRAINING_RUNS = "training.tasks.sweep_training_runs"
SCHEDULED_RETRAIN = "training.tasks.scheduled_retrain"
PRECOMPUTE = "training.tasks.precompute_recommendations"
PRECOMPUTE_CHUNK = "training.tasks.precompute_recommendations_chunk"
REFRESH = "training.tasks.refresh_recommendations"


def retrain_send(run_id: int, *, task_id: str) -> None:
    """Enqueue training run ``run_id`` under the task id stored with it; raises if the broker is down."""
    app.send_task(RETRAIN, args=[run_id], task_id=task_id)


def precompute_send(version_id: int) -> None:
    """Enqueue the precompute of ``version_id``."""
    app.send_task(PRECOMPUTE, args=[version_id])


def precompute_chunks_send(version_id: int, chunks: list[list[int]]) -> GroupResult:
    """Send one chunk task per list of customers, as a group."""
    return group(signature(PRECOMPUTE_CHUNK, args=(version_id, chunk), app=app) for chunk in chunks).apply_async()


def refresh_send(after_event_id: int, upto_event_id: int) -> None:
    """Enqueue new lists for the customers of events (after, upto]."""
    app.send_task(REFRESH, args=[after_event_id, upto_event_id])

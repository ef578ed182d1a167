"""Sending training's Celery tasks, by name: the services enqueue work without importing ``tasks.py``.

``tasks.py`` imports the services (a task is a thin wrapper around one), so the services
cannot import it back; they send through here instead. The names are defined once, here,
and ``tasks.py`` registers its tasks under them. Routing (CELERY_TASK_ROUTES) applies by
name, as it does to ``task.delay``.
"""

from __future__ import annotations

import threading

import redis
from celery import group, signature
from celery.result import GroupResult, denied_join_result
from kombu.exceptions import OperationalError as KombuOperationalError

from recsite.celery import app

RETRAIN = "training.tasks.retrain"
SWEEP_TRAINING_RUNS = "training.tasks.sweep_training_runs"
SCHEDULED_RETRAIN = "training.tasks.scheduled_retrain"
PRECOMPUTE = "training.tasks.precompute_recommendations"
PRECOMPUTE_CHUNK = "training.tasks.precompute_recommendations_chunk"
REFRESH = "training.tasks.refresh_recommendations"


# The request that starts a run sends its task, so with the broker down it must fail in
# a second or two and answer 503, not wait (issue 17, row 1: a 500 after 19 s). A
# refused connect fails at once; a 1 s connect timeout and 2 s per command bound a Redis
# that accepts and never answers (kombu's default is to wait forever: measured, a send
# to such a server hung until killed; 2.2 s with these). One retry, 2 s for all the
# connection attempts (kombu's defaults: 3 retries, 4 s). A live Redis answers an LPUSH
# in well under a millisecond here.
PUBLISH_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 1.0, "socket_timeout": 2.0, "max_retries": 1, "connect_retries_timeout": 2.0,
}
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
# denied_join_result sets a process-wide flag and puts back the value it found: two
# threads sending at once could put back each other's True and leave it set for good.
_no_join_lock = threading.Lock()


def retrain_send(run_id: int, *, task_id: str) -> None:
    """Enqueue training run ``run_id`` under the task id stored with it; raises if the broker is down.

    The sender never waits for the task's result (the run's row is its result), so it
    does not subscribe to it: with the Redis result backend that subscription is made
    before the message is sent, and while Redis is down it retried 20 times, a second
    apart, then raised RuntimeError. The worker still stores the result, and a caller
    that does wait (``AsyncResult.get``) subscribes then and reads it from Redis.
    ``denied_join_result`` is how Celery marks a sender that will not join (its
    workers do the same); it sets a process-wide flag for the length of the send, so
    another thread's ``AsyncResult.get`` in that moment would be refused (no web
    process waits on a result; tests that do wait do so after the send).
    """
    with (
        app.connection_for_write(transport_options=PUBLISH_TRANSPORT_OPTIONS) as connection,
        _no_join_lock,
        denied_join_result(),
    ):
        app.send_task(RETRAIN, args=[run_id], task_id=task_id, connection=connection, retry_policy=PUBLISH_RETRY_POLICY)


def broker_unreachable(exc: BaseException) -> bool:
    """True for an error saying the broker (or the result store) cannot be reached.

    kombu wraps socket errors in its OperationalError; redis-py's connection errors are
    no OSError; Celery's result consumer raises RuntimeError from one when it gives up.
    """
    connection_errors = (
        KombuOperationalError, OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
        *getattr(app.backend, "connection_errors", ()),
    )  # fmt: skip
    while exc is not None:
        if isinstance(exc, connection_errors):
            return True
        exc = exc.__cause__
    return False


def precompute_send(version_id: int) -> None:
    """Enqueue the precompute of ``version_id``."""
    app.send_task(PRECOMPUTE, args=[version_id])


def precompute_chunks_send(version_id: int, chunks: list[list[int]]) -> GroupResult:
    """Send one chunk task per list of customers, as a group."""
    return group(signature(PRECOMPUTE_CHUNK, args=(version_id, chunk), app=app) for chunk in chunks).apply_async()


def refresh_send(after_event_id: int, upto_event_id: int) -> None:
    """Enqueue new lists for the customers of events (after, upto]."""
    app.send_task(REFRESH, args=[after_event_id, upto_event_id])

"""Liveness and readiness probes for load balancers and orchestrators."""

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from recsite.celery import app as celery_app

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2


@require_GET
@never_cache
def healthz(request):
    """Answer 200 while the process can serve requests; touches nothing else."""
    return JsonResponse({"status": "ok"})


def _database_ready() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"; report it
        logger.warning("readyz: database: %s", exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def _broker_ready() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # kombu raises many kinds; all mean "not ready"
        logger.warning("readyz: broker: %s", exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def _model_state() -> str:
    """Say what recommendations come from; informational, never "not ready".

    No promoted model is a normal state (a new shop): the API serves popular products.
    """
    from training.serving import (
        served_model,  # training depends on engagement, not back
    )

    try:
        served = served_model()
    except Exception as exc:  # the database check reports the cause
        return f"unknown ({type(exc).__name__})"
    if served is None:
        return "none: serving popular products"
    return f"version {served.version_id}"


@require_GET
@never_cache
def readyz(request):
    """Answer 200 when the database and the broker answer, else 503 with what failed."""
    checks = {"database": _database_ready(), "broker": _broker_ready()}
    body = {name: ("ok" if error is None else error) for name, error in checks.items()}
    ready = all(error is None for error in checks.values())
    body["model"] = _model_state() if checks["database"] is None else "unknown (database down)"
    body["status"] = "ok" if ready else "unavailable"
    return JsonResponse(body, status=200 if ready else 503)

"""Liveness and readiness probes for load balancers and orchestrators."""

import logging
from collections.abc import Callable

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
        # Only the kind of error: the probe is public, and the driver's words name hosts and users.
        return f"unavailable ({type(exc).__name__})"
    return None


def _broker_ready() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # kombu raises many kinds; all mean "not ready"
        logger.warning("readyz: broker: %s", exc)
        return f"unavailable ({type(exc).__name__})"
    return None


# What the service answers from, reported by the apps that know (training registers
# "model" in its AppConfig.ready): recsite sits below every app and imports none.
_STATE_REPORTS: dict[str, Callable[[], str]] = {}


def state_report_register(name: str, report: Callable[[], str]) -> None:
    """Add ``name`` to readyz's answer: ``report()`` says its state in words; informational, never "not ready"."""
    _STATE_REPORTS[name] = report


def _state_reports() -> dict[str, str]:
    states = {}
    for name, report in _STATE_REPORTS.items():
        try:
            states[name] = report()
        except Exception as exc:  # the database check reports the cause
            states[name] = f"unknown ({type(exc).__name__})"
    return states


@require_GET
@never_cache
def readyz(request):
    """Answer 503 only when the database does not answer; a broker outage is 200, "degraded".

    Without the broker the API still ingests and recommends (docs/reliability.md, broker
    loss): scoring and training wait. A load balancer routing by this probe must not take
    every web process out for it.
    """
    database, broker = _database_ready(), _broker_ready()
    body = {"database": database or "ok", "broker": broker or "ok"}
    if database is None:
        body.update(_state_reports())
    else:
        body.update({name: "unknown (database down)" for name in _STATE_REPORTS})
    if database is not None:
        body["status"] = "unavailable"
    elif broker is not None:
        body["status"] = "degraded"
        body["detail"] = (
            "The task broker is unreachable: events are stored and recommendations served; "
            "scoring and training wait for it."
        )
    else:
        body["status"] = "ok"
    return JsonResponse(body, status=503 if database is not None else 200)

"""API errors: DRF's own, plus a database outage answered 503 instead of 500."""

import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is not None:
        return response
    # The database is down or unreachable: nothing was stored, so the client should
    # retry the same batch (event ids make the retry safe).
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.warning("database unavailable: %s", exc)
        return Response(
            {"detail": "Storage is temporarily unavailable; retry the same request."},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DatabaseError):
        logger.exception("database error")
    return None

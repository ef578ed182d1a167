"""API errors: DRF's own, plus 400 for JSON nested too deeply, 413 for an oversize body, 503 for a database outage."""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is not None:
        return response
    # Django refuses to read a body over DATA_UPLOAD_MAX_MEMORY_SIZE; say so with 413.
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"detail": f"Request body is over {limit} bytes."}, status=413)
    # JSON nested deeper than the decoder's recursion limit ("[[[[...]]]]", a few
    # hundred kB): the JSON parser lets RecursionError through, and it is the client's
    # input that is wrong, not the server.
    if isinstance(exc, RecursionError):
        logger.warning("request body nested too deeply: %s", exc)
        return Response({"detail": "JSON parse error: the body is nested too deeply."}, status=400)
    # The database is down or unreachable (refused, reset mid-request, or the commit's
    # answer lost): the transaction rolled back, or committed and the answer was lost,
    # and either way the client should resend the same batch (event ids make it safe).
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

"""API errors: DRF's own, plus 400 for JSON nested too deeply, 413 for an oversize body, 503 for a database outage.

Anything else unhandled is logged with its traceback and answered with a generic JSON
500: no exception text, SQL, traceback or setting names reach the client (OWASP API8).
"""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework.response import Response
from django.views import defaults
from rest_framework.views import exception_handler, set_rollback

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
INTERNAL_ERROR = {"detail": "Internal server error."}


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
    if settings.DEBUG:
        return None  # Django's technical 500 page, for the developer
    # Logged here, with the traceback, because answering it means Django never logs it.
    logger.exception("unhandled error in %s", _view_name(context))
    set_rollback()  # as DRF does for the errors it answers: nothing half-done is committed
    # The database error's text can hold SQL and values: never send it.
    return Response(INTERNAL_ERROR, status=500)


def _view_name(context) -> str:
    view = context.get("view")
    return type(view).__name__ if view is not None else "an API view"


def server_error(request, *args, **kwargs):
    """Answer an error no view handled (handler500): generic JSON under /api/, Django's plain page elsewhere.

    Under /api/ that is an error before or after the DRF view (middleware, URL
    resolution); the shop's client parses JSON. Django's page says only "Server Error
    (500)" when DEBUG is off.
    """
    if request.path.startswith("/api/"):
        return JsonResponse(INTERNAL_ERROR, status=500)
    return defaults.server_error(request, *args, **kwargs)


def page_not_found(request, exception=None, *args, **kwargs):
    """Answer a URL that matches nothing (handler404): JSON under /api/, Django's page elsewhere.

    Under /api/ that is a path whose id is not of its type (``training-runs/abc/``): the
    schema promises JSON bodies, and the shop's client parses JSON (docs/reliability.md, fuzzing).
    """
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception, *args, **kwargs)

"""Request checks that hold for every URL, before any view or database sees the request."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

NUL = "\x00"
NUL_MESSAGE = "The path or query string contains a NUL byte (%00), which no id, search or filter may hold."


def has_nul_byte(request: HttpRequest) -> bool:
    """Say whether the decoded path, or any query-string key or value, holds a NUL byte."""
    if NUL in request.path_info:
        return True
    return any(NUL in key or any(NUL in value for value in values) for key, values in request.GET.lists())


class RejectNulBytesMiddleware:
    """Answer 400 to a NUL byte in the path or query, as the client's mistake.

    PostgreSQL cannot hold NUL in text, and psycopg refuses such a string before the
    query is sent (ValueError): every view that looks an id, a search term or an admin
    filter up answered 500 on PostgreSQL (issue 17 row 2), while SQLite answered 200 or
    404. No id the ingest API accepts holds NUL (it refuses them), so nothing is lost.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if has_nul_byte(request):
            if request.path_info.startswith("/api/"):
                return JsonResponse({"detail": NUL_MESSAGE}, status=400)
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


def client_ip(request: HttpRequest) -> str:
    """Return the client's address: REMOTE_ADDR, or X-Forwarded-For's as the trusted proxies wrote it.

    With RECSITE_TRUSTED_PROXIES = n proxies in front of gunicorn, each appends the
    address it saw to X-Forwarded-For, so the client is the n-th entry from the right;
    anything further left was sent by the client and can be forged. With 0 (the default,
    and the embedded mode) the header is ignored: anyone could set it.
    """
    proxies = settings.RECSITE_TRUSTED_PROXIES
    if proxies > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "")

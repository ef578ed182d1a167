"""The shop authenticates with ``Authorization: Api-Key <key>``.

A key once verified is remembered in the process for ``RECSITE_API_KEY_CACHE_SECONDS``
(default 5): the next requests with it skip the database query and the hash check,
about 0.25 ms of each request on SQLite and a round trip more on PostgreSQL (issue 15:
a cached recommendation should not hit the database). What that costs: a key revoked,
deleted or re-scoped in another process (the admin of another web worker, a shell)
keeps working in this one for at most that long. A change saved through the ORM in
this process (the admin's save, delete) forgets every remembered key at once, and an
expiry date is checked on every request. Only keys that verified are remembered, at
most ``MAX_REMEMBERED`` of them, under the SHA-256 of the key (never the key itself).
"""

import hashlib
import threading
import time

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework_api_key.permissions import KeyParser

from .models import ShopApiKey

MAX_REMEMBERED = 1024  # a shop has a handful of keys; past this the memory starts over
_remembered: dict[str, tuple[float, ShopApiKey]] = {}  # sha256 of the key -> (verified at, monotonic; key)
_lock = threading.Lock()


def api_keys_forget(**_) -> None:
    """Forget every remembered key (a key was saved or deleted in this process): the next request verifies again."""
    with _lock:
        _remembered.clear()


def api_key_verified(key: str) -> ShopApiKey:
    """Return the usable ShopApiKey for ``key``, from memory when verified recently; DoesNotExist otherwise."""
    ttl = settings.RECSITE_API_KEY_CACHE_SECONDS
    digest = hashlib.sha256(key.encode()).hexdigest()
    now = time.monotonic()
    hit = _remembered.get(digest)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    api_key = ShopApiKey.objects.get_from_key(key)  # unrevoked, hash checked; DoesNotExist otherwise
    if ttl > 0:
        with _lock:
            if len(_remembered) >= MAX_REMEMBERED:
                _remembered.clear()
            _remembered[digest] = (now, api_key)
    return api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Resolve the key to a ``ShopApiKey`` as ``request.auth``; there is no user."""

    keyword = "Api-Key"
    key_parser = KeyParser()

    def authenticate(self, request):
        key = self.key_parser.get(request)
        if not key:
            return None  # Let session auth (dashboard users) try.
        try:
            api_key = api_key_verified(key)
        except ShopApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("API key has expired.")
        return (None, api_key)

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate) rather than 403 when no key is sent.
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describe the Api-Key header in the OpenAPI schema (registered on import)."""

    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Api-Key <key>`; create one with `manage.py create_api_key NAME [--scope ingest|recommend|admin]`. "
                "Each operation needs one scope: 401 without a valid key, 403 without the scope."
            ),
        }

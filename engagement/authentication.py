"""The shop authenticates with ``Authorization: Api-Key <key>``."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework_api_key.permissions import KeyParser

from .models import ShopApiKey


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Resolve the key to a ``ShopApiKey`` as ``request.auth``; there is no user."""

    keyword = "Api-Key"
    key_parser = KeyParser()

    def authenticate(self, request):
        key = self.key_parser.get(request)
        if not key:
            return None  # Let session auth (dashboard users) try.
        try:
            api_key = ShopApiKey.objects.get_from_key(key)
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

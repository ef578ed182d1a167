"""The shop authenticates with ``Authorization: Api-Key <key>``."""

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

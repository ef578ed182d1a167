from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from .models import ShopApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Count requests per API key (anonymous requests never get this far).

    DRF answers a throttled request with 429 and a ``Retry-After`` header.
    """

    scope = "api_key"

    def get_rate(self) -> str | None:
        # Read at request time, not import time, so the rate follows settings.
        return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get(self.scope)

    def get_cache_key(self, request, view) -> str | None:
        if not isinstance(request.auth, ShopApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.prefix}

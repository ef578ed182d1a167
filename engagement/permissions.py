from rest_framework.permissions import BasePermission

from .models import ShopApiKey


class HasShopApiKey(BasePermission):
    """Allow a request that carries a valid, unrevoked shop API key."""

    message = "Send a valid key: Authorization: Api-Key <key>."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ShopApiKey)

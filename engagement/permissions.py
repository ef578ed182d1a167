from rest_framework.permissions import BasePermission

from .models import ShopApiKey


class HasShopApiKey(BasePermission):
    """Allow a request that carries a valid, unrevoked shop API key."""

    message = "Send a valid key: Authorization: Api-Key <key>."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ShopApiKey)


ADMIN_GROUP = "recsys-admin"
MERCHANDISER_GROUP = "merchandiser"


def user_may_administer(user) -> bool:
    """Staff and the recsys-admin group may retrain, promote and roll back (DESIGN.md)."""
    return bool(user and user.is_authenticated and (user.is_staff or user.groups.filter(name=ADMIN_GROUP).exists()))


def user_may_read(user) -> bool:
    """Merchandisers read what admins see; they change nothing."""
    return user_may_administer(user) or bool(
        user and user.is_authenticated and user.groups.filter(name=MERCHANDISER_GROUP).exists()
    )


class IsRecsysAdmin(BasePermission):
    """An admin API key, or a signed-in staff / recsys-admin user."""

    message = "This needs an admin API key (create_api_key NAME --admin) or a recsys-admin user."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ShopApiKey):
            return request.auth.is_admin
        return user_may_administer(request.user)


class CanReadTraining(BasePermission):
    """Reads of training runs and model versions: admin keys, admins and merchandisers."""

    message = "This needs an admin API key, or a merchandiser or recsys-admin user."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ShopApiKey):
            return request.auth.is_admin
        return user_may_read(request.user)

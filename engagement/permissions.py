from dataclasses import dataclass

from rest_framework.permissions import BasePermission

from .models import ApiKeyScope, ShopApiKey


class HasShopApiKey(BasePermission):
    """Allow a request that carries a valid, unrevoked shop API key (the default; views name a scope)."""

    message = "Send a valid key: Authorization: Api-Key <key>."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ShopApiKey)


def key_has_scope(request, scope: str) -> bool:
    return isinstance(request.auth, ShopApiKey) and request.auth.has_scope(scope)


class CanIngest(BasePermission):
    """A key with the ``ingest`` scope: events and the catalog."""

    message = "This needs an API key with the 'ingest' scope."

    def has_permission(self, request, view) -> bool:
        return key_has_scope(request, ApiKeyScope.INGEST)


class CanRecommend(BasePermission):
    """A key with the ``recommend`` scope: recommendations and popular products."""

    message = "This needs an API key with the 'recommend' scope."

    def has_permission(self, request, view) -> bool:
        return key_has_scope(request, ApiKeyScope.RECOMMEND)


ADMIN_GROUP = "recsys-admin"
MERCHANDISER_GROUP = "merchandiser"


@dataclass(frozen=True)
class Roles:
    may_read: bool  # merchandisers and admins see the dashboard and training runs
    may_administer: bool  # staff and recsys-admin also retrain, promote and roll back (DESIGN.md)


def user_roles(user) -> Roles:
    """Return what a user may do, in at most one query (their memberships of the two groups)."""
    if not (user and user.is_authenticated):
        return Roles(may_read=False, may_administer=False)
    if user.is_staff:
        return Roles(may_read=True, may_administer=True)
    groups = set(user.groups.filter(name__in=[ADMIN_GROUP, MERCHANDISER_GROUP]).values_list("name", flat=True))
    return Roles(may_read=bool(groups), may_administer=ADMIN_GROUP in groups)


def user_may_administer(user) -> bool:
    return user_roles(user).may_administer


def user_may_read(user) -> bool:
    return user_roles(user).may_read


class IsRecsysAdmin(BasePermission):
    """A key with the ``admin`` scope, or a signed-in staff / recsys-admin user."""

    message = "This needs an API key with the 'admin' scope (create_api_key NAME --admin) or a recsys-admin user."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ShopApiKey):
            return request.auth.has_scope(ApiKeyScope.ADMIN)
        return user_may_administer(request.user)


class CanReadTraining(BasePermission):
    """Reads of training runs and model versions: ``admin``-scoped keys, admins and merchandisers."""

    message = "This needs an API key with the 'admin' scope, or a merchandiser or recsys-admin user."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ShopApiKey):
            return request.auth.has_scope(ApiKeyScope.ADMIN)
        return user_may_read(request.user)

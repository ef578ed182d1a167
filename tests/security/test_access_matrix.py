"""Who may call what: every API endpoint x every kind of caller, every dashboard action x every role.

One table each. A caller is allowed when its key carries the endpoint's scope (ingest,
recommend, admin) or, for training reads and actions, when its signed-in user has the
role; everyone else is denied: 401 without a valid key or session (anonymous, revoked),
403 with one that lacks the right. Dashboard: anonymous visitors go to the login page,
signed-in users without the role get 403, and a POST without a CSRF token gets 403 even
from an admin. The API table must name every route under /api/v1/, so a new endpoint
cannot be added without saying who may call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import AllowAny
from rest_framework.test import APIClient
from rest_framework.views import APIView

from engagement.models import ALL_SCOPES
from tests.security.conftest import make_key

pytestmark = pytest.mark.django_db

MISSING = 999_999  # no run or version has this id: an allowed caller gets 404, after the permission check


@dataclass(frozen=True)
class Endpoint:
    route: str  # the URL pattern, as Django lists it
    method: str
    url: str
    needs: str  # ingest, recommend, admin, or read (admin keys, merchandisers, admins)
    allowed_status: int | None  # what an allowed caller gets here; None: any answer but 401/403/5xx
    body: object = None


API = [
    Endpoint("events/", "post", "/api/v1/events/", "ingest", 200, {"events": []}),
    Endpoint("products/", "put", "/api/v1/products/", "ingest", 200, []),
    Endpoint("products/popular/", "get", "/api/v1/products/popular/", "recommend", 200),
    Endpoint("recommendations/<external_id:customer>/", "get", "/api/v1/recommendations/c-1/", "recommend", 200),
    Endpoint("products/<external_id:product>/similar/", "get", "/api/v1/products/p-1/similar/", "recommend", None),
    Endpoint("training-runs/", "get", "/api/v1/training-runs/", "read", 200),
    # An unknown option: 400 once allowed, and nothing is started.
    Endpoint("training-runs/", "post", "/api/v1/training-runs/", "admin", 400, {"options": {"no_such": 1}}),
    Endpoint("training-runs/<int:run_id>/", "get", f"/api/v1/training-runs/{MISSING}/", "read", 404),
    Endpoint("training-runs/<int:run_id>/cancel/", "post", f"/api/v1/training-runs/{MISSING}/cancel/", "admin", 404),
    Endpoint("model-versions/", "get", "/api/v1/model-versions/", "read", 200),
    Endpoint("model-versions/<int:version_id>/", "get", f"/api/v1/model-versions/{MISSING}/", "read", 404),
    Endpoint(
        "model-versions/<int:version_id>/promote/", "post", f"/api/v1/model-versions/{MISSING}/promote/", "admin", 404
    ),
    # Nothing to roll back to: 409 once allowed.
    Endpoint("model-versions/rollback/", "post", "/api/v1/model-versions/rollback/", "admin", 409),
]


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: tuple[str, ...] = ()  # a key with these
    revoked: bool = False
    role: str | None = None  # or a signed-in user: outsider, merchandiser, admin


API_CALLERS = [
    Caller("anonymous"),
    Caller("ingest-only key", scopes=("ingest",)),
    Caller("recommend-only key", scopes=("recommend",)),
    Caller("shop key", scopes=("ingest", "recommend")),
    Caller("admin key", scopes=tuple(ALL_SCOPES)),
    Caller("revoked admin key", scopes=tuple(ALL_SCOPES), revoked=True),
    Caller("outsider (session)", role="outsider"),
    Caller("merchandiser (session)", role="merchandiser"),
    Caller("admin (session)", role="admin"),
]


def api_expectation(caller: Caller, endpoint: Endpoint) -> int | None:
    """The status a denied caller gets (401 or 403), or None when it is allowed."""
    if caller.revoked or (not caller.scopes and caller.role is None):
        return 401
    if caller.scopes:
        scope = "admin" if endpoint.needs == "read" else endpoint.needs
        return None if scope in caller.scopes else 403
    allowed_roles = {"read": {"merchandiser", "admin"}, "admin": {"admin"}}.get(endpoint.needs, set())
    return None if caller.role in allowed_roles else 403


def _api_routes() -> set[tuple[str, str]]:
    """(route, method) of every view under /api/v1/."""
    routes = set()
    for top in get_resolver().url_patterns:
        if not (isinstance(top, URLResolver) and str(top.pattern) == "api/v1/"):
            continue
        for pattern in top.url_patterns:
            view_class = pattern.callback.view_class
            for method in ("get", "post", "put", "patch", "delete"):
                if hasattr(view_class, method):
                    routes.add((str(pattern.pattern), method))
    return routes


def _api_views() -> list[type[APIView]]:
    views = []
    for top in get_resolver().url_patterns:
        if isinstance(top, URLResolver) and str(top.pattern) == "api/v1/":
            views += [p.callback.view_class for p in top.url_patterns if isinstance(p, URLPattern)]
    return views


def _client_for(caller: Caller, users: dict[str, User]) -> APIClient:
    client = APIClient()
    if caller.scopes:
        key = make_key(caller.name, *caller.scopes, revoked=caller.revoked)
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    elif caller.role:
        client.force_login(users[caller.role])
    return client


@pytest.fixture
def users(admin_user, merchandiser_user, outsider_user) -> dict[str, User]:
    return {"admin": admin_user, "merchandiser": merchandiser_user, "outsider": outsider_user}


def test_every_api_endpoint_answers_each_caller_as_the_table_says(users, figure):
    routes = _api_routes()
    endpoints = [e for e in API if (e.route, e.method) in routes]  # the similar-products route, when present
    assert {(e.route, e.method) for e in endpoints} == routes, "a route under /api/v1/ is missing from API above"

    checked, denied, allowed, mismatches = 0, 0, 0, []
    for caller in API_CALLERS:
        client = _client_for(caller, users)
        for endpoint in endpoints:
            response = getattr(client, endpoint.method)(endpoint.url, endpoint.body, format="json")
            expected = api_expectation(caller, endpoint)
            checked += 1
            if expected is not None:
                ok = response.status_code == expected
                denied += ok
            elif endpoint.allowed_status is not None:
                ok = response.status_code == endpoint.allowed_status
                allowed += ok
            else:
                ok = response.status_code not in (401, 403) and response.status_code < 500
                allowed += ok
            if not ok:
                mismatches.append((caller.name, endpoint.method, endpoint.url, response.status_code, expected))

    figure("access_matrix_api", requests=checked, denied_as_expected=denied, allowed_as_expected=allowed,
           mismatches=len(mismatches))  # fmt: skip
    assert mismatches == []
    assert denied > 0 and allowed > 0


def test_the_default_permission_is_not_allow_any_and_every_api_view_names_its_own():
    assert settings.REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"] == ["engagement.permissions.HasShopApiKey"]
    for view in _api_views():
        # Explicit: set on the view itself, not inherited from the default.
        own = "permission_classes" in vars(view) or "get_permissions" in vars(view)
        assert own, f"{view.__name__} relies on the default permission"
        assert AllowAny not in view.permission_classes, view.__name__


# --- the dashboard ---

LOGIN = "/accounts/login/"


@dataclass(frozen=True)
class Page:
    method: str
    url: str
    needs: str  # read (merchandisers, admins) or admin


DASHBOARD = [
    Page("get", "/dashboard/", "read"),
    Page("get", "/dashboard/runs/", "read"),
    Page("get", "/dashboard/customers/", "read"),
    Page("get", "/dashboard/products/", "read"),
    Page("get", "/dashboard/runs/retrain/", "admin"),
    Page("post", "/dashboard/runs/retrain/", "admin"),
    Page("post", f"/dashboard/runs/{MISSING}/cancel/", "admin"),
    Page("post", f"/dashboard/versions/{MISSING}/promote/", "admin"),
    Page("post", "/dashboard/versions/rollback/", "admin"),
]
ROLES = ["anonymous", "outsider", "merchandiser", "admin"]


def _dashboard_outcome(response) -> str:
    if response.status_code == 302 and response["Location"].startswith(LOGIN):
        return "login"
    if response.status_code == 403:
        return "403"
    if response.status_code >= 500:
        return f"error {response.status_code}"
    return "allowed"


def dashboard_expectation(role: str, page: Page) -> str:
    if role == "anonymous":
        return "login"
    allowed = {"read": {"merchandiser", "admin"}, "admin": {"admin"}}[page.needs]
    return "allowed" if role in allowed else "403"


def test_every_dashboard_page_and_action_answers_each_role_as_the_table_says(users, figure):
    checked, denied, allowed, mismatches = 0, 0, 0, []
    for role in ROLES:
        client = Client()
        if role != "anonymous":
            client.force_login(users[role])
        for page in DASHBOARD:
            outcome = _dashboard_outcome(getattr(client, page.method)(page.url))
            expected = dashboard_expectation(role, page)
            checked += 1
            if outcome != expected:
                mismatches.append((role, page.method, page.url, outcome, expected))
            elif expected == "allowed":
                allowed += 1
            else:
                denied += 1

    figure("access_matrix_dashboard", requests=checked, denied_as_expected=denied, allowed_as_expected=allowed,
           mismatches=len(mismatches))  # fmt: skip
    assert mismatches == []


def test_a_post_without_a_csrf_token_gets_403_even_from_an_admin_and_passes_with_one(users, figure):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["admin"])
    posts = [p.url for p in DASHBOARD if p.method == "post"] + ["/api/v1/model-versions/rollback/", LOGIN]

    without = {url: client.post(url).status_code for url in posts}
    client.get("/dashboard/runs/")  # sets the CSRF cookie, as the page a browser posts from does
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    with_token = client.post("/dashboard/versions/rollback/", HTTP_X_CSRFTOKEN=token)

    figure("csrf", posts_without_token=len(without), forbidden=sum(s == 403 for s in without.values()),
           with_token_status=with_token.status_code)  # fmt: skip
    assert without == dict.fromkeys(posts, 403)
    assert with_token.status_code != 403  # the 403s above were the missing token, not the role

"""A NUL byte in a path, a query or a login form is the client's mistake: 400 (or a form error), never 500.

PostgreSQL refuses NUL in a string literal (psycopg raises before the query is sent), so
on the PostgreSQL pass every route that looks an id or a search term up answered 500
(issue 17 row 2). SQLite stores NUL, so there the same requests answered 200 or 404.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.dashboard.conftest import PASSWORD, merchandiser_web  # noqa: F401

API_PATHS = [
    "/api/v1/recommendations/a%00b/",
    "/api/v1/recommendations/ok/?category=a%00b",
    "/api/v1/products/a%00b/similar/",
    "/api/v1/products/popular/?category=a%00b",
]
DASHBOARD_PATHS = [
    "/dashboard/customers/a%00b/",
    "/dashboard/products/a%00b/",
    "/dashboard/products/a%00b/similar/",
    "/dashboard/products/a%00b/reach/",
    "/dashboard/customers/?q=a%00b",
    "/dashboard/products/?category=a%00b",
    "/dashboard/products/?a%00b=1",
]
ADMIN_PATHS = [
    "/admin/engagement/customer/?q=a%00b",
    "/admin/engagement/product/?category=a%00b",
    "/admin/engagement/product/?category__exact=a%00b",
    "/admin/training/trainingrun/?status=a%00b",
    "/admin/engagement/customer/a%00b/change/",
]


@pytest.mark.parametrize("path", API_PATHS)
def test_an_api_path_or_query_with_a_nul_byte_is_answered_400_in_json(path, shop_key):
    answer = Client().get(path, HTTP_AUTHORIZATION=f"Api-Key {shop_key}")

    assert answer.status_code == 400, answer.content[:300]
    assert answer["Content-Type"] == "application/json"
    assert "NUL" in answer.json()["detail"]


@pytest.mark.parametrize("path", DASHBOARD_PATHS)
def test_a_dashboard_path_or_query_with_a_nul_byte_is_answered_400(path, merchandiser_web):  # noqa: F811
    answer = merchandiser_web.get(path)

    assert answer.status_code == 400, answer.content[:300]
    assert b"NUL" in answer.content


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_an_admin_path_or_query_with_a_nul_byte_is_answered_400(path, db):
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password=PASSWORD))

    answer = admin.get(path)

    assert answer.status_code == 400, answer.content[:300]


@pytest.mark.parametrize("login_path", ["/accounts/login/", "/admin/login/"])
def test_a_login_form_with_a_nul_byte_in_the_username_is_refused_as_a_form_error(login_path, db):
    User.objects.create_user("mia", password=PASSWORD, is_staff=True)

    answer = Client().post(login_path, {"username": "mi\x00a", "password": PASSWORD})

    # Django's form field refuses NUL before authenticate() queries the user.
    assert answer.status_code == 200
    assert "_auth_user_id" not in answer.wsgi_request.session


def test_a_path_without_a_nul_byte_is_served_as_before(shop_key, figure):
    answer = Client().get("/api/v1/recommendations/nobody/", HTTP_AUTHORIZATION=f"Api-Key {shop_key}")

    assert answer.status_code == 200
    figure("nul_bytes", routes=len(API_PATHS) + len(DASHBOARD_PATHS) + len(ADMIN_PATHS), status=400)

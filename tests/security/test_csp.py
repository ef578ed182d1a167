"""Every answer carries a strict Content-Security-Policy (issue 17 row 11): no page had one.

The policy (recsite/settings.py) lets only the site's own files run or style a page. The
API docs alone add a per-request nonce, for Swagger UI's inline script and style.
test_csp_browser.py checks in Chromium that the pages work under it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tests.dashboard.conftest import PASSWORD, merchandiser_web  # noqa: F401

STRICT = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}


def directives(answer) -> dict[str, str]:
    header = answer["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


@pytest.fixture
def superuser_web(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=PASSWORD))
    return client


@pytest.mark.parametrize(
    "path",
    ["/dashboard/", "/dashboard/runs/", "/dashboard/customers/", "/dashboard/products/", "/dashboard/nothing-here/"],
)
def test_every_dashboard_page_has_the_strict_policy(path, merchandiser_web):  # noqa: F811
    answer = merchandiser_web.get(path)

    assert answer.status_code in (200, 404)
    assert directives(answer) == STRICT


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/", "/healthz", "/dashboard/customers/a%00b/"])
def test_pages_before_login_and_refusals_have_the_strict_policy(path, db):
    answer = Client().get(path)

    assert directives(answer) == STRICT


@pytest.mark.parametrize("path", ["/admin/", "/admin/auth/user/", "/admin/auth/user/add/", "/admin/engagement/product/"])
def test_admin_pages_have_the_strict_policy(path, superuser_web):
    answer = superuser_web.get(path)

    assert answer.status_code == 200
    assert directives(answer) == STRICT


@pytest.mark.parametrize(
    "path", ["/api/v1/recommendations/someone/", "/api/v1/products/popular/", "/api/v1/nothing/", "/api/schema/"]
)
def test_api_answers_have_the_strict_policy(path, shop_key):
    answer = Client().get(path, HTTP_AUTHORIZATION=f"Api-Key {shop_key}")

    assert directives(answer) == STRICT


def test_the_api_docs_allow_only_their_own_inline_script_and_style_by_nonce(db, figure):
    first, second = Client().get("/api/docs/"), Client().get("/api/docs/")
    page = first.content.decode()

    policy = directives(first)
    nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9+/=]+)'", policy["script-src"]).group(1)
    assert policy["style-src"] == f"'self' 'nonce-{nonce}'"
    assert {key: value for key, value in policy.items() if key not in ("script-src", "style-src")} == {
        key: value for key, value in STRICT.items() if key not in ("script-src", "style-src")
    }
    # Every inline <script> and <style> carries it; nothing else is inline.
    inline = re.findall(r"<(script|style)(?![^>]*\bsrc=)([^>]*)>", page)
    assert inline and all(f'nonce="{nonce}"' in attributes for _, attributes in inline), inline
    assert directives(second)["script-src"] != policy["script-src"]  # a new nonce per answer
    figure("csp", directives=len(STRICT), inline_on_docs=len(inline), unsafe_inline=0)


def test_no_project_template_has_inline_script_style_or_event_handler():
    offenders = []
    for folder in (Path(settings.BASE_DIR) / "templates", Path(settings.BASE_DIR) / "dashboard" / "templates"):
        for template in folder.rglob("*.html"):
            text = template.read_text()
            if template.name == "swagger_ui.html":
                text = re.sub(r'<(script|style) nonce="\{\{ request.csp_nonce \}\}">', "", text)
            if re.search(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:", text):
                offenders.append(str(template))
    assert offenders == []

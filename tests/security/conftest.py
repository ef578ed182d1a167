"""Security tests: who may call what, what a request may set, what an error may say.

The access matrix runs in-process (the permission classes and the dashboard's access
helper are what it checks); the throttle and the generic 500 are checked over HTTP on a
real gunicorn, whose settings add only two URLs that raise (``server_settings.py``).
Each test prints one ``FIGURE <name>: k=v ...`` line (docs/reliability.md "Security").
"""

from __future__ import annotations

import pytest

from engagement.models import ShopApiKey
from tests.celery_worker import worker_env
from tests.dashboard.conftest import admin_user, merchandiser_user, outsider_user  # noqa: F401
from tests.faults.conftest import figure, gunicorn_server  # noqa: F401

# The gunicorn's per-key rate: small, so a test reaches it in a few requests.
SERVER_RATE_PER_MINUTE = 5


def make_key(name: str, *scopes: str, revoked: bool = False) -> str:
    _, key = ShopApiKey.objects.create_key(name=name, scopes=list(scopes), revoked=revoked)
    return key


@pytest.fixture(scope="session")
def security_server(django_db_setup, tmp_path_factory):
    """gunicorn (1 worker) with DEBUG off, the rate above, and the two raising URLs of server_settings."""
    env = worker_env(
        DJANGO_SETTINGS_MODULE="tests.security.server_settings",
        DEBUG="false",
        RECSITE_API_KEY_RATE=f"{SERVER_RATE_PER_MINUTE}/min",
    )
    with gunicorn_server(env, tmp_path_factory.mktemp("security-gunicorn") / "gunicorn.log", workers=1) as server:
        yield server

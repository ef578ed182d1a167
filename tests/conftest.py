"""Shared fixtures: the cast (STYLE 13) and a client that carries the shop's API key."""

import os

pytest_plugins = ["tests.celery_worker"]

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from engagement.models import ShopApiKey

IN_CI = os.environ.get("CI", "").lower() == "true"
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def pytest_report_header(config):
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return f"recsite: database={db} broker={settings.CELERY_BROKER_URL.split('://')[0]}"


def pytest_sessionstart(session):
    if not ON_POSTGRES:
        return
    import psycopg

    conf = settings.DATABASES["default"]
    try:
        psycopg.connect(
            host=conf["HOST"], port=conf["PORT"] or 5432, user=conf["USER"], password=conf["PASSWORD"],
            dbname="postgres", connect_timeout=3,
        ).close()
    except psycopg.OperationalError as exc:
        message = (
            f"PostgreSQL is not reachable at {conf['HOST']}:{conf['PORT']} ({exc}). Start it "
            "(`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) or "
            "run `make test-embedded` for the SQLite pass only."
        )
        if IN_CI:
            pytest.exit(message, returncode=1)
        session.config._recsite_skip_all = message


def pytest_collection_modifyitems(config, items):
    message = getattr(config, "_recsite_skip_all", None)
    if message:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=message))


@pytest.fixture
def shop_key(db) -> str:
    _, key = ShopApiKey.objects.create_key(name="test shop")
    return key


@pytest.fixture
def shop_client(shop_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {shop_key}")
    return client


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()

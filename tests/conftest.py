"""Shared fixtures: the cast (STYLE 13) and a client that carries the shop's API key."""

import os

pytest_plugins = ["tests.celery_worker", "tests.dashboard.browser"]

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from engagement.models import ShopApiKey

IN_CI = os.environ.get("CI", "").lower() == "true"
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def pytest_report_header(config):
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return f"recsite: database={db} broker={settings.CELERY_BROKER_URL.split('://')[0]}"


def _postgres_problem() -> str | None:
    import psycopg

    conf = settings.DATABASES["default"]
    try:
        psycopg.connect(
            host=conf["HOST"], port=conf["PORT"] or 5432, user=conf["USER"], password=conf["PASSWORD"],
            dbname="postgres", connect_timeout=3,
        ).close()
    except psycopg.OperationalError as exc:
        return (
            f"PostgreSQL is not reachable at {conf['HOST']}:{conf['PORT'] or 5432} ({exc}). Start it "
            "(`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) or "
            "run `make test-embedded` for the SQLite pass only."
        )
    return None


def _redis_problem(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        return (
            f"Redis is not reachable at {url} ({exc}). Start it (`redis-server --daemonize yes "
            "--bind 127.0.0.1 --port 6379 --save ''`) or run `make test-embedded` for the SQLite pass only."
        )
    return None


def pytest_sessionstart(session):
    """Skip the whole pass, with how to enable it, when a service it claims is down (fail in CI)."""
    problems = []
    if ON_POSTGRES:
        problems.append(_postgres_problem())
    for url in {settings.CELERY_BROKER_URL, settings.REDIS_URL or ""}:
        if url.startswith("redis"):
            problems.append(_redis_problem(url))
    message = " ".join(p for p in problems if p)
    if not message:
        return
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


@pytest.fixture(autouse=True)
def _rules_read_afresh():
    """A process remembers the rules in force for a moment; a test's own rules start from its own database."""
    from training.services.rules import rules_forget

    rules_forget()
    yield
    rules_forget()

"""A verified API key is remembered in the process for RECSITE_API_KEY_CACHE_SECONDS (issue 15).

What is measured: the queries that read the key table. The clock is the module's own
monotonic clock, moved by the test (no sleeps).
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from engagement import authentication
from engagement.models import ShopApiKey

POPULAR = "/api/v1/products/popular/"


@pytest.fixture(autouse=True)
def _clean_memory_and_clock(monkeypatch):
    authentication.api_keys_forget()
    now = [1000.0]
    monkeypatch.setattr(authentication.time, "monotonic", lambda: now[0])
    yield now
    authentication.api_keys_forget()


@pytest.fixture
def clock(_clean_memory_and_clock):
    return _clean_memory_and_clock


def _key_reads(client) -> tuple[int, int]:
    """(status, queries that read the key table) of one request."""
    with CaptureQueriesContext(connection) as queries:
        status = client.get(POPULAR).status_code
    table = ShopApiKey._meta.db_table
    return status, sum(table in query["sql"] for query in queries.captured_queries)


def test_the_next_request_with_a_verified_key_reads_no_key_row(shop_client, settings):
    settings.RECSITE_API_KEY_CACHE_SECONDS = 5.0
    assert _key_reads(shop_client) == (200, 1)
    assert _key_reads(shop_client) == (200, 0)


def test_with_the_memory_off_every_request_reads_the_key(shop_client, settings):
    settings.RECSITE_API_KEY_CACHE_SECONDS = 0
    assert _key_reads(shop_client) == (200, 1)
    assert _key_reads(shop_client) == (200, 1)


def test_a_key_revoked_elsewhere_is_refused_once_the_memory_expires(shop_client, settings, clock):
    settings.RECSITE_API_KEY_CACHE_SECONDS = 5.0
    assert _key_reads(shop_client) == (200, 1)
    # A bulk update sends no signal: as another process's revocation looks to this one.
    ShopApiKey.objects.update(revoked=True)
    clock[0] += 4.9
    assert shop_client.get(POPULAR).status_code == 200, "within the documented bound"
    clock[0] += 0.2
    assert shop_client.get(POPULAR).status_code == 401


def test_a_key_revoked_or_deleted_in_this_process_is_refused_at_once(shop_client, settings):
    settings.RECSITE_API_KEY_CACHE_SECONDS = 5.0
    assert shop_client.get(POPULAR).status_code == 200
    key = ShopApiKey.objects.get()
    key.revoked = True
    key.save()
    assert shop_client.get(POPULAR).status_code == 401
    key.revoked = False
    key.save()
    assert shop_client.get(POPULAR).status_code == 200
    key.delete()
    assert shop_client.get(POPULAR).status_code == 401


def test_a_wrong_key_is_never_remembered(anonymous_client, shop_key, settings):
    settings.RECSITE_API_KEY_CACHE_SECONDS = 5.0
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {shop_key}x")
    assert _key_reads(anonymous_client) == (401, 1)
    assert _key_reads(anonymous_client) == (401, 1)

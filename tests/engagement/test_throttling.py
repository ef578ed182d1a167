"""The per-key rate limit: a counter per key and window, 429 with Retry-After past it, open when the cache is down."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework.test import APIClient

from engagement import throttling
from engagement.models import ShopApiKey

URL = "/api/v1/recommendations/c-1/"


@pytest.fixture
def three_a_minute(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "3/min"}}


@pytest.fixture
def clock(monkeypatch):
    """Pin the throttle's clock; the test moves it through the returned dict."""
    now = {"t": 29_000_000.0 * 60 + 10}  # 10 s into a minute
    monkeypatch.setattr(throttling.ApiKeyRateThrottle, "timer", lambda self: now["t"])
    return now


def _client(name: str) -> APIClient:
    _, key = ShopApiKey.objects.create_key(name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


@pytest.mark.usefixtures("three_a_minute")
def test_it_answers_429_past_the_rate_with_the_seconds_left_in_the_window(db, clock):
    client = _client("storefront")

    statuses = [client.get(URL).status_code for _ in range(4)]
    throttled = client.get(URL)

    assert statuses == [200, 200, 200, 429]
    assert throttled.status_code == 429
    assert throttled["Retry-After"] == "50"  # 10 s into the minute


@pytest.mark.usefixtures("three_a_minute")
def test_each_key_has_its_own_count(db, clock):
    first, second = _client("first"), _client("second")

    assert [first.get(URL).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert second.get(URL).status_code == 200


@pytest.mark.usefixtures("three_a_minute")
def test_a_new_window_counts_from_zero(db, clock):
    client = _client("storefront")
    assert [client.get(URL).status_code for _ in range(4)] == [200, 200, 200, 429]

    clock["t"] += 50  # the next minute

    assert [client.get(URL).status_code for _ in range(4)] == [200, 200, 200, 429]


@pytest.mark.usefixtures("three_a_minute")
def test_it_lets_requests_through_while_the_cache_is_unreachable_and_does_not_retry_it_each_time(
    db, clock, monkeypatch
):
    client = _client("storefront")
    calls = []

    def unreachable(key, delta=1, version=None):
        calls.append(key)
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(throttling.cache, "incr", unreachable)
    monkeypatch.setattr(throttling, "_unreachable_until", 0.0)

    assert [client.get(URL).status_code for _ in range(5)] == [200] * 5
    assert len(calls) == 1  # then skipped for UNREACHABLE_SKIP_SECONDS


def test_requests_without_a_key_are_not_counted(db, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "1/min"}}

    assert [APIClient().get(URL).status_code for _ in range(3)] == [401, 401, 401]

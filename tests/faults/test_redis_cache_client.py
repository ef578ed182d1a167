"""recsite.cache's client against a real Redis: one redis.Redis per pool, and an atomic one-round-trip incr.

Runs wherever a Redis answers on 127.0.0.1:6379 (both CI passes start one); keys are
this test's own, in database 11.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from recsite.cache import DegradingRedisCache

URL = "redis://127.0.0.1:6379/11"


@pytest.fixture
def live_cache() -> DegradingRedisCache:
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("needs Redis on 127.0.0.1:6379 (CI starts it)")
    return DegradingRedisCache(URL, {})


def test_incr_adds_to_a_counter_keeps_its_expiry_and_refuses_a_missing_one(live_cache):
    key = f"test-incr-{uuid.uuid4()}"
    raw = live_cache._cache.get_client(write=True)
    with pytest.raises(ValueError, match="not found"):
        live_cache.incr(key)
    assert not raw.exists(live_cache.make_and_validate_key(key)), "a refused incr must not create the key"

    assert live_cache.add(key, 1, timeout=60)
    assert live_cache.incr(key) == 2
    assert live_cache.incr(key, 5) == 7
    assert live_cache.decr(key) == 6
    assert live_cache.get(key) == 6
    assert 0 < raw.ttl(live_cache.make_and_validate_key(key)) <= 60, "the counter keeps the expiry add gave it"
    live_cache.delete(key)


def test_incr_is_one_round_trip(live_cache, monkeypatch):
    key = f"test-incr-{uuid.uuid4()}"
    live_cache.add(key, 1, timeout=60)
    client = live_cache._cache.get_client(write=True)
    sent = []
    real = client.execute_command
    monkeypatch.setattr(client, "execute_command", lambda *args, **kw: sent.append(args[0]) or real(*args, **kw))
    assert live_cache.incr(key) == 2
    assert sent == ["EVAL"], "Django's own incr sends EXISTS then INCRBY"
    live_cache.delete(key)


def test_every_operation_reuses_one_client_per_pool(live_cache):
    reads = {id(live_cache._cache.get_client()) for _ in range(5)}
    writes = {id(live_cache._cache.get_client(write=True)) for _ in range(5)}
    assert len(reads) == 1 and len(writes) == 1
    live_cache.set("k-reuse", 1)
    assert live_cache.get("k-reuse") == 1
    live_cache.delete("k-reuse")

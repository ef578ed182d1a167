"""recsite.cache.DegradingRedisCache: an unreachable Redis is a miss, a dropped write, and a failed counter."""

from __future__ import annotations

import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from recsite.cache import RETRY_AFTER_SECONDS, DegradingRedisCache
from tests.faults.proxy import free_port


@pytest.fixture
def dead_cache() -> DegradingRedisCache:
    # Nothing listens on a port just freed: connections are refused at once.
    return DegradingRedisCache(f"redis://127.0.0.1:{free_port()}/0", {})


def test_reads_miss_and_writes_are_dropped_while_redis_is_unreachable(dead_cache):
    assert dead_cache.get("k", "default") == "default"
    assert dead_cache.get_many(["a", "b"]) == {}
    assert dead_cache.has_key("k") is False
    assert dead_cache.set("k", 1) is None
    assert dead_cache.add("k", 1) is False
    assert dead_cache.set_many({"a": 1, "b": 2}) == ["a", "b"]
    assert dead_cache.delete("k") is False
    assert dead_cache.touch("k") is False


def test_a_counter_raises_connection_error_rather_than_pretend(dead_cache):
    with pytest.raises(RedisConnectionError):
        dead_cache.incr("k")
    with pytest.raises(RedisConnectionError):
        dead_cache.decr("k")


def test_after_a_failure_it_does_not_try_redis_again_for_a_while(dead_cache, monkeypatch):
    dead_cache.get("k")
    calls = []
    monkeypatch.setattr("django.core.cache.backends.redis.RedisCache.get", lambda *a, **k: calls.append(a))

    dead_cache.get("k")
    assert calls == []  # skipped: answered as a miss at once
    dead_cache._skip_until = time.monotonic() - 1  # the window (RETRY_AFTER_SECONDS) has passed
    dead_cache.get("k")
    assert len(calls) == 1 and RETRY_AFTER_SECONDS > 0


def test_it_sets_socket_timeouts_so_a_silent_host_cannot_hang_a_request():
    cache = DegradingRedisCache("redis://127.0.0.1:1/0", {"OPTIONS": {"socket_timeout": 9}})

    options = cache._cache._pool_options
    assert options["socket_connect_timeout"] == 0.5 and options["socket_timeout"] == 9

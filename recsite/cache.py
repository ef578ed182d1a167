"""The Redis cache, failing soft: while Redis is unreachable the cache reads as empty.

Everything kept in the cache can be recomputed or done without: popular rankings and
precomputed recommendations come from the database on a miss, and the per-key throttle
counts nothing while Redis is down (it fails open: DRF's throttle "should not be
considered a security measure", and failing closed would turn a cache outage into an
API outage). So a connection error is a miss on read and a dropped write, never a 500;
only ``incr`` raises it (redis.exceptions.ConnectionError), since a count cannot be faked.
docs/reliability.md (broker loss) has the measurement.
"""

from __future__ import annotations

import logging
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
# After a failure, skip Redis this long (seconds): a Redis that drops packets rather
# than refusing connections would otherwise cost every request its connect timeout.
RETRY_AFTER_SECONDS = 2.0
# Defaults for redis-py, in seconds; the OPTIONS of CACHES override them. Without them
# redis-py waits forever on a host that does not answer.
SOCKET_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 2.0}


# KEYS[1] += ARGV[1] when it exists; nil (None) when it does not.
INCR_IF_EXISTS = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end return false"


class ReusingRedisCacheClient(RedisCacheClient):
    """Django's client, keeping one redis.Redis per connection pool instead of building one per operation.

    Django builds a ``redis.Redis`` for every get, set and incr; with redis-py 5 and
    later that object's constructor alone was about 0.1 ms a call, two calls a cached
    recommendation (the throttle's incr and the list's get), more than either's round
    trip on loopback (bench/precompute.py profile, docs/precompute.md). redis-py's
    client is thread-safe: it takes a connection from the pool for each command.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}  # id(pool) -> redis.Redis over it

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:  # two threads may both build one: either serves
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client

    def incr(self, key, delta):
        """Django's incr in one round trip and atomic: add ``delta`` only if the key exists, else ValueError.

        Django sends EXISTS, then INCRBY: two round trips for every API request's
        throttle count, and a counter that expires between the two is created again by
        INCRBY with no expiry at all. One Lua script does both steps at once.
        """
        client = self.get_client(key, write=True)
        value = client.eval(INCR_IF_EXISTS, 1, key, delta)
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return value


class DegradingRedisCache(RedisCache):
    """Django's RedisCache where an unreachable Redis is a miss on read and a no-op on write."""

    def __init__(self, server, params):
        params = {**params, "OPTIONS": {**SOCKET_OPTIONS, **params.get("OPTIONS", {})}}
        super().__init__(server, params)
        self._class = ReusingRedisCacheClient
        self._skip_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, operation: str, exc: Exception) -> None:
        if self._available():  # one log line per outage window, not one per request
            logger.warning("Cache unreachable (%s: %s); serving without it for %.0f s.", operation, exc,
                           RETRY_AFTER_SECONDS)  # fmt: skip
        self._skip_until = time.monotonic() + RETRY_AFTER_SECONDS

    def _soft(self, operation: str, fallback, call, *args, **kwargs):
        if not self._available():
            return fallback
        try:
            return call(*args, **kwargs)
        except UNREACHABLE as exc:
            self._failed(operation, exc)
            return fallback

    def get(self, key, default=None, version=None):
        return self._soft("get", default, super().get, key, default, version)

    def get_many(self, keys, version=None):
        return self._soft("get_many", {}, super().get_many, keys, version)

    def has_key(self, key, version=None):
        return self._soft("has_key", False, super().has_key, key, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._soft("add", False, super().add, key, value, timeout, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._soft("set", None, super().set, key, value, timeout, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._soft("set_many", list(data), super().set_many, data, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._soft("touch", False, super().touch, key, timeout, version)

    def delete(self, key, version=None):
        return self._soft("delete", False, super().delete, key, version)

    def delete_many(self, keys, version=None):
        return self._soft("delete_many", None, super().delete_many, keys, version)

    def incr(self, key, delta=1, version=None):
        """Raise ConnectionError when Redis is unreachable: a counter cannot pretend (decr comes here too).

        Within the skip window it raises without trying, as reads miss without trying:
        else a counter whose add() was just skipped could meet a Redis that came back
        and answer "no such key" (ValueError), which a caller takes for a bug.
        """
        if not self._available():
            raise RedisConnectionError("cache incr skipped: Redis was unreachable moments ago")
        try:
            return super().incr(key, delta, version)
        except UNREACHABLE as exc:
            self._failed("incr", exc)
            raise

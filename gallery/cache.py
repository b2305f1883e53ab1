"""Calls to the Redis cache that only save work or count requests (text vectors, rate limits).

Each gives up within the cache's short socket timeouts (CACHES in settings), and after a
failure Redis is left alone for CACHE_RETRY_SECONDS: with Redis paused, every search used to
wait for a timeout per call.
"""

import logging

from gallery.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

CACHE_RETRY_SECONDS = 30
cache_breaker = CircuitBreaker(CACHE_RETRY_SECONDS)


def cache_call(operation, *args, **kwargs):
    """`operation(*args, **kwargs)`, or None while Redis is failing."""
    if cache_breaker.is_open:
        return None
    try:
        return operation(*args, **kwargs)
    except Exception as error:
        cache_breaker.trip()
        logger.warning(
            "The Redis cache is unavailable (%s); going on without it for %d s",
            error,
            CACHE_RETRY_SECONDS,
        )
        return None


def trust_cache_again() -> None:
    """Use the cache at the next call (tests that took Redis away, and put it back)."""
    cache_breaker.reset()

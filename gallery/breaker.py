"""The circuit breaker: after a service fails, calls to it are skipped for a while, so no request
waits for its timeouts again and again (the Redis cache and queue, a read replica).

Below every layer: it imports nothing from the site.
"""

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    """Open (skip the service) for `retry_seconds` after a failure, then closed again: the
    next call tries the service. `retry_seconds` may be a function, read at each failure, for
    a duration that comes from settings."""

    def __init__(self, retry_seconds: float | Callable[[], float]):
        self._retry_seconds = retry_seconds
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def retry_seconds(self) -> float:
        seconds = self._retry_seconds
        return seconds() if callable(seconds) else seconds

    @property
    def is_open(self) -> bool:
        """Whether calls skip the service for now (it failed less than retry_seconds ago)."""
        return time.monotonic() < self._open_until

    def trip(self) -> bool:
        """The service failed: skip it from now for retry_seconds. Returns whether it was
        closed before, so a failure is logged once, not by every call that finds it open."""
        with self._lock:
            was_closed = not self.is_open
            self._open_until = time.monotonic() + self.retry_seconds
        return was_closed

    def reset(self) -> None:
        """The service answered (or is known to be back): call it again at once."""
        with self._lock:
            self._open_until = 0.0

"""Errors that escape a view become answers people and scripts can read, never Django's bare
"Server Error (500)": a gallery.errors.UserError as itself, a lost database as a 503."""

import logging
import threading
import time

from django.db import InterfaceError, OperationalError

from gallery.errors import Unavailable, UserError
from gallery.web.responses import error_response

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10
# While PostgreSQL is down every request fails; one line per interval says so, instead of a
# traceback per request (12 MB of log in 40 s, measured).
LOG_EVERY_SECONDS = 60
MESSAGE = "The library's database is unavailable right now; try again in a moment."


DATABASE_ERRORS = (OperationalError, InterfaceError)


class ErrorResponseMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, UserError):
            return error_response(request, exception)
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable_response(request, exception)
        return None


def database_unavailable_response(request, exception):
    """The 503 for a request the database could not answer; also used by middleware that
    reads the database before any view runs (sessions, API tokens)."""
    _log(exception)
    response = error_response(request, Unavailable(MESSAGE, retry_after=RETRY_AFTER_SECONDS))
    response._has_been_logged = True  # logged above, once per interval; not per request
    return response


_last_logged = 0.0
_suppressed = 0
_log_lock = threading.Lock()


def _log(exception) -> None:
    global _last_logged, _suppressed
    with _log_lock:
        now = time.monotonic()
        if now - _last_logged < LOG_EVERY_SECONDS:
            _suppressed += 1
            return
        suppressed, _suppressed, _last_logged = _suppressed, 0, now
    logger.error(
        "Database unavailable: %s (%d more such requests in the last %d s answered 503)",
        str(exception).strip().splitlines()[0] if str(exception).strip() else exception,
        suppressed,
        LOG_EVERY_SECONDS,
    )

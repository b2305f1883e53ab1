"""Per-client limits on the web side: who the client is, how many searches and query images
it may send (counted in the Redis cache by django-ratelimit), and the 429 answers for those
limits and for a login locked by django-axes after failed attempts.

The counters fail open: they go through gallery.cache's breaker, so a stalled or missing Redis
costs one request one short timeout and then lets searches through uncounted for a while,
rather than slowing or refusing them.
"""

import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django_ratelimit.core import get_usage, user_or_ip

from gallery.cache import cache_call
from gallery.errors import TooManyRequests
from gallery.web.responses import error_response


def client_ip(request) -> str:
    """The client's address (for rate limits and django-axes).

    With no proxy configured it is the connection's address, and X-Forwarded-For, which any
    client can send, is ignored. Behind TRUSTED_PROXY_COUNT proxies that each append the
    address they saw, it is the one the outermost proxy saw: the n-th from the right; what a
    client wrote into the header itself lies further left and is never read.
    """
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies > 0:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= proxies:
            try:
                return str(ipaddress.ip_address(forwarded[-proxies]))
            except ValueError:
                pass  # not a bare address: use the connection's own
    return request.META.get("REMOTE_ADDR", "")


# -- search rate limits ----------------------------------------------------------------------


def _is_search(request) -> bool:
    # The search page without parameters is the empty form, not a search.
    return request.method == "POST" or bool(request.GET) or request.path.startswith("/api/")


def _posts_query_image(request) -> bool:
    return request.method == "POST" and "image" in request.FILES


@dataclass(frozen=True)
class RateLimit:
    group: str  # the counter's name
    setting: str  # the setting that holds its rate, such as "60/m"; "" is no limit
    counts: Callable[[HttpRequest], bool]  # whether a request counts
    what: str  # what is counted, for the message
    parameter: str | None  # what the API's error names


SEARCHES = RateLimit("search", "SEARCH_RATE_LIMIT", _is_search, "searches", None)
QUERY_IMAGES = RateLimit(
    "query-image", "QUERY_IMAGE_RATE_LIMIT", _posts_query_image, "query images", "image"
)


def limit_search_rate(view):
    """Counts a request against the client's search limit, and a posted query image also
    against the stricter query-image limit; over either, the answer is 429 with Retry-After."""

    @functools.wraps(view)
    def limited(request, *args, **kwargs):
        for limit in (SEARCHES, QUERY_IMAGES):
            rate = getattr(settings, limit.setting)
            if rate and limit.counts(request):
                wait = _seconds_until_allowed(request, limit, rate)
                if wait:
                    return _too_many(request, limit, rate, wait)
        return view(request, *args, **kwargs)

    return limited


def _seconds_until_allowed(request, limit: RateLimit, rate: str) -> int:
    """0 when the request may go on, else how long until the client's window ends."""
    # Outside the breaker: a missing address is a set-up error to see, not Redis failing.
    if not request.user.is_authenticated and not client_ip(request):
        raise ImproperlyConfigured(
            "The request has no client address (REMOTE_ADDR is empty, as behind a proxy that "
            "connects through a Unix socket): set TRUSTED_PROXY_COUNT to the number of "
            "proxies that add X-Forwarded-For."
        )
    client = user_or_ip(request)
    usage = cache_call(
        get_usage,
        request,
        group=limit.group,
        key=lambda group, request: client,
        rate=rate,
        increment=True,
    )
    if usage is None or not usage["should_limit"]:
        return 0  # within the limit, or Redis unavailable: fail open
    return max(1, usage["time_left"])


def _per(rate: str) -> str:
    """60/m -> "60 a minute"; 100/5m -> "100 every 5 minutes"."""
    count, multiple, unit = re.fullmatch(r"(\d+)/(\d*)([smhd])", rate).groups()
    name = {"s": "second", "m": "minute", "h": "hour", "d": "day"}[unit]
    if multiple and int(multiple) != 1:
        return f"{count} every {multiple} {name}s"
    return f"{count} {'an' if unit == 'h' else 'a'} {name}"


def _too_many(request, limit: RateLimit, rate: str, wait: int) -> HttpResponse:
    message = (
        f"Too many {limit.what}: each client may send {_per(rate)}. "
        f"Try again in {wait} second{'s' if wait != 1 else ''}."
    )
    error = TooManyRequests(message, limit.parameter, retry_after=wait)
    return error_response(request, error, heading=f"Too many {limit.what}")


# -- failed logins (django-axes) -------------------------------------------------------------


def login_locked_out(request, original_response=None, credentials=None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the answer at the login page (or the admin's) to a login refused
    after LOGIN_FAILURE_LIMIT failures of this account from this address."""
    from axes.helpers import get_client_username, get_cool_off

    username = get_client_username(request, credentials) or "this account"
    cool_off = get_cool_off(request)
    seconds = int(cool_off.total_seconds()) if cool_off else 0
    minutes = max(1, round(seconds / 60))
    message = (
        f"Too many failed logins for {username} from your address: try again in "
        f"{minutes} minute{'s' if minutes != 1 else ''}. Other accounts can still log in."
    )
    error = TooManyRequests(message, retry_after=seconds)
    return error_response(request, error, heading="Login paused")

"""Read replicas (DATABASE_REPLICA_URLS): which database answers a read.

Writes, and every read outside a read-only view, go to the primary ("default"). The views
that only read (search, the gallery, an image's page, the API's reads) run inside
`replica_reads()`: their queries go to one replica for the whole request (round robin), or
to the primary when none answers. A replica that fails to connect, or loses its connection
during a view, is skipped for DATABASE_REPLICA_RETRY_SECONDS by this process. A browser that
has just written (a request that wrote through the ORM) reads from the primary for
DATABASE_REPLICA_PIN_SECONDS, so the page after an upload or an edit shows it.
"""

import contextlib
import contextvars
import functools
import itertools
import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

from gallery.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

# Set by ReadYourWritesMiddleware: a browser holding it reads from the primary.
PIN_COOKIE = "vs_read_primary"
CONNECTION_ERRORS = (OperationalError, InterfaceError)
# Who the visitor is and what they may do is read from the primary even in a read-only view:
# a logout, a revoked staff flag or a deleted account counts at once, not after replay.
PRIMARY_APPS = {"auth", "sessions"}

# The alias this request's reads go to (None: Django's default, the primary).
_read_alias: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "replica_read_alias", default=None
)
# A request's record of whether it wrote (a list, so the router can mark it in place).
_request_writes: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "replica_request_writes", default=None
)

_turns = itertools.count()
_breakers: dict[str, CircuitBreaker] = {}


class ReplicaRouter:
    """DATABASE_ROUTERS entry: reads inside `replica_reads()` go to the chosen database, every
    write to the primary (also for a row read from a replica), migrations only to the primary."""

    def db_for_read(self, model, **hints):
        if model._meta.app_label in PRIMARY_APPS:
            return DEFAULT_DB_ALIAS  # None would follow a replica-read row's own database
        return _read_alias.get()

    def db_for_write(self, model, **hints):
        writes = _request_writes.get()
        if writes is not None:
            writes.append(model)
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # every alias holds the same data

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS


class _ReadConnection:
    """`django.db.connection` for raw SQL, but the connection this request reads from."""

    @property
    def alias(self) -> str:
        return _read_alias.get() or DEFAULT_DB_ALIAS

    def __getattr__(self, name):
        return getattr(connections[self.alias], name)


read_connection = _ReadConnection()


def _breaker(alias: str) -> CircuitBreaker:
    # setdefault: two threads that find none share the one that is stored.
    return _breakers.get(alias) or _breakers.setdefault(
        alias, CircuitBreaker(lambda: settings.DATABASE_REPLICA_RETRY_SECONDS)
    )


def is_down(alias: str) -> bool:
    """Whether this process skips the replica `alias` for now (it failed recently)."""
    return _breaker(alias).is_open


def mark_down(alias: str, error: Exception) -> None:
    newly_down = _breaker(alias).trip()
    with contextlib.suppress(*CONNECTION_ERRORS):
        connections[alias].close()
    if newly_down:
        logger.warning(
            "Read replica %s does not answer (%s); reading from the others or the primary for %d s",
            alias,
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
            settings.DATABASE_REPLICA_RETRY_SECONDS,
        )


def forget_down_replicas() -> None:
    """Try every replica again at the next read (tests; a replica known to be back)."""
    for breaker in list(_breakers.values()):
        breaker.reset()


def _candidates(skip: str | None = None) -> list[str]:
    """The replicas to try, in this turn's round-robin order, then the primary."""
    replicas = [alias for alias in settings.DATABASE_REPLICAS if alias != skip]
    if replicas:
        start = next(_turns) % len(replicas)
        replicas = replicas[start:] + replicas[:start]
    return [alias for alias in replicas if not is_down(alias)] + [DEFAULT_DB_ALIAS]


def _answers(alias: str) -> bool:
    """Connect now, so a replica that is down is found before the view runs a query.
    Replicas keep no connection between requests (CONN_MAX_AGE 0): libpq's connect_timeout
    covers the whole start-up, so one that accepts connections but never answers (stopped,
    overloaded) costs at most that long once per DATABASE_REPLICA_RETRY_SECONDS."""
    try:
        connections[alias].ensure_connection()
    except CONNECTION_ERRORS as error:
        mark_down(alias, error)
        return False
    return True


@contextlib.contextmanager
def replica_reads(*, skip: str | None = None):
    """Reads inside go to a replica that answers (round robin), else to the primary; yields
    the alias chosen. Writes inside still go to the primary."""
    alias = next(
        alias for alias in _candidates(skip) if alias == DEFAULT_DB_ALIAS or _answers(alias)
    )
    token = _read_alias.set(alias)
    try:
        yield alias
    finally:
        _read_alias.reset(token)


def _connection_lost(alias: str) -> bool:
    raw = connections[alias].connection
    return raw is None or raw.closed or getattr(raw, "broken", False)


def reads_from_replica(view):
    """Run a view that only reads against a replica (see `replica_reads`). A view that fails
    with a database error on a replica runs once more on the next one or the primary (it only
    reads, so running it twice changes nothing); a replica that lost its connection is
    skipped from then on."""

    @functools.wraps(view)
    def read_only_view(request, *args, **kwargs):
        if not settings.DATABASE_REPLICAS or PIN_COOKIE in request.COOKIES:
            return view(request, *args, **kwargs)
        with replica_reads() as alias:
            if alias == DEFAULT_DB_ALIAS:
                return view(request, *args, **kwargs)
            try:
                return view(request, *args, **kwargs)
            except CONNECTION_ERRORS as error:
                if _connection_lost(alias):
                    mark_down(alias, error)
                else:  # a query the replica refused (e.g. a conflict with WAL replay)
                    logger.warning("Read replica %s failed a read (%s); retrying", alias, error)
        with replica_reads(skip=alias):
            return view(request, *args, **kwargs)

    return read_only_view


class ReadYourWritesMiddleware:
    """After a request that wrote, the browser reads from the primary for a few seconds, so
    the page it goes to next (the image after an edit, the gallery after a delete) shows the
    change even before the replicas have replayed it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not settings.DATABASE_REPLICAS:
            return self.get_response(request)
        writes = []
        token = _request_writes.set(writes)
        try:
            response = self.get_response(request)
        finally:
            _request_writes.reset(token)
        if writes:
            response.set_cookie(
                PIN_COOKIE,
                "1",
                max_age=settings.DATABASE_REPLICA_PIN_SECONDS,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        return response

"""The one error type a person or a script is shown: what went wrong, which parameter (if one
did) and the HTTP status and headers that say so. Services, selectors, views, middleware and the
API raise these; gallery/web/responses.py renders them as the JSON error or the short page.

Below every other module of the project: it imports nothing of it.
"""

from django.core.exceptions import PermissionDenied


class UserError(Exception):
    """Something the caller can read and act on. `message` is shown as is; `parameter` names the
    input at fault, when one is."""

    status = 400
    default_headers: dict[str, str] = {}

    def __init__(self, message: str, parameter: str | None = None, *, headers=None, status=None):
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.headers = {**self.default_headers, **(headers or {})}
        if status is not None:
            self.status = status

    def as_json(self) -> dict:
        return {"error": {"parameter": self.parameter, "message": self.message}}


class InvalidInput(UserError):
    """The request (or a command's argument) cannot be used as given: 400."""


class NotLoggedIn(UserError):
    """An account is needed: 401, with the Bearer challenge."""

    status = 401
    default_headers = {"WWW-Authenticate": 'Bearer realm="visual-search"'}


class NotAllowed(UserError, PermissionDenied):
    """The caller may not do this: 403. A PermissionDenied too, so Django's own checks and
    code that expects one treat it alike."""

    status = 403


class NotFound(UserError):
    """No such thing: 404."""

    status = 404


class RetryLater(UserError):
    """An answer that tells when to ask again (Retry-After, in seconds)."""

    def __init__(self, message: str, parameter: str | None = None, *, retry_after: int, **kw):
        super().__init__(message, parameter, **kw)
        self.retry_after = max(1, int(retry_after))
        self.headers["Retry-After"] = str(self.retry_after)


class TooManyRequests(RetryLater):
    """Over a rate limit: 429 with Retry-After."""

    status = 429


class Unavailable(RetryLater):
    """A service the answer needs is down or not set up: 503 with Retry-After."""

    status = 503

    def __init__(self, message: str, parameter: str | None = None, *, retry_after: int = 10, **kw):
        super().__init__(message, parameter, retry_after=retry_after, **kw)

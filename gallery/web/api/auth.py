"""Who is calling the API: an API token, or a logged-in browser's session."""

from ninja.security import HttpBearer, SessionAuth


class TokenAuth(HttpBearer):
    """`Authorization: Bearer <token>`: checked (and a bad one refused) by the access
    middleware before any view runs; here it only names the user."""

    def authenticate(self, request, token):
        api_token = getattr(request, "api_token", None)
        return api_token.user if api_token is not None else None


class BrowserSession(SessionAuth):
    """A logged-in browser's session cookie; a change needs the CSRF token too, since a
    cross-site form would carry the cookie."""

    def __call__(self, request):
        # Anonymous is "log in" (401), not a CSRF failure (403).
        if not request.user.is_authenticated:
            return None
        return super().__call__(request)

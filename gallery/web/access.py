"""Who a request comes from (a session or an API token) and whether SITE_ACCESS lets it in.

private (the default): every page, media file and API answer needs a logged-in user or an
API token; anonymous requests are sent to the login page (pages, media) or answered 401
(`/api/...`). public: anyone may browse, search and see media; uploading and changing need
an account, which the upload view and the API's write endpoints require themselves.
Always open: `/healthz`, `/favicon.ico`, the login and logout pages, static files and
`/admin/` (which has its own login and never accepts API tokens).
"""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.urls import reverse

from gallery.accounts import tokens
from gallery.errors import NotLoggedIn
from gallery.web.middleware import DATABASE_ERRORS, database_unavailable_response
from gallery.web.responses import error_response

LOGIN_NEEDED = "Log in, or send an API token: Authorization: Bearer <token>."
BAD_TOKEN = "This API token is not valid: it was revoked, mistyped, or its user is inactive."


def bearer_secret(request) -> str | None:
    """The secret of an `Authorization: Bearer ...` header; None without one."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip()


def is_api_path(path: str) -> bool:
    return path.startswith("/api/")


class SiteAccessMiddleware:
    """After AuthenticationMiddleware: a valid bearer token makes its user the request's
    user; an invalid one is refused (401) wherever it is sent; then SITE_ACCESS applies."""

    def __init__(self, get_response):
        self.get_response = get_response
        self._open_paths: tuple[str, ...] | None = None
        self._admin_path = ""

    def __call__(self, request):
        try:
            refusal = self._refusal(request)
        except DATABASE_ERRORS as error:
            # Sessions and tokens live in the database: a readable 503, not a bare 500.
            return database_unavailable_response(request, error)
        return refusal or self.get_response(request)

    def _refusal(self, request):
        self._resolve_paths()
        path = request.path
        secret = bearer_secret(request)
        if secret is not None and not path.startswith(self._admin_path):
            token = tokens.token_for_secret(secret)
            if token is None:
                # A bearer token comes from a script, whatever the address: JSON.
                return error_response(request, NotLoggedIn(BAD_TOKEN), as_json=True)
            _authenticate(request, token)
            return None
        if settings.SITE_ACCESS == "public" or path.startswith(self._open_paths):
            return None
        if request.user.is_authenticated:
            return None
        if is_api_path(path):
            return error_response(request, NotLoggedIn(LOGIN_NEEDED))
        return redirect_to_login(request.get_full_path())

    def _resolve_paths(self) -> None:
        if self._open_paths is None:
            self._admin_path = reverse("admin:index")
            self._open_paths = (
                # Browsers fetch it beside any page, without cookies on a first visit: sent to
                # the login page, its answer's new CSRF cookie replaced the page's, and the
                # next form post failed.
                "/favicon.ico",
                reverse("healthz"),
                reverse("login"),
                reverse("logout"),
                settings.STATIC_URL,
                self._admin_path,
            )


def _authenticate(request, token) -> None:
    user = token.user
    request.user = user
    request.api_token = token

    async def auser():
        return user

    request.auser = auser
    # Browsers never send an Authorization header on their own, so a cross-site form cannot
    # forge a token request: CSRF protection is for cookies (sessions) only.
    request._dont_enforce_csrf_checks = True

"""How the web layer answers an error: the one place that decides JSON or a page, and renders
either from a gallery.errors.UserError. Middleware, rate limits, access checks, views and the
API's exception handlers all answer through `error_response`."""

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.template.loader import render_to_string

from gallery.errors import InvalidInput, NotAllowed, NotFound, UserError

# Paths that always answer JSON: the APIs, and the health check that `up`, Compose and load
# balancers read.
JSON_PATHS = ("/api/", "/healthz")

HEADINGS = {
    400: "That did not work",
    401: "Log in first",
    403: "Not allowed",
    404: "Not found",
    429: "Too many requests",
    503: "Temporarily unavailable",
}
TEMPLATES = {
    403: "403.html",
    404: "404.html",
    429: "too_many_requests.html",
    # Rendered without the request: its context processors would reach for the database.
    503: "unavailable.html",
}


def wants_json(request) -> bool:
    """JSON for the API paths and for clients that ask for JSON rather than a page."""
    if request.path.startswith(JSON_PATHS):
        return True
    return request.accepts("application/json") and not request.accepts("text/html")


def error_response(
    request, error: UserError, *, heading: str = "", as_json: bool | None = None
) -> HttpResponse:
    """The answer to `error`: `{"error": {"parameter", "message"}}` for JSON clients (or where
    `as_json` says so), else a short page with `heading` (by default one for the status)."""
    if wants_json(request) if as_json is None else as_json:
        return JsonResponse(error.as_json(), status=error.status, headers=error.headers)
    context = {
        "heading": heading or HEADINGS.get(error.status, HEADINGS[400]),
        "message": error.message,
        "exception": error.message,
    }
    page = render_to_string(
        TEMPLATES.get(error.status, "error.html"),
        context,
        request=None if error.status == 503 else request,
    )
    return HttpResponse(page, status=error.status, headers=error.headers)


# Django's own error handlers (searchsite/urls.py), so a bad body, an unknown address or a
# crash is answered in the same shape: JSON on the API, a page of the site elsewhere.


def bad_request(request, exception=None):
    # Only the body's own faults are described: other 400s (a path outside the media folder,
    # an unknown Host) carry server details in their text.
    detail = str(exception).strip() if isinstance(exception, BODY_FAULTS) else ""
    message = "The request could not be read" + (f": {detail}." if detail else ".")
    return error_response(request, InvalidInput(message))


BODY_FAULTS = (MultiPartParserError, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def not_found(request, exception=None):
    return error_response(request, NotFound("There is nothing at this address."))


def permission_denied(request, exception=None):
    return error_response(request, NotAllowed(str(exception or "") or "You may not do that."))


def server_error(request):
    # Rendered without the request: whatever failed may be what its context needs.
    if wants_json(request):
        return JsonResponse(UserError(SERVER_ERROR, status=500).as_json(), status=500)
    return HttpResponse(render_to_string("500.html", {"message": SERVER_ERROR}), status=500)


SERVER_ERROR = "Something went wrong on our side; it has been logged. Please try again."

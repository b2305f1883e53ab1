"""The API's exception handlers: every refusal, ninja's own included, becomes a
gallery.errors.UserError answered by gallery/web/responses.py, in the same words the pages use
for the same mistake."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from gallery.errors import InvalidInput, NotAllowed, NotFound, NotLoggedIn, UserError
from gallery.web.access import LOGIN_NEEDED
from gallery.web.api.schemas import PRINTABLE, TAG_NAME
from gallery.web.responses import error_response

PATTERN_MESSAGES = {
    PRINTABLE: "Remove the control characters (such as NUL) from this text.",
    TAG_NAME: "A tag name cannot contain a comma or control characters (such as NUL).",
}


def _message(error: dict) -> str:
    """A pydantic error in the words of the site's forms (Django's own messages)."""
    kind, context = error.get("type", ""), error.get("ctx") or {}
    if kind == "missing":
        return "This field is required."
    if kind in ("float_parsing", "float_type"):
        return "Enter a number."
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "Enter a whole number."
    if kind.startswith(("date_", "datetime_")):
        return "Enter a valid date. Dates are written YYYY-MM-DD."
    if kind == "literal_error":
        return f"Select a valid choice. It must be {context.get('expected', 'one of the choices')}."
    if kind == "string_too_long":
        given = error.get("input")
        length = f" is {len(given):,} characters long;" if isinstance(given, str) else ""
        return f"This{length} the limit is {context.get('max_length', 0):,} characters."
    if kind == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get(context.get("pattern"), "This is not in the expected form.")
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = context.get("ge", context.get("le"))
        direction = "greater" if kind == "greater_than_equal" else "less"
        return f"Ensure this value is {direction} than or equal to {bound}."
    return str(error.get("msg", "Invalid request.")).removeprefix("Value error, ")


def _parameter(error: dict) -> str | None:
    # loc is ("query", "page_size"), or ("body", <argument>, "tags", <union branch>...).
    source, *names = [part for part in error.get("loc", ()) if isinstance(part, str)] or [""]
    if source == "body":
        names = names[1:]
    return names[0] if names else None


def invalid_input(error: ValidationError) -> InvalidInput:
    errors = error.errors or [{}]
    first = errors[0]
    # A value that may be of several types (a list of tags or a string) fails each branch:
    # say what is wrong with the branch it was, not that it is not the other.
    same = [each for each in errors if _parameter(each) == _parameter(first)]
    telling = [
        each for each in same if not each.get("type", "").endswith(("_type", "none_required"))
    ]
    chosen = telling[0] if telling else first
    return InvalidInput(_message(chosen), _parameter(chosen))


def install_error_handlers(api: NinjaAPI) -> None:
    def answer(request, error: UserError):
        return error_response(request, error, as_json=True)

    handlers = {
        UserError: lambda request, error: answer(request, error),
        ValidationError: lambda request, error: answer(request, invalid_input(error)),
        AuthenticationError: lambda request, error: answer(request, NotLoggedIn(LOGIN_NEEDED)),
        HttpError: lambda request, error: answer(
            request, UserError(str(error), status=error.status_code)
        ),
        PermissionDenied: lambda request, error: answer(
            request, NotAllowed(str(error) or "You may not change this image.")
        ),
        Http404: lambda request, error: answer(request, NotFound("No such image.")),
    }
    for kind, handler in handlers.items():
        api.add_exception_handler(kind, handler)

"""The JSON API (django-ninja): /api/v1/ (images and search) and the first, unversioned
/api/search, served by the same search operations.

Who may call it: reads follow SITE_ACCESS (gallery/web/access.py answers 401 in a private
library); writes need an account: an API token (`Authorization: Bearer <token>`, no CSRF) or
a logged-in browser's session (CSRF-checked). Changing an image also needs the right to
change it (gallery/library/permissions.py), else 403. Every error is
`{"error": {"parameter": ..., "message": ...}}` (gallery/web/api/errors.py).
"""

from ninja import NinjaAPI

from gallery.web.api import images, search
from gallery.web.api.auth import BrowserSession, TokenAuth
from gallery.web.api.errors import install_error_handlers

api = NinjaAPI(
    title="Visual Search API",
    version="1",
    description=(
        "Upload, read, edit, delete and list images, and search them by text, by an image "
        "or by both. Send an API token (`Authorization: Bearer <token>`; create one on "
        "/account/) or use a logged-in browser session (changes then need the CSRF token). "
        "Reading needs an account too when the site runs with `SITE_ACCESS=private`. "
        'Errors are `{"error": {"parameter": ..., "message": ...}}`.'
    ),
    urls_namespace="api_v1",
    auth=[TokenAuth(), BrowserSession()],
)
api.add_router("", images.router)
api.add_router("", search.router)

# The first search address, /api/search: the same operations, no documents of its own.
first_api = NinjaAPI(urls_namespace="api", docs_url=None, openapi_url=None)
first_api.add_router("", search.router)

for each in (api, first_api):
    install_error_handlers(each)


def first_search_view():
    """The view of /api/search (GET and POST), to be routed by the name it always had."""
    return next(url.callback for url in first_api.urls[0] if str(url.pattern) == "search")

"""The versioned JSON API, /api/v1/ (django-ninja): upload, read, edit, delete and list
images, and search. Endpoints are thin: the forms, services and selectors the pages use do
the work, so both answer alike.

Who may call it: reads follow SITE_ACCESS (gallery/web/access.py answers 401 in a private
library); writes need an account: an API token (`Authorization: Bearer <token>`, no CSRF) or
a logged-in browser's session (CSRF-checked). Changing an image also needs the right to
change it (gallery/library/permissions.py), else 403. Every error is
`{"error": {"parameter": ..., "message": ...}}`.
"""

from datetime import date, datetime
from typing import Literal

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import File, Form, NinjaAPI, Query, Schema, Status, UploadedFile
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer, SessionAuth
from pydantic import Field, field_validator

from gallery.library import ingest, lifecycle, permissions, selectors
from gallery.library.tags import InvalidTagName, clean_tag_names, parse_tag_names
from gallery.models import Image
from gallery.replicas import reads_from_replica
from gallery.web import access, views
from gallery.web.forms import GalleryFilterForm, UploadForm

DEFAULT_PAGE_SIZE = 48
MAX_PAGE_SIZE = 100


# -- who is calling ----------------------------------------------------------------------------


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


def _error(request, status: int, message: str, parameter: str | None = None):
    return api.create_response(
        request, {"error": {"parameter": parameter, "message": message}}, status=status
    )


@api.exception_handler(ValidationError)
def _invalid(request, error: ValidationError):
    first = error.errors[0] if error.errors else {}
    # loc is ("query", "page_size"), or ("body", <argument>, "tags", <union branch>...).
    source, *names = [part for part in first.get("loc", ()) if isinstance(part, str)] or [""]
    if source == "body":
        names = names[1:]
    parameter = names[0] if names else None
    message = str(first.get("msg", "Invalid request.")).removeprefix("Value error, ")
    return _error(request, 400, message, parameter)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, error):
    response = _error(request, 401, access.LOGIN_NEEDED)
    response["WWW-Authenticate"] = 'Bearer realm="visual-search"'
    return response


@api.exception_handler(HttpError)
def _http_error(request, error: HttpError):
    return _error(request, error.status_code, str(error))


@api.exception_handler(PermissionDenied)
def _forbidden(request, error):
    return _error(request, 403, str(error) or "You may not change this image.")


@api.exception_handler(Http404)
def _not_found(request, error):
    return _error(request, 404, "No such image.")


@api.exception_handler(lifecycle.LibraryError)
def _refused(request, error):
    return _error(request, 400, str(error))


# -- what it answers ---------------------------------------------------------------------------


class ErrorDetail(Schema):
    parameter: str | None = Field(description="The parameter at fault, when one is.")
    message: str


class ErrorOut(Schema):
    error: ErrorDetail


class ImageUrls(Schema):
    original: str
    thumbnail: str | None
    page: str = Field(description="The image's page on the site.")
    api: str
    more_like_this: str = Field(description="A search for similar images (this API).")


class ImageOut(Schema):
    id: int
    caption: str
    tags: list[str]
    status: Literal["pending", "indexed", "failed"] = Field(
        description="Indexing: pending (waiting for its vector), indexed or failed."
    )
    status_error: str = Field(description="Why indexing failed, for a failed image.")
    original_filename: str
    width: int
    height: int
    format: str
    byte_size: int
    taken_at: datetime
    taken_on: date = Field(description="The photo's own day (as date filters compare it).")
    uploaded_at: datetime
    indexed_at: datetime | None
    ocr_text: str = Field(
        description="Text read inside the image (OCR), one line per line found; empty when "
        "none was found or it has not been read yet."
    )
    uploaded_by: str | None
    can_change: bool = Field(description="Whether the caller may edit or delete it.")
    urls: ImageUrls


class ImagePage(Schema):
    results: list[ImageOut]
    count: int
    page: int
    page_size: int
    has_next: bool
    next: str | None
    previous: str | None


class UploadedImage(Schema):
    id: int
    status: str
    thumbnail_url: str | None
    api_url: str


class UploadResult(Schema):
    filename: str
    ok: bool
    created: bool = Field(description="False when the same content was already stored.")
    error: str = Field(description="Why the file was refused (nothing of it is kept).")
    notes: list[str]
    image: UploadedImage | None


class UploadOut(Schema):
    results: list[UploadResult] = Field(description="One per file, in the order sent.")
    image_ids: list[int] = Field(description="Every stored file's image, new or not.")
    created_ids: list[int] = Field(description="The images this upload created.")


class SearchHit(Schema):
    id: int
    score: float = Field(
        description="What orders the results: the cosine similarity (semantic), the "
        "reciprocal rank fusion 1/(60 + semantic_rank) + 1/(60 + keyword_rank) (hybrid) or "
        "PostgreSQL's ts_rank_cd (keyword)."
    )
    matched_by: list[Literal["semantic", "keyword"]] = Field(
        description="The rankings the hit is in."
    )
    semantic_rank: int | None = Field(description="Its rank by meaning (vector similarity).")
    keyword_rank: int | None = Field(description="Its rank by the words it has.")
    similarity: float | None = Field(
        description="Cosine similarity to the query vector (null when not computed)."
    )
    caption: str
    tags: list[str]
    taken_at: datetime
    taken_on: date
    uploaded_at: datetime
    width: int
    height: int
    thumbnail_url: str | None
    original_url: str
    detail_url: str
    similar_ids: list[int] = Field(
        description="Near-duplicates of this hit on the same page, folded into it (empty "
        "with duplicates=show)."
    )


class SearchOut(Schema):
    results: list[SearchHit]
    page: int
    page_size: int
    has_next: bool
    next: str | None
    previous: str | None
    image_token: str | None = Field(description="Keeps a posted query image for paging.")
    mode: Literal["semantic", "keyword", "hybrid"] = Field(description="The mode it ran in.")
    sorted_among: int | None = Field(
        description="Sorted by date: how many results the date order covers, all of them "
        "with min_score, else the SEARCH_DATE_SORT_POOL best matches (hybrid: the fused "
        "ranking). Null when sorted by relevance."
    )
    best_score: float | None
    confident: bool
    confidence_threshold: float
    duplicates: Literal["collapse", "show"] = Field(
        description="Whether near-duplicates on the page were folded (`similar_ids`)."
    )
    message: str


class ImageChange(Schema):
    """The fields to change; a field left out keeps its value."""

    caption: str | None = Field(None, max_length=lifecycle.MAX_CAPTION_LENGTH)
    tags: list[str] | str | None = Field(
        None, description="Replaces the image's tags: a list of names or comma-separated."
    )

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags):
        if tags is None:
            return None
        try:
            return parse_tag_names(tags) if isinstance(tags, str) else clean_tag_names(tags)
        except InvalidTagName as error:
            raise ValueError(str(error)) from None


class ImageFilters(Schema):
    status: Literal["pending", "indexed", "failed"] | None = None
    tag: str = Field("", description="Only images with this tag (any case).")
    after: date | None = Field(None, description="Taken on or after this day (YYYY-MM-DD).")
    before: date | None = Field(None, description="Taken on or before this day (YYYY-MM-DD).")
    page: int = Field(1, ge=1)
    page_size: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)


class SearchParams(Schema):
    """What /api/search takes; checked by the search page's own form (same messages)."""

    q: str = Field("", description="Text; `+`, `-` and weights like `2:sunset` combine terms.")
    like: str = Field("", description="An image id: images similar to it.")
    tags_any: str = Field("", description="Comma-separated: images with any of these tags.")
    tags_all: str = Field("", description="Comma-separated: images with all of these tags.")
    tags_not: str = Field("", description="Comma-separated: images with none of these tags.")
    after: str = Field("", description="Taken on or after this day (YYYY-MM-DD).")
    before: str = Field("", description="Taken on or before this day (YYYY-MM-DD).")
    min_score: str = Field(
        "",
        description="A cosine similarity (-1 to 1): less similar images leave the semantic "
        "ranking (in hybrid mode a keyword match still shows them; refused in keyword mode).",
    )
    sort: str = Field("", description="`relevance` (default) or `date`.")
    mode: str = Field(
        "",
        description="`hybrid` (meaning and words, fused by rank; the default with words), "
        "`semantic` (meaning: CLIP vectors; the default without words) or `keyword` (the "
        "words in captions, tags, file names and text read in images).",
    )
    page: str = Field("", description="Page number, from 1.")
    page_size: str = Field("", description=f"1-100 (default {settings.SEARCH_PAGE_SIZE}).")
    image_token: str = Field("", description="A query image kept from an earlier POST.")
    duplicates: str = Field(
        "",
        description="`collapse` (default): near-duplicates on a page fold into the first of "
        "them, listed in its `similar_ids`; `show`: every hit on its own.",
    )
    more: str = Field(
        "",
        description="Relevance feedback: comma-separated ids of images marked relevant; the "
        "query moves towards them (Rocchio). Alone, it searches for images like them.",
    )
    less: str = Field(
        "",
        description="Relevance feedback: comma-separated ids of images marked not relevant; "
        "the query moves away from them.",
    )


def _absolute(request, url: str) -> str:
    return request.build_absolute_uri(url)


def _image_json(request, image: Image) -> dict:
    api_url = reverse("api_v1:image", args=[image.pk])
    return {
        "id": image.pk,
        "caption": image.caption,
        "tags": [tag.name for tag in image.tags.all()],
        "status": image.status,
        "status_error": image.status_error,
        "original_filename": image.original_filename,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "byte_size": image.byte_size,
        "taken_at": image.taken_at,
        "taken_on": image.taken_day,
        "uploaded_at": image.uploaded_at,
        "indexed_at": image.indexed_at,
        "ocr_text": image.ocr_text,
        "uploaded_by": image.uploaded_by.get_username() if image.uploaded_by else None,
        "can_change": permissions.can_change_image(request.user, image),
        "urls": {
            "original": _absolute(request, image.file.url),
            "thumbnail": _absolute(request, image.thumbnail.url) if image.thumbnail else None,
            "page": _absolute(request, reverse("image_detail", args=[image.pk])),
            "api": _absolute(request, api_url),
            "more_like_this": _absolute(request, reverse("api_v1:search") + f"?like={image.pk}"),
        },
    }


def _image(pk: int) -> Image:
    return get_object_or_404(
        Image.objects.select_related("uploaded_by").prefetch_related("tags"), pk=pk
    )


# -- images ------------------------------------------------------------------------------------


@api.post(
    "/images",
    response={200: UploadOut, 201: UploadOut, 400: ErrorOut, 401: ErrorOut},
    url_name="images",
    summary="Upload images",
)
def upload_images(
    request,
    files: File[list[UploadedFile]] = None,
    tags: Form[str] = "",
    caption: Form[str] = "",
):
    """Upload one or more images (multipart `files`, repeated), with comma-separated `tags`
    and a `caption` for every file, exactly as the upload page does: the same checks and
    limits (MAX_UPLOAD_BYTES, MAX_IMAGE_PIXELS), each file's own result (a refused file
    says why and leaves nothing behind), the same content stored once (its tags merged).
    New images are queued for indexing. 201 when something new was stored, else 200."""
    form = UploadForm(
        request.POST,
        uploaded_files=request.FILES.getlist("files"),
        oversized=getattr(request, "oversized_uploads", []),
    )
    if not form.is_valid():
        name, message = _first_error(form, whole_form="files")
        return Status(400, {"error": {"parameter": name, "message": message}})
    results = ingest.ingest_uploads(
        files=form.uploaded_files,
        oversized_names=form.oversized,
        uploaded_by=request.auth,
        tag_names=form.cleaned_data["tags"],
        caption=form.cleaned_data["caption"],
    )
    body = {
        "results": [_upload_result_json(request, result) for result in results],
        "image_ids": [result.image.pk for result in results if result.ok],
        "created_ids": [result.image.pk for result in results if result.created],
    }
    return Status(201 if body["created_ids"] else 200, body)


def _first_error(form, *, whole_form: str | None = None) -> tuple[str | None, str]:
    """A form's first error as (parameter, message); `whole_form` names a form-wide one."""
    name, errors = next(iter(form.errors.items()))
    return (whole_form if name == "__all__" else name), " ".join(errors)


def _upload_result_json(request, result: ingest.IngestResult) -> dict:
    image = result.image
    return {
        "filename": result.filename,
        "ok": result.ok,
        "created": result.created,
        "error": result.error,
        "notes": result.notes,
        "image": {
            "id": image.pk,
            "status": image.status,
            "thumbnail_url": _absolute(request, image.thumbnail.url) if image.thumbnail else None,
            "api_url": _absolute(request, reverse("api_v1:image", args=[image.pk])),
        }
        if image is not None
        else None,
    }


@api.get(
    "/images",
    response={200: ImagePage, 400: ErrorOut, 401: ErrorOut},
    auth=None,
    url_name="images",
    summary="List images",
)
@reads_from_replica
def list_images(request, filters: Query[ImageFilters]):
    """The gallery's listing, newest first, with its filters: indexing `status`, one `tag`
    and the days taken (`after`, `before`, inclusive)."""
    # Typed above for the schema; the gallery's own filter form applies its rules.
    gallery_filters = GalleryFilterForm(request.GET)
    if not gallery_filters.is_valid():
        name, message = _first_error(gallery_filters)
        return Status(400, {"error": {"parameter": name, "message": message}})
    images = selectors.browse_images(**gallery_filters.filters()).select_related("uploaded_by")
    start = (filters.page - 1) * filters.page_size
    rows = list(images[start : start + filters.page_size + 1])
    has_next = len(rows) > filters.page_size
    base = _absolute(request, reverse("api_v1:images")) + "?"
    return {
        "results": [_image_json(request, image) for image in rows[: filters.page_size]],
        "count": images.count(),
        "page": filters.page,
        "page_size": filters.page_size,
        "has_next": has_next,
        "next": base + _list_query(request, filters.page + 1) if has_next else None,
        "previous": base + _list_query(request, filters.page - 1) if filters.page > 1 else None,
    }


def _list_query(request, page: int) -> str:
    query = request.GET.copy()
    query["page"] = str(page)
    return query.urlencode()


@api.get(
    "/images/{int:image_id}",
    response={200: ImageOut, 401: ErrorOut, 404: ErrorOut},
    auth=None,
    url_name="image",
    summary="Get an image",
)
@reads_from_replica
def get_image(request, image_id: int):
    """An image's metadata, tags, indexing status and addresses."""
    return _image_json(request, _image(image_id))


@api.patch(
    "/images/{int:image_id}",
    response={200: ImageOut, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Edit an image's caption and tags",
)
def edit_image(request, image_id: int, change: ImageChange):
    """Set the caption and/or replace the tags (JSON body); a field left out is kept.
    Uploaders change their own images, staff any."""
    image = _image(image_id)
    lifecycle.edit_image(
        image=image,
        caption=image.caption if change.caption is None else change.caption,
        tags=[tag.name for tag in image.tags.all()] if change.tags is None else change.tags,
        by=request.auth,
    )
    return _image_json(request, _image(image_id))


@api.delete(
    "/images/{int:image_id}",
    response={204: None, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Delete an image",
)
def delete_image(request, image_id: int):
    """Delete the image with its vectors; its files are removed after the delete commits.
    Uploaders delete their own images, staff any."""
    lifecycle.delete_images(images=[_image(image_id)], by=request.auth)
    return Status(204, None)


# -- search ------------------------------------------------------------------------------------


SEARCH_DOC = """Search by text (`q`), by an image in the library (`like`), by a query image
(POST a multipart `image` file), or any of them together, narrowed by tags and the days
taken. The same parameters and answers as `/api/search` (the first, unversioned address),
with paging links to this address. A posted image is kept for 24 hours: `next` and
`previous` carry it as `image_token`. `more` and `less` (image ids) refine a search by
relevance feedback; the links carry them too."""


@api.get(
    "/search",
    response={200: SearchOut, 400: ErrorOut, 401: ErrorOut, 429: ErrorOut, 503: ErrorOut},
    auth=None,
    url_name="search",
    summary="Search (query parameters)",
    description=SEARCH_DOC,
)
def search(request, params: Query[SearchParams]):
    # The parameters are declared for the schema; the search page's form checks them.
    return views.search_json_response(request, url_name="api_v1:search")


@api.post(
    "/search",
    response={200: SearchOut, 400: ErrorOut, 401: ErrorOut, 429: ErrorOut, 503: ErrorOut},
    auth=None,
    summary="Search (form fields, with a query image)",
    description=SEARCH_DOC,
)
def search_with_image(request, params: Form[SearchParams], image: File[UploadedFile] = None):
    return views.search_json_response(request, url_name="api_v1:search")

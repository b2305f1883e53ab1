"""What the API takes and answers, as typed schemas: the OpenAPI document is generated from
them, and ninja enforces them, so what the document says is what is checked."""

import re
from datetime import date, datetime
from typing import Annotated, Literal

from django.conf import settings
from ninja import Schema
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    TypeAdapter,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)

from gallery.library.lifecycle import MAX_CAPTION_LENGTH
from gallery.library.selectors import GALLERY_PAGE_SIZE, MAX_GALLERY_PAGE
from gallery.library.tags import (
    MAX_TAG_FIELD_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS_AT_ONCE,
    clean_tag_names,
    parse_tag_names,
)
from gallery.search.query_syntax import MAX_QUERY_LENGTH
from gallery.search.request import (
    MARKED_IMAGES_PATTERN,
    MODES,
    SORTS,
    marked_image_ids,
    tag_filter_names,
)

# -- parameter types ---------------------------------------------------------------------------


def _blank_is_absent(value, handler):
    # Forms and scripts send `after=` for "no date": the same as leaving it out.
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return handler(value)


def OptionalParam(kind, *, description: str = "", **bounds):
    """An optional parameter of `kind` within `bounds` (ge, le). Left out or empty, it is None:
    the document says "the value, or empty" (a query string or a form has no null)."""
    value = Annotated[kind, Field(**bounds)]
    stated = {"anyOf": [TypeAdapter(value).json_schema(), {"type": "string", "maxLength": 0}]}
    return Annotated[
        value,
        WrapValidator(_blank_is_absent),
        WithJsonSchema(stated),
        Field(None, description=description or None),
    ]


def _iso_day(value):
    """Only YYYY-MM-DD (pydantic would also read a number as a Unix time)."""
    if isinstance(value, date) or (isinstance(value, str) and re.fullmatch(ISO_DAY, value)):
        return value
    raise ValueError(DATE_FORMAT)


ISO_DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
DATE_FORMAT = "Enter a valid date. Dates are written YYYY-MM-DD."
Day = Annotated[date, BeforeValidator(_iso_day)]

# Text without control characters (tab and line breaks allowed): PostgreSQL stores no NUL,
# and a C1 control character is never meant.
PRINTABLE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
# A tag name: no control characters and no commas (filters take comma-separated names).
TAG_NAME = r"^[^,\x00-\x1f\x7f-\x9f]*$"
Text = Annotated[str, Field(pattern=PRINTABLE)]
TagName = Annotated[str, Field(max_length=MAX_TAG_LENGTH, pattern=TAG_NAME)]

ImageIds = Annotated[
    str,
    AfterValidator(marked_image_ids),
    WithJsonSchema({"type": "string", "pattern": MARKED_IMAGES_PATTERN}),
]
TagFilter = Annotated[
    str,
    Field(max_length=MAX_TAG_FIELD_LENGTH, pattern=PRINTABLE),
    AfterValidator(tag_filter_names),
    WithJsonSchema({"type": "string", "maxLength": MAX_TAG_FIELD_LENGTH, "pattern": PRINTABLE}),
]


def _tag_names(tags):
    if tags is None:
        return None
    return parse_tag_names(tags) if isinstance(tags, str) else clean_tag_names(tags)


# -- errors ------------------------------------------------------------------------------------


class ErrorDetail(Schema):
    parameter: str | None = Field(description="The parameter at fault, when one is.")
    message: str


class ErrorOut(Schema):
    error: ErrorDetail


# -- images ------------------------------------------------------------------------------------

Status = Literal["pending", "indexed", "failed"]


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
    status: Status = Field(
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
    status: Status
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


class ImageChange(Schema):
    """The fields to change; a field left out keeps its value."""

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data):
        # ninja's Schema reads attributes of anything it is given: a JSON array or string
        # would pass as a change of nothing.
        if not isinstance(getattr(data, "_obj", data), dict):  # ninja wraps it in a DjangoGetter
            raise ValueError('Send a JSON object, such as {"caption": "..."}.')
        return data

    caption: Text | None = Field(None, max_length=MAX_CAPTION_LENGTH)
    tags: Annotated[
        Annotated[list[TagName], Field(max_length=MAX_TAGS_AT_ONCE)]
        | Annotated[Text, Field(max_length=MAX_TAG_FIELD_LENGTH)]
        | None,
        AfterValidator(_tag_names),
    ] = Field(None, description="Replaces the image's tags: a list of names or comma-separated.")


class ImageFilters(Schema):
    status: OptionalParam(Status)
    tag: Text = Field("", max_length=64, description="Only images with this tag (any case).")
    after: OptionalParam(Day, description="Taken on or after this day (YYYY-MM-DD).")
    before: OptionalParam(Day, description="Taken on or before this day (YYYY-MM-DD).")
    page: int = Field(1, ge=1, le=MAX_GALLERY_PAGE)
    page_size: int = Field(GALLERY_PAGE_SIZE, ge=1, le=settings.SEARCH_MAX_PAGE_SIZE)


# -- search ------------------------------------------------------------------------------------


class SearchParams(Schema):
    """What a search takes: the same names as the search page's form."""

    q: Text = Field(
        "",
        max_length=MAX_QUERY_LENGTH,
        description="Text; `+`, `-` and weights like `2:sunset` combine terms.",
    )
    like: OptionalParam(int, ge=1, description="An image id: images similar to it.")
    tags_any: TagFilter = Field("", description="Comma-separated: images with any of these tags.")
    tags_all: TagFilter = Field("", description="Comma-separated: images with all of these tags.")
    tags_not: TagFilter = Field("", description="Comma-separated: images with none of these tags.")
    after: OptionalParam(Day, description="Taken on or after this day (YYYY-MM-DD).")
    before: OptionalParam(Day, description="Taken on or before this day (YYYY-MM-DD).")
    min_score: OptionalParam(
        float,
        ge=-1,
        le=1,
        description="A cosine similarity (-1 to 1): less similar images leave the semantic "
        "ranking (in hybrid mode a keyword match still shows them; refused in keyword mode).",
    )
    sort: OptionalParam(Literal[SORTS], description="`relevance` (default) or `date`.")
    mode: OptionalParam(
        Literal[MODES],
        description="`hybrid` (meaning and words, fused by rank; the default with words), "
        "`semantic` (meaning: CLIP vectors; the default without words) or `keyword` (the "
        "words in captions, tags, file names and text read in images).",
    )
    page: OptionalParam(
        int, ge=1, le=settings.SEARCH_MAX_RESULTS, description="Page number, from 1."
    )
    page_size: OptionalParam(
        int,
        ge=1,
        le=settings.SEARCH_MAX_PAGE_SIZE,
        description=f"Results a page (default {settings.SEARCH_PAGE_SIZE}).",
    )
    image_token: Text = Field(
        "", max_length=64, description="A query image kept from an earlier POST."
    )
    duplicates: OptionalParam(
        Literal["collapse", "show"],
        description="`collapse` (default): near-duplicates on a page fold into the first of "
        "them, listed in its `similar_ids`; `show`: every hit on its own.",
    )
    more: ImageIds = Field(
        "",
        description="Relevance feedback: comma-separated ids of images marked relevant; the "
        "query moves towards them (Rocchio). Alone, it searches for images like them.",
    )
    less: ImageIds = Field(
        "",
        description="Relevance feedback: comma-separated ids of images marked not relevant; "
        "the query moves away from them.",
    )


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
    mode: Literal[MODES] = Field(description="The mode it ran in.")
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

"""What a search asks for, and the error a request that cannot be searched raises."""

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from django.conf import settings

from gallery.errors import InvalidInput

SORTS = ("relevance", "date")
# "semantic" (vectors), "keyword" (full-text) or "hybrid" (both fused).
MODES = ("semantic", "keyword", "hybrid")


# Relevance feedback's marks, at most this many in `more` and in `less`: they accumulate over
# rounds and pages and travel in the URL: enough for any person, short enough for an address.
MAX_MARKED_IMAGES = 200


# Image ids (from 1, no leading zero) separated by commas; empty parts are skipped.
MARKED_IMAGES_PATTERN = r"^\s*(?:[1-9][0-9]*\s*)?(?:,\s*(?:[1-9][0-9]*\s*)?)*$"


def marked_image_ids(text: str) -> list[int]:
    """Relevance feedback's marks as given ("12,40"): each id once, ascending."""
    if not re.fullmatch(MARKED_IMAGES_PATTERN, text or ""):
        raise ValueError("Give image ids separated by commas, like 12,40.")
    ids = sorted({int(part) for part in (text or "").split(",") if part.strip()})
    if len(ids) > MAX_MARKED_IMAGES:
        raise ValueError(f"Mark at most {MAX_MARKED_IMAGES} images.")
    return ids


def tag_filter_names(text: str) -> list[str]:
    """A comma-separated tag filter as names, spaces inside a name collapsed."""
    return [" ".join(part.split()) for part in text.split(",") if part.strip()]


class SearchError(InvalidInput):
    """A request that cannot be searched; `parameter` names the offending input."""

    def __init__(self, parameter: str | None, message: str):
        super().__init__(message, parameter)


@dataclass
class SearchRequest:
    text: str = ""
    image_vector: np.ndarray | None = None
    like_image_id: int | None = None
    # Relevance feedback: images marked relevant / not relevant (gallery/search/feedback.py).
    more_ids: list[int] = field(default_factory=list)
    less_ids: list[int] = field(default_factory=list)
    tags_any: list[str] = field(default_factory=list)
    tags_all: list[str] = field(default_factory=list)
    tags_not: list[str] = field(default_factory=list)
    after: date | None = None
    before: date | None = None
    min_score: float | None = None
    sort: str = "relevance"
    # "semantic" (vectors), "keyword" (full-text) or "hybrid" (both fused); empty: hybrid when
    # there are words, else semantic (see gallery/search/keyword.py).
    mode: str = ""
    page: int = 1
    page_size: int = 24
    # Fold near-duplicates on the page into one hit (the pages and APIs; not the evaluation).
    collapse_duplicates: bool = False

    @classmethod
    def from_parameters(cls, values: Mapping, **extra) -> "SearchRequest":
        """A request from checked parameters named as the page's form and the API name them
        (q, like, more, less, tags_any, ..., page_size, duplicates)."""
        return cls(
            text=values.get("q") or "",
            like_image_id=values.get("like"),
            more_ids=list(values.get("more") or []),
            less_ids=list(values.get("less") or []),
            tags_any=list(values.get("tags_any") or []),
            tags_all=list(values.get("tags_all") or []),
            tags_not=list(values.get("tags_not") or []),
            after=values.get("after"),
            before=values.get("before"),
            min_score=values.get("min_score"),
            sort=values.get("sort") or "relevance",
            mode=values.get("mode") or "",
            page=values.get("page") or 1,
            page_size=values.get("page_size") or settings.SEARCH_PAGE_SIZE,
            collapse_duplicates=values.get("duplicates") != "show",
            **extra,
        )

    @property
    def offset(self) -> int:
        """How many results come before this page."""
        return (self.page - 1) * self.page_size

    def check(self) -> None:
        """Refuse what cannot be searched (the form and the API refuse it first; this keeps
        every other caller to the same bounds)."""
        if self.sort not in SORTS:
            raise SearchError("sort", f"sort must be one of {', '.join(SORTS)}.")
        if self.page < 1:
            raise SearchError("page", "page must be 1 or more.")
        if not 1 <= self.page_size <= settings.SEARCH_MAX_PAGE_SIZE:
            raise SearchError(
                "page_size", f"page_size must be between 1 and {settings.SEARCH_MAX_PAGE_SIZE}."
            )
        if self.min_score is not None and not -1 <= self.min_score <= 1:
            raise SearchError("min_score", "min_score must be between -1 and 1.")
        if self.offset >= settings.SEARCH_MAX_RESULTS:
            limit = settings.SEARCH_MAX_RESULTS
            raise SearchError(
                "page",
                f"Results stop at {limit:,}: page {self.page} would start at result "
                f"{self.offset + 1:,}. With {self.page_size} results a page, the last page is "
                f"{math.ceil(limit / self.page_size):,}; narrow the search to see others.",
            )

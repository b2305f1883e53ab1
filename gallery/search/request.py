"""What a search asks for, and the error a request that cannot be searched raises."""

from dataclasses import dataclass, field
from datetime import date

import numpy as np

from gallery.errors import InvalidInput

SORTS = ("relevance", "date")


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

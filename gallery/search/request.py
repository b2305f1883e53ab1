"""What a search asks for, and the error a request that cannot be searched raises."""

from dataclasses import dataclass, field
from datetime import date

import numpy as np

SORTS = ("relevance", "date")


class SearchError(ValueError):
    """A request that cannot be searched; `parameter` names the offending input."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter


@dataclass
class SearchRequest:
    text: str = ""
    image_vector: np.ndarray | None = None
    like_image_id: int | None = None
    tags_any: list[str] = field(default_factory=list)
    tags_all: list[str] = field(default_factory=list)
    tags_not: list[str] = field(default_factory=list)
    after: date | None = None
    before: date | None = None
    min_score: float | None = None
    sort: str = "relevance"
    page: int = 1
    page_size: int = 24

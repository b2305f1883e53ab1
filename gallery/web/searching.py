"""A search as the page and the API run it: the query image (encoded once, then recalled by
its token), the selector call, and the parameters that links to other pages carry."""

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np

from gallery.errors import InvalidInput
from gallery.search import query_vectors, selector
from gallery.search.request import SearchRequest

BLANK_SEARCH = "Give q (text), like (an image id) or an image file."

# Not carried by links as sent: the marks are rewritten as one comma-separated list each.
UNCARRIED = {"page", "image", "image_token", "csrfmiddlewaretoken", "more", "less"}


def is_blank(values: Mapping, image_file) -> bool:
    """Whether checked parameters ask for nothing: no words, no image, no marks."""
    return not (
        (values.get("q") or "").strip()
        or values.get("like")
        or values.get("image_token")
        or image_file is not None
        or values.get("more")
    )


def refuse_blank(values: Mapping, image_file) -> None:
    if is_blank(values, image_file):
        raise InvalidInput(BLANK_SEARCH, "q")


def encode_query_image(values: Mapping, image_file) -> tuple[np.ndarray | None, str]:
    """The query image's vector and token: encoded once when uploaded, then recalled. The token
    is empty when a posted image could not be kept (Redis unavailable)."""
    token = values.get("image_token") or ""
    if image_file is not None:
        vector = query_vectors.query_image_vector(image_file.read())
        return vector, query_vectors.remember_query_image(vector)
    if token:
        return query_vectors.recall_query_image(token), token
    return None, ""


@dataclass
class Search:
    """A search that ran: its results, the parameters it was given and its query image."""

    results: selector.SearchResults
    values: Mapping  # the checked parameters
    raw: Mapping  # the parameters as sent (a QueryDict), for links
    token: str  # the query image's token; "" without one
    posted_image: bool

    @property
    def pageable(self) -> bool:
        """Whether other pages can repeat this search: not when a posted query image could not
        be kept, since a page without it would search for something else."""
        return bool(self.token) or not self.posted_image

    def link_params(self, *, marks: bool = True, **changes) -> dict:
        """The parameters links carry, without a page unless given: what was sent (non-empty),
        the query image's token and (unless `marks` is false) the feedback marks."""
        return link_params(self.raw, self.values, self.token, marks=marks, **changes)

    def page_query(self, page: int) -> str:
        """The query string of another page of this search ("" when it cannot be repeated)."""
        if not self.pageable:
            return ""
        return urlencode(self.link_params(page=page))

    @property
    def previous_query(self) -> str:
        return self.page_query(self.results.page - 1) if self.results.page > 1 else ""

    @property
    def next_query(self) -> str:
        return self.page_query(self.results.page + 1) if self.results.has_next else ""


def link_params(raw: Mapping, values: Mapping, token: str, *, marks=True, **changes) -> dict:
    params = {name: value for name, value in raw.items() if name not in UNCARRIED and value}
    for name in ("more", "less") if marks else ():
        if values.get(name):
            params[name] = ",".join(str(pk) for pk in values[name])
    if token:
        params["image_token"] = token
    return {**params, **changes}


def run_search(values: Mapping, raw: Mapping, image_file=None, *, query_image=None) -> Search:
    """Search with checked `values` (and a posted image file, or a query image already encoded
    as (vector, token))."""
    vector, token = query_image or encode_query_image(values, image_file)
    request = SearchRequest.from_parameters(values, image_vector=vector)
    return Search(
        results=selector.search_images(request),
        values=values,
        raw=raw,
        token=token,
        posted_image=image_file is not None,
    )

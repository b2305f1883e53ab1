"""Why a search found nothing: which filter removed everything (found by adding the filters
one at a time), no indexed image yet, a minimum score no image reaches, or words no document
has."""

import numpy as np

from gallery.models import Image
from gallery.replicas import read_connection
from gallery.search import statements
from gallery.search.filters import IMAGES, VECTORS, Filter
from gallery.search.keyword import KeywordQuery
from gallery.search.request import SearchRequest


def _first_filter_that_empties(base: list[str], filters: list[Filter], sql_from, aliases):
    """The first filter after which nothing passes (with those before it), or None."""
    conditions, params = list(base), {}
    for each in filters:
        conditions.append(each.sql(aliases))
        params.update(each.params)
        if not statements.count(sql_from, conditions, params):
            return each, conditions, params
    return None, conditions, params


def _passes_none(each: Filter) -> str:
    return f"No image passes {each.description} together with the filters before it."


def explain_empty(request: SearchRequest, filters: list[Filter], vector: np.ndarray, model):
    """Why a semantic (or hybrid) search's page is empty."""
    base = [statements.model_condition(model)]
    if not statements.count(statements.SEARCHABLE, base, {}):
        waiting = Image.objects.missing_vector_of(model).count()
        if waiting:
            return f"No image is searchable yet: {waiting} are still waiting to be indexed."
        return "The library has no indexed images yet."
    emptied, conditions, params = _first_filter_that_empties(
        base, filters, statements.SEARCHABLE, VECTORS
    )
    if emptied is not None:
        return _passes_none(emptied)
    if request.page > 1:
        return f"There are no results on page {request.page}; the results end earlier."
    if request.min_score is not None:
        params = {**params, "query": statements.vector_literal(vector)}
        with read_connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 - min({statements.distance_sql(model, exact=True)}) "
                f"FROM {statements.SEARCHABLE} WHERE {' AND '.join(conditions)}",
                params,
            )
            best = cursor.fetchone()[0]
        return (
            f"No image reaches the minimum score {request.min_score:g} "
            f"(the best match scores {best:.3f})."
        )
    return "No results."


def explain_no_keyword_match(query: KeywordQuery, filters: list[Filter]) -> str:
    """Why a keyword search found nothing: no words, a filter, or no document has them."""
    if not query:
        return "The query has no words to match by keyword; search by meaning (mode=semantic)."
    emptied, _, _ = _first_filter_that_empties(
        ["i.status <> 'failed'"], filters, "gallery_image i", IMAGES
    )
    if emptied is not None:
        return _passes_none(emptied)
    words = ", ".join(query.words[:8])
    return f"No caption, tag, file name or text in an image has any of these words: {words}."

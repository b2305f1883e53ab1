"""Reading the library by meaning and by words: `search_images` turns a request into one
page of results. The search page, the JSON API, the benchmarks and the evaluation command all
call it.

A semantic page is a slice of the vector ranking (gallery/search/ranking.py: one statement per
block, filters included); `keyword` and `hybrid` pages fuse with the keyword ranking in one
statement of their own (gallery/search/keyword.py); an empty page says why
(gallery/search/explanations.py). Only the active model's vectors are searched, through that
model's partial HNSW index.
"""

import math
import time
from dataclasses import dataclass, field

from django.conf import settings

from gallery.indexing import registry, vector_index
from gallery.models import Image
from gallery.search import explanations, keyword, statements
from gallery.search import filters as search_filters
from gallery.search.near_duplicates import collapse_near_duplicates
from gallery.search.query_syntax import parse_query
from gallery.search.query_vectors import query_vector
from gallery.search.ranking import CANDIDATES, Ranking, Totals, ranked_images
from gallery.search.request import SearchError, SearchRequest
from gallery.search.statements import ORDERS, RESULT_COLUMNS, order_sql, tag_names_of

DATE_ORDER = order_sql(ORDERS["date"])


@dataclass
class Hit:
    image: Image
    score: float
    # Near-duplicates folded into this hit on its page (see near_duplicates.py), best first.
    similar: list["Hit"] = field(default_factory=list)
    # Where the hit came from: its rank in the vector ranking and in the keyword ranking
    # (None where it is not in one), and its cosine similarity to the query vector.
    semantic_rank: int | None = None
    keyword_rank: int | None = None
    similarity: float | None = None

    @property
    def matched_by(self) -> list[str]:
        return [
            name
            for name, rank in (("semantic", self.semantic_rank), ("keyword", self.keyword_rank))
            if rank is not None
        ]

    @property
    def tag_names(self) -> list[str]:
        return self.image.tag_names

    @property
    def similar_ids(self) -> list[int]:
        return [hit.image.pk for hit in self.similar]


@dataclass
class SearchResults:
    hits: list[Hit]
    page: int
    page_size: int
    has_next: bool
    best_score: float | None = None
    confidence_threshold: float = 0.0
    empty_reason: str = ""
    strategy: str = ""
    database_ms: float = 0.0
    mode: str = "semantic"  # the mode it ran in (see keyword.search_mode)
    keyword_matches: int = 0  # images the keyword ranking found (up to its depth)
    # Sorted by date: how many results the date order covers, and which, in words.
    sorted_among: int | None = None
    sorted_note: str = ""

    @property
    def confident(self) -> bool:
        # A keyword match is a word the person typed, found in the image's document.
        if self.keyword_matches:
            return True
        return self.best_score is not None and self.best_score >= self.confidence_threshold

    @property
    def start_rank(self) -> int:
        return (self.page - 1) * self.page_size + 1


# A page ordered by date among every match above a minimum score. The totals come as one row
# even when the page is empty (its image columns then NULL): they tell a page past the end of
# the results from an index scan that fell short.
SEARCH_SQL = (
    CANDIDATES
    + """totals AS (
    SELECT count(*) AS candidate_count,
           count(*) FILTER (WHERE distance <= %(max_distance)s) AS match_count,
           1 - min(distance) AS best_score
    FROM candidates
),
page AS (
    SELECT {columns}, c.distance
    FROM candidates c JOIN gallery_image i ON i.id = c.id
    WHERE c.distance <= %(max_distance)s
    ORDER BY {order}
    LIMIT %(limit)s OFFSET %(offset)s
)
SELECT p.*, 1 - p.distance AS score, t.candidate_count, t.match_count, t.best_score,
       {tag_names} AS tag_names
FROM totals t LEFT JOIN page p ON true
ORDER BY {page_order}
"""
)


def _with_totals(rows: list[Image]) -> tuple[list[Image], Totals]:
    """A page statement's images and its totals (see SEARCH_SQL)."""
    first = rows[0]  # the totals' row is always there
    best = None if first.best_score is None else float(first.best_score)
    totals = Totals(
        first.candidate_count, first.match_count, best, getattr(first, "keyword_count", 0)
    )
    return [row for row in rows if row.pk is not None], totals


def search_images(request: SearchRequest, *, exact: bool | None = None) -> SearchResults:
    """One page of results for this request, best first (or newest first among the best)."""
    request.check()
    offset = request.offset
    filters = search_filters.search_filters(request)  # before encoding: cheaper to report
    mode = keyword.search_mode(request)
    terms = parse_query(request.text)  # once, for both the keyword and the vector side
    words = keyword.keyword_query(terms) if mode != "semantic" else None
    model = registry.active_model()
    # A keyword search needs no vector: it answers even while the model cannot be loaded.
    if mode == "keyword":
        vector, has_image = None, False
    else:
        vector, has_image = query_vector(request, model, terms=terms)
    if vector is not None and len(vector) != model.dimensions:
        raise SearchError(
            "image" if has_image else "q",
            "The library switched to another model while this search ran; search again.",
        )
    conditions = [
        statements.model_condition(model),
        *search_filters.conditions(filters, search_filters.VECTORS),
    ]
    params = {
        **search_filters.parameters(filters),
        # The index's search width grows with the library (vector_index.ef_search_for).
        "ef_search": vector_index.ef_search_for(statements.searchable_count(model)),
        "max_scan_tuples": settings.SEARCH_MAX_SCAN_TUPLES,
        "query": None if vector is None else statements.vector_literal(vector),
    }
    if exact is None:
        exact = mode != "keyword" and statements.use_exact_scan(model)
    semantic = {
        "distance": statements.distance_sql(model, exact=exact),
        "searchable": statements.searchable(filters),
        "conditions": " AND ".join(conditions),
    }
    ranking = Ranking(model, semantic, conditions, filters, dict(params), exact=exact)
    if mode == "hybrid":
        # Hybrid reads the semantic ranking SEARCH_HYBRID_DEPTH deep on every page: one block.
        ranking.block = max(ranking.block, settings.SEARCH_HYBRID_DEPTH)
    window = _Window(
        offset=offset,
        limit=request.page_size + 1,  # one more row than the page tells whether there is a next
        max_distance=2.0 if request.min_score is None else 1 - request.min_score,
    )
    started = time.perf_counter()
    if mode != "semantic":
        page = _fused_page(request, mode, words, ranking, params, window)
    else:
        page = _semantic_page(request, ranking, params, window)
    rows, totals, sorted_among, sorted_note = page
    database_ms = (time.perf_counter() - started) * 1000
    threshold = settings.SEARCH_IMAGE_CONFIDENCE if has_image else settings.SEARCH_TEXT_CONFIDENCE
    results = SearchResults(
        hits=[
            _hit(row, mode, rank=offset + index + 1 if request.sort == "relevance" else None)
            for index, row in enumerate(rows[: request.page_size])
        ],
        page=request.page,
        page_size=request.page_size,
        # A fused ranking can hold more rows than SEARCH_MAX_RESULTS: results stop there.
        has_next=len(rows) > request.page_size
        and offset + request.page_size < settings.SEARCH_MAX_RESULTS,
        best_score=totals.best_score if rows else None,
        confidence_threshold=threshold,
        strategy=ranking.strategy,
        database_ms=database_ms,
        mode=mode,
        keyword_matches=totals.keyword_matches,
        sorted_among=sorted_among,
        sorted_note=sorted_note,
    )
    if request.collapse_duplicates:
        results.hits = collapse_near_duplicates(results.hits, model)
    if not results.hits and request.page > 1 and totals.matches:
        # Past the end: the totals say where the results end; nothing needs counting.
        last = math.ceil(totals.matches / request.page_size)
        results.empty_reason = (
            f"There are no results on page {request.page}; the results end on page {last}."
        )
    elif not results.hits and mode == "keyword":
        results.empty_reason = explanations.explain_no_keyword_match(words, filters)
    elif not results.hits:
        results.empty_reason = explanations.explain_empty(request, filters, vector, model)
    return results


# -- the pages: slices of one ranking ----------------------------------------------------------


@dataclass
class _Window:
    """The rows a page needs: `limit` of them from `offset` on, within `max_distance`."""

    offset: int
    limit: int
    max_distance: float


def _semantic_page(request: SearchRequest, ranking: Ranking, params: dict, window: _Window):
    """A semantic page: its images, the totals, and how many results a date order covers
    and which (None and "" by relevance)."""
    if request.sort == "relevance":
        ranking.shown = range(window.offset, window.offset + window.limit)
        ranked = ranking.first(window.offset + window.limit, max_distance=window.max_distance)
        page = ranked[window.offset :]
        rows = ranking.images_of(page)
        if rows is None:  # the page lies in a block kept in the cache
            rows = ranked_images(page, params, order="r.rank", limit=window.limit, offset=0)
        return rows, ranking.totals(len(ranked)), None, ""
    if request.min_score is None:
        # Newest first among a fixed number of the best matches (the page says how many):
        # ordering the whole library by date would not be a search any more.
        pool = min(settings.SEARCH_DATE_SORT_POOL, settings.SEARCH_MAX_RESULTS)
        ranked = ranking.first(pool)
        rows = ranked_images(
            ranked, params, order=DATE_ORDER, limit=window.limit, offset=window.offset
        )
        if len(ranked) < pool:
            note = f"Newest first among all {len(ranked):,} results."
        else:
            note = (
                f"Newest first among the {pool:,} best matches; set a minimum score to sort "
                "every match by date."
            )
        return rows, ranking.totals(len(ranked)), len(ranked), note
    # Every match at or above the minimum score, newest first: an exact filter on distance.
    semantic = ranking.semantic
    conditions = f"{semantic['conditions']} AND {semantic['distance']} <= %(max_distance)s"
    sql = SEARCH_SQL.format(
        **{**semantic, "conditions": conditions},
        columns=RESULT_COLUMNS,
        order=DATE_ORDER,
        page_order=order_sql(ORDERS["date"], ranked="p", image="p"),
        tag_names=tag_names_of("p.id"),
    )
    matching = {
        **params,
        "pool": None,  # LIMIT NULL: every match
        "limit": window.limit,
        "offset": window.offset,
        "max_distance": window.max_distance,
    }
    ranking.read_exactly = True
    rows, totals = _with_totals(statements.run(sql, matching, exact=True))
    note = f"Newest first among all {totals.matches:,} results at or above the minimum score."
    return rows, totals, totals.matches, note


def _fused_page(
    request: SearchRequest, mode: str, words, ranking: Ranking, params: dict, window: _Window
):
    """A keyword or hybrid page: what _semantic_page gives."""
    if mode == "hybrid":
        # Both rankings are read to one fixed depth, so every page is a slice of one fused
        # ranking (reading deeper for deeper pages would fuse other rankings: repeats, gaps).
        depth = min(settings.SEARCH_HYBRID_DEPTH, settings.SEARCH_MAX_RESULTS)
        semantic_rows = ranking.first(depth, max_distance=window.max_distance)
    elif request.sort == "relevance":
        # The keyword ranking is exact: reading it deeper only appends to it.
        depth, semantic_rows = keyword.depth(window.offset + window.limit), []
    else:
        depth = min(settings.SEARCH_DATE_SORT_POOL, settings.SEARCH_MAX_RESULTS)
        semantic_rows = []
    order = keyword.RELEVANCE_ORDER if request.sort == "relevance" else ORDERS["date"]
    sql, fused_params = keyword.fused_statement(
        mode,
        words,
        filters=search_filters.conditions(ranking.filters, search_filters.IMAGES),
        columns=RESULT_COLUMNS,
        order=order_sql(order),
        page_order=order_sql(order, ranked="p", image="p"),
    )
    fused = {
        **params,
        **fused_params,
        "pool": depth,
        "semantic_ids": [row[0] for row in semantic_rows],
        "semantic_distances": [row[1] for row in semantic_rows],
        "limit": window.limit,
        "offset": window.offset,
    }
    # No vector order in it (the semantic rows come as arrays): no index settings.
    rows, totals = _with_totals(statements.run(sql, fused, exact=None))
    if request.sort == "relevance":
        return rows, totals, None, ""
    if mode == "hybrid":
        note = (
            f"Newest first among the {totals.matches:,} best matches by meaning and by words "
            f"(each ranking read {depth:,} deep)."
        )
    elif totals.keyword_matches < depth:
        note = f"Newest first among all {totals.matches:,} results."
    else:
        note = f"Newest first among the {depth:,} best keyword matches."
    return rows, totals, totals.matches, note


def _hit(row, mode: str, *, rank: int | None) -> Hit:
    """A result row as a hit; `rank` is its place in a semantic search sorted by relevance."""
    if mode == "semantic":
        score = float(row.score)
        return Hit(image=row, score=score, semantic_rank=rank, similarity=score)
    return Hit(
        image=row,
        score=float(row.score),
        semantic_rank=row.semantic_rank,
        keyword_rank=row.keyword_rank,
        similarity=None if row.similarity is None else float(row.similarity),
    )

"""Reading the library: turning a query into one pgvector statement and explaining the result.

The search page, the JSON API, the benchmarks and the evaluation command all call
`search_images`. Vector order and every filter run in a single SQL statement:

    WITH candidates AS MATERIALIZED (             -- HNSW (or exact) order + all filters
        SELECT i.id, e.vector::vector(d) <=> q AS distance
        FROM gallery_embedding e JOIN gallery_image i ON i.id = e.image_id
        WHERE e.model_id = <active model> AND filters ORDER BY distance LIMIT n)
    SELECT ... FROM candidates ... ORDER BY distance + 0  -- strict order restored

Only the active model's vectors are searched, through that model's partial HNSW index.
That is `mode=semantic`; `keyword` and `hybrid` searches (gallery/search/keyword.py) run one
statement of their own, with the same filters and the same shape of answer.

With `hnsw.iterative_scan = relaxed_order` the index keeps scanning until enough rows pass the
filters (a 0.5 % filter returned 0.2 of 10 rows without it, 10 of 10 with it); the
materialized CTE then restores strict order, as pgvector's documentation prescribes.
"""

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from gallery.indexing import registry
from gallery.models import EmbeddingModel, Image, Tag
from gallery.search import keyword
from gallery.search.near_duplicates import collapse_near_duplicates
from gallery.search.query_vectors import query_vector
from gallery.search.request import SORTS, SearchError, SearchRequest


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

    @property
    def confident(self) -> bool:
        # A keyword match is a word the person typed, found in the image's document.
        if self.keyword_matches:
            return True
        return self.best_score is not None and self.best_score >= self.confidence_threshold

    @property
    def start_rank(self) -> int:
        return (self.page - 1) * self.page_size + 1


# -- the statement ---------------------------------------------------------------------------


def _tag_ids(parameter: str, names: list[str], *, unknown_ok: bool = False) -> list[int]:
    """Tag ids by name (case-insensitive). An unknown name is an error that explains an
    empty page, except where it cannot matter (excluding a tag nobody has)."""
    if not names:
        return []
    found = {tag.name.lower(): tag.pk for tag in Tag.objects.filter(name__in=names)}
    for name in names:
        if name.lower() not in found:
            match = Tag.objects.filter(name__iexact=name).first()
            if match is not None:
                found[name.lower()] = match.pk
            elif not unknown_ok:
                raise SearchError(parameter, f"There is no tag named {name!r}.")
    return [found[name.lower()] for name in names if name.lower() in found]


def _tag_condition(parameter: str, exists: str) -> str:
    return (
        f"{exists} (SELECT 1 FROM gallery_image_tags t "
        f"WHERE t.image_id = e.image_id AND t.tag_id = ANY(%({parameter})s))"
    )


def _filters(request: SearchRequest) -> list[tuple[str, str, dict]]:
    """(filter name, SQL condition, parameters), in the order they are explained.

    Tag conditions use the vector row (e) and dates the image row (i): the image table is
    joined only for dates (see `_searchable`).
    """
    if request.after and request.before and request.after > request.before:
        raise SearchError(
            "after", f"The date range is reversed: {request.after} is after {request.before}."
        )
    filters = []
    if request.tags_any:
        ids = _tag_ids("tags_any", request.tags_any)
        filters.append(("tags_any", _tag_condition("tags_any", "EXISTS"), {"tags_any": ids}))
    if request.tags_all:
        ids = sorted(set(_tag_ids("tags_all", request.tags_all)))
        filters.append(
            (
                "tags_all",
                "(SELECT count(*) FROM gallery_image_tags t WHERE "
                "t.image_id = e.image_id AND t.tag_id = ANY(%(tags_all)s)) = %(tags_all_n)s",
                {"tags_all": ids, "tags_all_n": len(ids)},
            )
        )
    excluded = _tag_ids("tags_not", request.tags_not, unknown_ok=True)
    if excluded:
        filters.append(
            ("tags_not", _tag_condition("tags_not", "NOT EXISTS"), {"tags_not": excluded})
        )
    if request.after:
        filters.append(("after", f"{TAKEN_DAY} >= %(after)s", _day(after=request.after)))
    if request.before:
        filters.append(("before", f"{TAKEN_DAY} <= %(before)s", _day(before=request.before)))
    return filters


# The photo's own calendar day (Image.taken_on); rows without one use TIME_ZONE's day.
TAKEN_DAY = "coalesce(i.taken_on, (i.taken_at AT TIME ZONE %(time_zone)s)::date)"


def _day(**day) -> dict:
    return {**day, "time_zone": settings.TIME_ZONE}


def _base_conditions(model: EmbeddingModel) -> tuple[list[str], dict]:
    # A literal, not a parameter: the planner must see it to use the model's partial index.
    return [f"e.model_id = {int(model.pk)}"], {}


# Images with a vector of the active model, aliased i (image) and e (embedding).
SEARCHABLE = "gallery_embedding e JOIN gallery_image i ON i.id = e.image_id"


# Filters that read the image row itself.
IMAGE_FILTERS = {"after", "before"}


def _searchable(filters) -> str:
    """The vectors alone unless a filter needs the image row. Measured at 100k: an exact scan
    took 250 ms with the join and 135 ms without; a 1 % tag filter 9.4 ms and 6.6 ms."""
    if any(name in IMAGE_FILTERS for name, _, _ in filters):
        return SEARCHABLE
    return "gallery_embedding e"


# The totals come as one row even when the page is empty (its image columns then NULL): they
# tell a page past the end of the results from an index scan that fell short.
SEARCH_SQL = """
WITH candidates AS MATERIALIZED (
    SELECT e.image_id AS id, {distance} AS distance
    FROM {searchable}
    WHERE {conditions}
    ORDER BY distance
    LIMIT %(pool)s
),
totals AS (
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
       ARRAY(SELECT tag.name FROM gallery_tag tag
             JOIN gallery_image_tags it ON it.tag_id = tag.id
             WHERE it.image_id = p.id ORDER BY lower(tag.name)) AS tag_names
FROM totals t LEFT JOIN page p ON true
ORDER BY {page_order}
"""
# The image's columns; never the vector, which the page does not show (~0.2 ms a row to parse).
RESULT_COLUMNS = ", ".join(f"i.{field.column}" for field in Image._meta.concrete_fields)
ORDERS = {
    # "+ 0" makes PostgreSQL sort the materialized rows again (strict order after relaxed scan).
    "relevance": "c.distance + 0, c.id",
    "date": "i.taken_at DESC, i.id DESC",
}


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{value:.7g}" for value in vector.tolist()) + "]"


def _distance(model: EmbeddingModel) -> str:
    """Cosine distance in the exact form of the model's index expression (see registry)."""
    dimensions = int(model.dimensions)
    return f"(e.vector::vector({dimensions})) <=> %(query)s::vector({dimensions})"


def _page_order(order: str) -> str:
    """An ORDERS entry for the page's own rows (aliased p)."""
    return re.sub(r"\b[ci]\.", "p.", order)


@dataclass
class _Totals:
    candidates: int  # rows the vector scan returned (at most the pool)
    matches: int  # those at or above the minimum score (fused: the fused ranking's rows)
    best_score: float | None
    keyword_matches: int = 0


def _run(sql: str, params: dict, *, exact: bool) -> tuple[list[Image], _Totals]:
    with transaction.atomic(), connection.cursor() as cursor:
        # set_config(..., true) is SET LOCAL: it lasts until this transaction ends.
        if exact:
            # HNSW is only reachable through index scans; bitmap scans still serve filters.
            cursor.execute("SELECT set_config('enable_indexscan', 'off', true)")
        else:
            cursor.execute(
                "SELECT set_config('hnsw.ef_search', %s, true), "
                "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                "set_config('hnsw.max_scan_tuples', %s, true)",
                [str(settings.SEARCH_EF_SEARCH), str(settings.SEARCH_MAX_SCAN_TUPLES)],
            )
        rows = list(Image.objects.raw(sql, params))
        # Reads only: rolling back ends the settings above here, even when the caller is
        # already inside a transaction (where releasing a savepoint would keep them).
        transaction.set_rollback(True)
    first = rows[0]  # the totals' row is always there
    best = None if first.best_score is None else float(first.best_score)
    totals = _Totals(
        first.candidate_count, first.match_count, best, getattr(first, "keyword_count", 0)
    )
    return [row for row in rows if row.pk is not None], totals


_vector_counts: dict[int, tuple[int, float]] = {}  # model pk -> (vectors, when counted)


def _searchable_count(model: EmbeddingModel) -> int:
    """How many vectors the model has, counted at most once a minute per process."""
    count, counted_at = _vector_counts.get(model.pk, (0, float("-inf")))
    if time.monotonic() - counted_at > 60:
        count = model.embeddings.count()
        _vector_counts[model.pk] = (count, time.monotonic())
    return count


def use_exact_scan(model: EmbeddingModel) -> bool:
    return _searchable_count(model) <= settings.SEARCH_EXACT_MAX_ROWS


def search_images(request: SearchRequest, *, exact: bool | None = None) -> SearchResults:
    """One page of results for this request, best first (or newest first among the best)."""
    if request.sort not in SORTS:
        raise SearchError("sort", f"sort must be one of {', '.join(SORTS)}.")
    if request.page < 1:
        raise SearchError("page", "page must be 1 or more.")
    if not 1 <= request.page_size <= settings.SEARCH_MAX_PAGE_SIZE:
        raise SearchError(
            "page_size", f"page_size must be between 1 and {settings.SEARCH_MAX_PAGE_SIZE}."
        )
    if request.min_score is not None and not -1 <= request.min_score <= 1:
        raise SearchError("min_score", "min_score must be between -1 and 1.")
    offset = (request.page - 1) * request.page_size
    if offset >= settings.SEARCH_MAX_RESULTS:
        limit = settings.SEARCH_MAX_RESULTS
        raise SearchError(
            "page",
            f"Results stop at {limit:,}: page {request.page} would start at result "
            f"{offset + 1:,}. With {request.page_size} results a page, the last page is "
            f"{math.ceil(limit / request.page_size):,}; narrow the search to see others.",
        )
    filters = _filters(request)  # before encoding: a bad filter is cheaper to report
    mode = keyword.search_mode(request)
    words = keyword.keyword_query(request.text) if mode != "semantic" else None
    model = registry.active_model()
    # A keyword search needs no vector: it answers even while the model cannot be loaded.
    vector, has_image = (None, False) if mode == "keyword" else query_vector(request, model)
    if vector is not None and len(vector) != model.dimensions:
        raise SearchError(
            "image" if has_image else "q",
            "The library switched to another model while this search ran; search again.",
        )
    conditions, params = _base_conditions(model)
    for _, condition, values in filters:
        conditions.append(condition)
        params.update(values)
    # One more row than the page tells whether a next page exists; none past the depth limit.
    wanted = offset + request.page_size + 1
    # Sorting by date pages through a fixed pool of the most relevant hits.
    pool = wanted if request.sort == "relevance" else settings.SEARCH_DATE_SORT_POOL
    pool = min(pool, settings.SEARCH_MAX_RESULTS)
    params.update(
        query=None if vector is None else _vector_literal(vector),
        pool=pool,
        limit=request.page_size + 1,
        offset=offset,
        max_distance=2.0 if request.min_score is None else 1 - request.min_score,
    )
    semantic = {
        "distance": _distance(model),
        "searchable": _searchable(filters),
        "conditions": " AND ".join(conditions),
    }
    if mode == "semantic":
        sql = SEARCH_SQL.format(
            **semantic,
            columns=RESULT_COLUMNS,
            order=ORDERS[request.sort],
            page_order=_page_order(ORDERS[request.sort]),
        )
    else:
        # Both rankings are read to keyword.depth, so every page fuses the same rankings;
        # the fused ranking keeps the pool.
        params.update(pool=keyword.depth(pool), fused_pool=pool)
        order = keyword.RELEVANCE_ORDER if request.sort == "relevance" else ORDERS[request.sort]
        sql, fused_params = keyword.fused_statement(
            mode,
            words,
            semantic=semantic,
            filters=[condition for _, condition, _ in filters],
            columns=RESULT_COLUMNS,
            order=order,
            page_order=_page_order(order),
        )
        params.update(fused_params)
    if exact is None:
        exact = mode != "keyword" and use_exact_scan(model)
    started = time.perf_counter()
    rows, totals = _run(sql, params, exact=exact)
    if (
        not exact
        and mode != "keyword"
        and _index_scan_fell_short(totals, params["pool"], model, filters, conditions, params)
    ):
        # The index ran out of scan budget before finding enough rows that pass the filters:
        # answer exactly instead of returning a short page.
        exact = True
        rows, totals = _run(sql, params, exact=True)
    database_ms = (time.perf_counter() - started) * 1000
    threshold = settings.SEARCH_IMAGE_CONFIDENCE if has_image else settings.SEARCH_TEXT_CONFIDENCE
    results = SearchResults(
        hits=[
            _hit(row, mode, rank=offset + index + 1 if request.sort == "relevance" else None)
            for index, row in enumerate(rows[: request.page_size])
        ],
        page=request.page,
        page_size=request.page_size,
        has_next=len(rows) > request.page_size,
        best_score=totals.best_score if rows else None,
        confidence_threshold=threshold,
        strategy="exact" if exact else "hnsw",
        database_ms=database_ms,
        mode=mode,
        keyword_matches=totals.keyword_matches,
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
        results.empty_reason = keyword.explain_no_match(words, filters, FILTER_NAMES)
    elif not results.hits:
        results.empty_reason = explain_empty(request, filters, vector, model)
    return results


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


def _index_scan_fell_short(totals: _Totals, pool: int, model, filters, conditions, params) -> bool:
    """Whether an exact scan could find candidates the index scan did not (it ran out of scan
    budget before `pool` rows passed the filters).

    Not when the results simply end before the pool is full (a page past the end, a small
    library, a narrow filter): then every vector of the model was a candidate, or the rows
    that pass the filters, counted only up to the pool, are no more than the candidates.
    That count computes no distance; an exact scan computes one for every row that passes.
    """
    if totals.candidates >= pool or totals.candidates >= _searchable_count(model):
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {_searchable(filters)} "
            f"WHERE {' AND '.join(conditions)} LIMIT %(pool)s) passing",
            params,
        )
        return cursor.fetchone()[0] > totals.candidates


# -- explaining an empty page ----------------------------------------------------------------

FILTER_NAMES = {
    "tags_any": "the tags to include (any of)",
    "tags_all": "the tags that must all be present",
    "tags_not": "the tags to exclude",
    "after": "the start date",
    "before": "the end date",
}


def explain_empty(request: SearchRequest, filters, vector: np.ndarray, model) -> str:
    """Which filter removed everything, found by adding the filters one at a time."""
    conditions, params = _base_conditions(model)
    if not _count(conditions, params):
        waiting = Image.objects.missing_vector_of(model).count()
        if waiting:
            return f"No image is searchable yet: {waiting} are still waiting to be indexed."
        return "The library has no indexed images yet."
    for name, condition, values in filters:
        conditions = [*conditions, condition]
        params = {**params, **values}
        if not _count(conditions, params):
            return f"No image passes {FILTER_NAMES[name]} together with the filters before it."
    if request.page > 1:
        return f"There are no results on page {request.page}; the results end earlier."
    if request.min_score is not None:
        params = {**params, "query": _vector_literal(vector)}
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 - min({_distance(model)}) FROM {SEARCHABLE} "
                f"WHERE {' AND '.join(conditions)}",
                params,
            )
            best = cursor.fetchone()[0]
        return (
            f"No image reaches the minimum score {request.min_score:g} "
            f"(the best match scores {best:.3f})."
        )
    return "No results."


def _count(conditions: list[str], params: dict) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {SEARCHABLE} WHERE {' AND '.join(conditions)}", params
        )
        return cursor.fetchone()[0]

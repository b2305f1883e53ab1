"""Reading the library: turning a query into one pgvector statement and explaining the result.

The search page, the JSON API, the benchmarks and the evaluation command all call
`search_images`. Vector order and every filter run in one SQL statement per block of the
ranking (`_Ranking`; a page's rows usually lie in the first), sent in one round trip with the
index's settings:

    SELECT set_config('hnsw.ef_search', ...), ...;     -- ends with the implicit transaction
    WITH candidates AS MATERIALIZED (                  -- HNSW (or exact) order + all filters
        SELECT e.image_id AS id, e.vector::halfvec(d) <=> q AS distance
        FROM gallery_embedding e [JOIN gallery_image i ON i.id = e.image_id]
        WHERE e.model_id = <active model> AND filters ORDER BY distance LIMIT n),
    block AS (SELECT id, distance, rank FROM candidates
        WHERE (distance, id) > <the previous block's last>  -- pages continue, never repeat
        ORDER BY distance + 0, id LIMIT <block size>)      -- strict order restored
    SELECT <the image and its tags, for the rows on the page>, id, distance FROM block ...

A page in a block kept from an earlier request reads its images by id instead. Only the
active model's vectors are searched, through that model's partial HNSW index. That is
`mode=semantic`; `keyword` and `hybrid` searches (gallery/search/keyword.py) fuse in one
statement of their own, with the same filters and the same shape of answer.

With `hnsw.iterative_scan = relaxed_order` the index keeps scanning until enough rows pass the
filters (a 0.5 % filter returned 0.2 of 10 rows without it, 10 of 10 with it); the
materialized CTE then restores strict order, as pgvector's documentation prescribes.
"""

import functools
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from gallery.cache import cache_call
from gallery.indexing import registry
from gallery.models import EmbeddingModel, Image, Tag
from gallery.replicas import read_connection
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


# The vector order and every filter: the first `pool` rows of the index (or an exact scan).
CANDIDATES = """
WITH candidates AS MATERIALIZED (
    SELECT e.image_id AS id, {distance} AS distance
    FROM {searchable}
    WHERE {conditions}
    ORDER BY distance
    LIMIT %(pool)s
),
"""
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
       ARRAY(SELECT tag.name FROM gallery_tag tag
             JOIN gallery_image_tags it ON it.tag_id = tag.id
             WHERE it.image_id = p.id ORDER BY lower(tag.name)) AS tag_names
FROM totals t LEFT JOIN page p ON true
ORDER BY {page_order}
"""
)
# The image's columns; never the vector, which the page does not show (~0.2 ms a row to parse).
RESULT_COLUMNS = ", ".join(f"i.{field.column}" for field in Image._meta.concrete_fields)
ORDERS = {
    # "+ 0" makes PostgreSQL sort the materialized rows again (strict order after relaxed scan).
    "relevance": "c.distance + 0, c.id",
    "date": "i.taken_at DESC, i.id DESC",
}


def _vector_literal(vector: np.ndarray) -> str:
    # One format for the whole vector: ~40 % faster than formatting 512 values one by one.
    return _literal_format(len(vector)) % tuple(vector.tolist())


@functools.cache
def _literal_format(dimensions: int) -> str:
    return "[" + ",".join(["%.7g"] * dimensions) + "]"


def _distance(model: EmbeddingModel, *, exact: bool = False) -> str:
    """Cosine distance in the exact form of the model's index expression (see registry).

    A search that never uses the index (`exact`: a small library) reads the full-precision
    vectors instead: a halfvec index's distances are good to about 1e-3, and near-ties
    would otherwise come out in another order than the stored vectors say."""
    storage = "vector" if exact else registry.index_storage(model)
    expression = registry.vector_expression(model, storage)
    return f"{expression} <=> %(query)s::{storage}({int(model.dimensions)})"


def _page_order(order: str) -> str:
    """An ORDERS entry for the page's own rows (aliased p)."""
    return re.sub(r"\b[ci]\.", "p.", order)


@dataclass
class _Totals:
    candidates: int  # rows the vector scan returned (at most the pool)
    matches: int  # those at or above the minimum score (fused: the fused ranking's rows)
    best_score: float | None
    keyword_matches: int = 0


def _run(sql: str, params: dict, *, exact: bool | None, as_images: bool = True) -> list:
    """The statement's rows as images (or plain tuples), scanned exactly or through the
    index (`exact`); `exact=None`: a statement without vector order, which needs neither."""
    if exact is False:
        # One round trip: the index's settings and the statement travel as one query string,
        # which PostgreSQL runs as one implicit transaction, so set_config(..., true) ends
        # with it. (Inside a caller's transaction they last until that ends; only HNSW scans
        # read them, and every search sets its own.) A transaction of its own cost three
        # more round trips: ~0.3 ms a search.
        with read_connection.cursor() as cursor:
            cursor.execute(f"{INDEX_SETTINGS};\n{sql}", params)
            if not cursor.nextset():
                raise RuntimeError("The search statement returned no rows after its settings.")
            return _fetch(cursor, as_images)
    if exact is None:
        with read_connection.cursor() as cursor:
            cursor.execute(sql, params)
            return _fetch(cursor, as_images)
    with transaction.atomic(using=read_connection.alias), read_connection.cursor() as cursor:
        # HNSW is only reachable through index scans; bitmap scans still serve filters.
        # SET LOCAL, undone by the rollback below, so it cannot leak into a caller's
        # transaction (where releasing a savepoint would keep it).
        cursor.execute("SELECT set_config('enable_indexscan', 'off', true)")
        cursor.execute(sql, params)
        rows = _fetch(cursor, as_images)
        transaction.set_rollback(True, using=read_connection.alias)
    return rows


# The settings of an index scan: how wide the graph search is, and that it goes on scanning
# (to hnsw.max_scan_tuples) until enough rows pass the filters.
INDEX_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', %(ef_search)s::text, true), "
    "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    "set_config('hnsw.max_scan_tuples', %(max_scan_tuples)s::text, true)"
)
IMAGE_FIELDS = len(Image._meta.concrete_fields)


def _fetch(cursor, as_images: bool) -> list:
    """The cursor's rows: plain tuples (hundreds of (id, distance) rows cost ~10 us each as
    model instances), or images (see `_as_images`)."""
    rows = cursor.fetchall()
    if not as_images:
        return rows
    return _as_images([column.name for column in cursor.description[IMAGE_FIELDS:]], rows)


def _as_images(names: list[str], rows) -> list[Image]:
    """Rows that start with RESULT_COLUMNS as images, their other columns as attributes.

    What Image.objects.raw() gives, without its per-statement set-up (~1 ms for a page of 11
    rows at 100k images; none of Image's fields converts its database value). A row whose
    image columns are NULL (a totals row) keeps pk None. `names`: the other columns' names.
    """
    alias, images = read_connection.alias, []
    for row in rows:
        image = Image.from_db(alias, None, row[:IMAGE_FIELDS])
        for name, value in zip(names, row[IMAGE_FIELDS:], strict=True):
            setattr(image, name, value)
        images.append(image)
    return images


def _with_totals(rows: list[Image]) -> tuple[list[Image], _Totals]:
    """A page statement's images and its totals (see SEARCH_SQL)."""
    first = rows[0]  # the totals' row is always there
    best = None if first.best_score is None else float(first.best_score)
    totals = _Totals(
        first.candidate_count, first.match_count, best, getattr(first, "keyword_count", 0)
    )
    return [row for row in rows if row.pk is not None], totals


_vector_counts: dict[int, tuple[int, float]] = {}  # model pk -> (vectors, when counted)


def _searchable_count(model: EmbeddingModel) -> int:
    """How many vectors the model has, found at most once a minute per process.

    A large library's count is the index's own row estimate (kept by ANALYZE and VACUUM):
    counting a million vectors took 70-85 ms, a search 14 ms. Below ten times the exact-scan
    limit the rows are counted, since whether to scan exactly depends on it."""
    count, counted_at = _vector_counts.get(model.pk, (0, float("-inf")))
    if time.monotonic() - counted_at > 60:
        with read_connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [model.index_name]
            )
            found = cursor.fetchone()
        count = found[0] if found else 0
        # 0 or -1: never analysed (an index built on an empty table says 0), so unknown.
        if count <= 0 or count < 10 * settings.SEARCH_EXACT_MAX_ROWS:
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
    params.update(
        # The index's search width grows with the library (registry.ef_search_for).
        ef_search=registry.ef_search_for(_searchable_count(model)),
        max_scan_tuples=settings.SEARCH_MAX_SCAN_TUPLES,
        query=None if vector is None else _vector_literal(vector),
    )
    if exact is None:
        exact = mode != "keyword" and use_exact_scan(model)
    semantic = {
        "distance": _distance(model, exact=exact),
        "searchable": _searchable(filters),
        "conditions": " AND ".join(conditions),
    }
    ranking = _Ranking(model, semantic, conditions, filters, dict(params), exact=exact)
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
        results.empty_reason = keyword.explain_no_match(words, filters, FILTER_NAMES)
    elif not results.hits:
        results.empty_reason = explain_empty(request, filters, vector, model)
    return results


# -- the pages: slices of one ranking ----------------------------------------------------------


@dataclass
class _Window:
    """The rows a page needs: `limit` of them from `offset` on, within `max_distance`."""

    offset: int
    limit: int
    max_distance: float


# Images of ranked rows (id, distance), in `order`; the rows come as arrays, ranks by ordinality.
RANKED_SQL = """
SELECT {columns}, r.distance, 1 - r.distance AS score,
       ARRAY(SELECT tag.name FROM gallery_tag tag
             JOIN gallery_image_tags it ON it.tag_id = tag.id
             WHERE it.image_id = i.id ORDER BY lower(tag.name)) AS tag_names
FROM unnest(%(ids)s::bigint[], %(distances)s::float8[]) WITH ORDINALITY AS r(id, distance, rank)
JOIN gallery_image i ON i.id = r.id
ORDER BY {order}
LIMIT %(limit)s OFFSET %(offset)s
"""


def _ranked_images(rows, params: dict, *, order: str, limit: int, offset: int) -> list[Image]:
    sql = RANKED_SQL.format(columns=RESULT_COLUMNS, order=order)
    ids, distances = [row[0] for row in rows], [row[1] for row in rows]
    # No vector order here: no index settings, no transaction (one round trip).
    return _run(
        sql,
        {**params, "ids": ids, "distances": distances, "limit": limit, "offset": offset},
        exact=None,
    )


def _semantic_page(request: SearchRequest, ranking: "_Ranking", params: dict, window: _Window):
    """A semantic page: its images, the totals, and how many results a date order covers
    and which (None and "" by relevance)."""
    if request.sort == "relevance":
        ranking.shown = range(window.offset, window.offset + window.limit)
        ranked = ranking.first(window.offset + window.limit, max_distance=window.max_distance)
        page = ranked[window.offset :]
        rows = ranking.images_of(page)
        if rows is None:  # the page lies in a block kept in the cache
            rows = _ranked_images(page, params, order="r.rank", limit=window.limit, offset=0)
        return rows, ranking.totals(len(ranked)), None, ""
    if request.min_score is None:
        # Newest first among a fixed number of the best matches (the page says how many):
        # ordering the whole library by date would not be a search any more.
        pool = min(settings.SEARCH_DATE_SORT_POOL, settings.SEARCH_MAX_RESULTS)
        ranked = ranking.first(pool)
        rows = _ranked_images(
            ranked, params, order=ORDERS["date"], limit=window.limit, offset=window.offset
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
        order=ORDERS["date"],
        page_order=_page_order(ORDERS["date"]),
    )
    matching = {
        **params,
        "pool": None,  # LIMIT NULL: every match
        "limit": window.limit,
        "offset": window.offset,
        "max_distance": window.max_distance,
    }
    ranking.read_exactly = True
    rows, totals = _with_totals(_run(sql, matching, exact=True))
    note = f"Newest first among all {totals.matches:,} results at or above the minimum score."
    return rows, totals, totals.matches, note


def _fused_page(
    request: SearchRequest, mode: str, words, ranking: "_Ranking", params: dict, window: _Window
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
        filters=[condition for _, condition, _ in ranking.filters],
        columns=RESULT_COLUMNS,
        order=order,
        page_order=_page_order(order),
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
    rows, totals = _with_totals(_run(sql, fused, exact=None))
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


# -- the semantic ranking, block by block ---------------------------------------------------

# A block of the ranking: the index's first `pool` rows (relaxed order), sorted strictly;
# the block is the first `size` of them after the previous block's last (distance, id). The
# keyset is applied after the scan, not in it: a filter on the distance made the planner
# leave the index for a sequential scan. Rows ranked within the page being shown (ranks
# counted from 1 within the block) come with their images, so a first page is one statement.
BLOCK_SQL = (
    CANDIDATES
    + """block AS (
    SELECT id, distance FROM candidates
    WHERE {after}
    ORDER BY distance + 0, id
    LIMIT %(size)s
)
SELECT {columns}, b.id AS ranked_id, b.distance, 1 - b.distance AS score,
       (SELECT count(*) FROM candidates) AS found,
       CASE WHEN i.id IS NOT NULL THEN
           ARRAY(SELECT tag.name FROM gallery_tag tag
                 JOIN gallery_image_tags it ON it.tag_id = tag.id
                 WHERE it.image_id = i.id ORDER BY lower(tag.name))
       END AS tag_names
-- Ranked after the LIMIT: a window function below it would turn the top-N sort of an exact
-- block into a sort of every row.
FROM (SELECT *, row_number() OVER (ORDER BY distance + 0, id) AS rank FROM block) b
LEFT JOIN gallery_image i ON i.id = b.id AND b.rank > %(shown_from)s AND b.rank <= %(shown_to)s
ORDER BY b.rank
"""
)
# BLOCK_SQL's columns after the image's own, and where the count of candidates is.
BLOCK_EXTRA_COLUMNS = ["ranked_id", "distance", "score", "found", "tag_names"]
BLOCK_FOUND = IMAGE_FIELDS + BLOCK_EXTRA_COLUMNS.index("found")
# Strictly after the previous block's last row: the keyset that continues the ranking.
AFTER = "(distance, id) > (%(after_distance)s, %(after_id)s)"
# The first block's rows: pages 1 and 2 at the default page size. Small, because a filtered
# search scans the index until this many rows pass the filters (an ef_search-sized first
# block cost a 10 % tag filter 167 ms at 1M vectors); one graph search fills it otherwise.
FIRST_BLOCK = 50
# How long the blocks after the first are kept for the pages that follow.
RANKING_CACHE_SECONDS = 600


@dataclass
class _Ranking:
    """The semantic ranking of one search, as (image id, distance) best first, read in
    blocks as deep as a page needs.

    Each block holds the best rows strictly after the previous block's last (distance, id),
    so the pages cut from the ranking never repeat or skip a row, however deep. (Reading one
    growing pool per page did: under relaxed iterative scan a longer scan can bring rows
    closer than a shorter one returned, so page 2's pool sorted differently from page 1's.)
    Block k keeps `block * 2**k` rows (`block` is FIRST_BLOCK; SEARCH_HYBRID_DEPTH in hybrid
    mode). The first is the index's first rows (one graph search unless filters reject many),
    sorted strictly; later blocks are read `block` rows deeper than they keep so the relaxed
    order is sorted out before the cut. A block the index cannot fill while more rows pass the
    filters is read exactly, as is every block of a library scanned exactly; either way the
    same block gives the same rows.

    The first block is read afresh by every search, so an upload shows at once. The blocks
    after it are kept in the cache for RANKING_CACHE_SECONDS, under the query, the filters
    and the row they follow, so a deep page does not read the earlier blocks again; without
    Redis they are read again and come out the same.
    """

    model: EmbeddingModel
    semantic: dict  # the statement's parts: distance, searchable, conditions
    conditions: list[str]
    filters: list
    params: dict  # the query vector, the filters' values and ef_search
    exact: bool
    rows: list[tuple[int, float]] = field(default_factory=list)
    blocks: int = 0
    ended: bool = False
    read_exactly: bool = False
    # The first block's size (FIRST_BLOCK; SEARCH_HYBRID_DEPTH in hybrid mode).
    block: int = 0
    # Positions (from 0) of the page to be shown: a block read from the database brings
    # their images (`images`, by id), so a page in the first block is one statement.
    shown: range = range(0)
    images: dict[int, Image] = field(default_factory=dict)

    def __post_init__(self):
        self.block = self.block or FIRST_BLOCK

    @property
    def strategy(self) -> str:
        return "exact" if self.exact or self.read_exactly else "hnsw"

    def first(self, count: int, *, max_distance: float = 2.0) -> list[tuple[int, float]]:
        """The first `count` rows (at most SEARCH_MAX_RESULTS) within `max_distance`."""
        count = min(count, settings.SEARCH_MAX_RESULTS)
        while len(self.rows) < count and not self.ended:
            if self.rows and self.rows[-1][1] > max_distance:
                break  # every later row is farther still
            self._read_block()
        return [row for row in self.rows[:count] if row[1] <= max_distance]

    def images_of(self, rows: list[tuple[int, float]]) -> list[Image] | None:
        """The images of these ranked rows, or None when a block read without them (one kept
        in the cache) holds any of them."""
        if not all(image_id in self.images for image_id, _ in rows):
            return None
        return [self.images[image_id] for image_id, _ in rows]

    def totals(self, matches: int) -> _Totals:
        best = 1 - self.rows[0][1] if self.rows else None
        return _Totals(candidates=len(self.rows), matches=matches, best_score=best)

    def _read_block(self) -> None:
        start = len(self.rows)
        size = min(self.block << self.blocks, settings.SEARCH_MAX_RESULTS - start)
        after = self.rows[-1] if self.rows else None
        key = self._cache_key(after, size) if after else None
        block = cache_call(cache.get, key) if key else None
        if block is None:
            block = self._scan(after, size, start)
            if key:
                cache_call(cache.set, key, block, RANKING_CACHE_SECONDS)
        rows, exactly = block
        self.rows += rows
        self.blocks += 1
        self.read_exactly = self.read_exactly or exactly
        self.ended = len(rows) < size or len(self.rows) >= settings.SEARCH_MAX_RESULTS

    def _scan(self, after, size: int, start: int) -> tuple[list[tuple[int, float]], bool]:
        # The shown page's ranks within this block (from 1; an empty range when elsewhere).
        shown_from = min(max(self.shown.start - start, 0), size)
        shown_to = min(max(self.shown.stop - start, shown_from), size)
        params = {**self.params, "size": size, "shown_from": shown_from, "shown_to": shown_to}
        if after is not None:
            params.update(after_id=after[0], after_distance=after[1])
        # An exact read runs with index scans off: its page's images are read by id after it.
        exactly = {**params, "shown_from": 0, "shown_to": 0}
        sql = BLOCK_SQL.format(
            **self.semantic, columns=RESULT_COLUMNS, after="true" if after is None else AFTER
        )
        if not self.exact:
            if after is None:
                # The first block is one graph search as wide as the block, sorted strictly:
                # nothing before it can be missed, so it needs no deeper read.
                pool = size
                params["ef_search"] = max(int(params["ef_search"]), size)
            else:
                # `block` rows deeper than the block needs, so the relaxed order is sorted out.
                pool = start + size + self.block
            rows = _run(sql, {**params, "pool": pool}, exact=False, as_images=False)
            found = rows[0][BLOCK_FOUND] if rows else 0
            if len(rows) == size or not (
                found >= pool
                or _index_scan_fell_short(
                    found, pool, self.model, self.filters, self.conditions, self.params
                )
            ):
                return self._ranked_rows(rows), False
            # The block is short while more rows could follow: the scan ran out of budget
            # before enough rows passed the filters, or returned too many rows the ranking
            # has passed. Read exactly instead of ending the ranking early.
        # Exactly: the first block is the first `size` rows (a top-N sort: 65-100 ms at 100k
        # instead of 220 ms for sorting every row); a later block reads every row in order
        # (LIMIT NULL), so rows the index missed before cannot fill the pool ahead of the
        # ones after the keyset.
        pool = size if after is None else None
        rows = _run(sql, {**exactly, "pool": pool}, exact=True, as_images=False)
        return self._ranked_rows(rows), True

    def _ranked_rows(self, rows) -> list[tuple[int, float]]:
        """A block statement's (image id, distance) rows; the shown rows' images are kept.
        Only those become model instances (50 of them cost ~0.5 ms)."""
        shown = [row for row in rows if row[0] is not None]
        for image in _as_images(BLOCK_EXTRA_COLUMNS, shown):
            self.images[image.pk] = image
        return [(row[IMAGE_FIELDS], float(row[IMAGE_FIELDS + 1])) for row in rows]

    def _cache_key(self, after: tuple[int, float], size: int) -> str:
        parts = [self.model.pk, self.semantic, self.params, self.exact, self.block, size, after]
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
        return f"search-ranking:{digest.hexdigest()}"


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


def _index_scan_fell_short(found: int, pool: int, model, filters, conditions, params) -> bool:
    """Whether an exact scan could find candidates the index scan did not (it ran out of scan
    budget with `found` of the `pool` rows it was asked for).

    Not when the results simply end before the pool is full (a small library, a narrow
    filter): then every vector of the model was a candidate, or the rows that pass the
    filters, counted only up to the pool, are no more than the candidates. That count
    computes no distance; an exact scan computes one for every row that passes.
    """
    if found >= pool or found >= _searchable_count(model):
        return False
    with read_connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {_searchable(filters)} "
            f"WHERE {' AND '.join(conditions)} LIMIT %(pool)s) passing",
            {**params, "pool": pool},
        )
        return cursor.fetchone()[0] > found


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
        with read_connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 - min({_distance(model, exact=True)}) FROM {SEARCHABLE} "
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
    with read_connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {SEARCHABLE} WHERE {' AND '.join(conditions)}", params
        )
        return cursor.fetchone()[0]

"""Reading the library: turning a query into one pgvector statement and explaining the result.

The search page, the JSON API, the benchmarks and the evaluation command all call
`search_images`. Vector order and every filter run in a single SQL statement:

    WITH candidates AS MATERIALIZED (              -- HNSW (or exact) order + all filters
        SELECT id, embedding <=> q AS distance ... WHERE filters ORDER BY distance LIMIT n)
    SELECT ... FROM candidates ... ORDER BY distance + 0   -- strict order restored

With `hnsw.iterative_scan = relaxed_order` the index keeps scanning until enough rows pass the
filters (a 0.5 % filter returned 0.2 of 10 rows without it, 10 of 10 with it); the
materialized CTE then restores strict order, as pgvector's documentation prescribes.
"""

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from gallery import encoder
from gallery.models import Image, Tag
from gallery.query import QuerySyntaxError, parse_query

logger = logging.getLogger(__name__)

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


@dataclass
class Hit:
    image: Image
    score: float

    @property
    def tag_names(self) -> list[str]:
        return self.image.tag_names


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

    @property
    def confident(self) -> bool:
        return self.best_score is not None and self.best_score >= self.confidence_threshold

    @property
    def start_rank(self) -> int:
        return (self.page - 1) * self.page_size + 1


# -- query vectors ---------------------------------------------------------------------------

_text_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
_text_vectors_lock = threading.Lock()


def text_vector(text: str) -> np.ndarray:
    """The text encoder's vector for `text`, cached in process (LRU) and in Redis."""
    key = (
        f"textvec:{hashlib.sha256(f'{encoder.configured_model_id()}|{text}'.encode()).hexdigest()}"
    )
    with _text_vectors_lock:
        if key in _text_vectors:
            _text_vectors.move_to_end(key)
            return _text_vectors[key]
    vector = _cached_in_redis(key)
    if vector is None:
        vector = encoder.encode_texts([text])[0]
        _store_in_redis(key, vector)
    with _text_vectors_lock:
        _text_vectors[key] = vector
        while len(_text_vectors) > settings.TEXT_VECTOR_CACHE_SIZE:
            _text_vectors.popitem(last=False)
    return vector


def _cached_in_redis(key: str) -> np.ndarray | None:
    try:
        raw = cache.get(key)
    except Exception:  # the cache is an optimisation; search works without Redis
        return None
    return None if raw is None else np.frombuffer(raw, dtype=np.float32)


def _store_in_redis(key: str, vector: np.ndarray) -> None:
    try:
        cache.set(key, vector.astype(np.float32).tobytes())
    except Exception:
        logger.warning("Could not cache a text vector in Redis", exc_info=True)


def clear_text_vector_cache() -> None:
    with _text_vectors_lock:
        _text_vectors.clear()


def remember_query_image(vector: np.ndarray) -> str:
    """Keep an uploaded query image's vector for paging; returns its token."""
    data = np.asarray(vector, dtype=np.float32).tobytes()
    token = hashlib.sha256(data).hexdigest()[:32]
    cache.set(f"queryimage:{token}", data, timeout=24 * 3600)
    return token


def recall_query_image(token: str) -> np.ndarray:
    raw = cache.get(f"queryimage:{token}") if token.isalnum() else None
    if raw is None:
        raise SearchError("image", "The query image has expired; upload it again.")
    return np.frombuffer(raw, dtype=np.float32)


def query_vector(request: SearchRequest) -> tuple[np.ndarray, bool]:
    """The combined, normalised query vector and whether an image took part."""
    try:
        terms = parse_query(request.text)
    except QuerySyntaxError as error:
        raise SearchError("q", str(error)) from None
    parts = [term.weight * text_vector(term.text) for term in terms]
    has_image = False
    if request.image_vector is not None:
        parts.append(np.asarray(request.image_vector, dtype=np.float32))
        has_image = True
    if request.like_image_id is not None:
        parts.append(_stored_vector(request.like_image_id))
        has_image = True
    if not has_image and not any(term.weight > 0 for term in terms):
        if terms:
            raise SearchError("q", "Add a word to search for, not only '-' terms to avoid.")
        raise SearchError("q", "Type something to search for, or give a query image.")
    combined = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(combined))
    if norm < 1e-6:
        raise SearchError("q", "The query's terms cancel each other out.")
    return (combined / norm).astype(np.float32), has_image


def _stored_vector(image_id: int) -> np.ndarray:
    image = Image.objects.filter(pk=image_id).only("embedding", "embedding_model", "status").first()
    if image is None:
        raise SearchError("like", f"There is no image {image_id}.")
    if image.embedding is None or image.embedding_model != encoder.configured_model_id():
        raise SearchError("like", "That image is not indexed yet; try again in a moment.")
    return np.asarray(image.embedding, dtype=np.float32)


# -- the statement ---------------------------------------------------------------------------


def _tag_ids(parameter: str, names: list[str]) -> list[int]:
    if not names:
        return []
    found = {tag.name.lower(): tag.pk for tag in Tag.objects.filter(name__in=names)}
    for name in names:
        if name.lower() not in found:
            match = Tag.objects.filter(name__iexact=name).first()
            if match is None:
                raise SearchError(parameter, f"There is no tag named {name!r}.")
            found[name.lower()] = match.pk
    return [found[name.lower()] for name in names]


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, datetime.min.time()))


def _tag_filter(parameter: str, names: list[str], exists: str) -> tuple[str, str, dict]:
    condition = (
        f"{exists} (SELECT 1 FROM gallery_image_tags t "
        f"WHERE t.image_id = i.id AND t.tag_id = ANY(%({parameter})s))"
    )
    return parameter, condition, {parameter: _tag_ids(parameter, names)}


def _filters(request: SearchRequest) -> list[tuple[str, str, dict]]:
    """(filter name, SQL condition on alias i, parameters), in the order they are explained."""
    if request.after and request.before and request.after > request.before:
        raise SearchError(
            "after", f"The date range is reversed: {request.after} is after {request.before}."
        )
    filters = []
    if request.tags_any:
        filters.append(_tag_filter("tags_any", request.tags_any, "EXISTS"))
    if request.tags_all:
        ids = sorted(set(_tag_ids("tags_all", request.tags_all)))
        filters.append(
            (
                "tags_all",
                "(SELECT count(*) FROM gallery_image_tags t WHERE "
                "t.image_id = i.id AND t.tag_id = ANY(%(tags_all)s)) = %(tags_all_n)s",
                {"tags_all": ids, "tags_all_n": len(ids)},
            )
        )
    if request.tags_not:
        filters.append(_tag_filter("tags_not", request.tags_not, "NOT EXISTS"))
    if request.after:
        filters.append(("after", "i.taken_at >= %(after)s", {"after": _day_start(request.after)}))
    if request.before:
        filters.append(
            (
                "before",
                "i.taken_at < %(before)s",
                {"before": _day_start(request.before + timedelta(days=1))},
            )
        )
    return filters


def _base_conditions() -> tuple[list[str], dict]:
    return (
        ["i.status = 'indexed'", "i.embedding_model = %(model)s"],
        {"model": encoder.configured_model_id()},
    )


SEARCH_SQL = """
WITH candidates AS MATERIALIZED (
    SELECT i.id, i.taken_at, i.embedding <=> %(query)s::vector AS distance
    FROM gallery_image i
    WHERE {conditions}
    ORDER BY distance
    LIMIT %(pool)s
)
SELECT {columns}, 1 - c.distance AS score,
       (SELECT count(*) FROM candidates) AS candidate_count,
       (SELECT 1 - min(distance) FROM candidates) AS best_score,
       ARRAY(SELECT tag.name FROM gallery_tag tag
             JOIN gallery_image_tags it ON it.tag_id = tag.id
             WHERE it.image_id = i.id ORDER BY lower(tag.name)) AS tag_names
FROM candidates c JOIN gallery_image i ON i.id = c.id
WHERE c.distance <= %(max_distance)s
ORDER BY {order}
LIMIT %(limit)s OFFSET %(offset)s
"""
# Every column but the vector, which the page never shows and which costs ~0.2 ms a row to parse.
RESULT_COLUMNS = ", ".join(
    f"i.{field.column}" for field in Image._meta.concrete_fields if field.name != "embedding"
)
ORDERS = {
    # "+ 0" makes PostgreSQL sort the materialized rows again (strict order after relaxed scan).
    "relevance": "c.distance + 0, c.id",
    "date": "c.taken_at DESC, c.id DESC",
}


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{value:.7g}" for value in vector.tolist()) + "]"


def _run(sql: str, params: dict, *, exact: bool) -> list[Image]:
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
        return rows


_row_estimate = {"rows": 0, "at": 0.0}


def _indexed_rows_estimate() -> int:
    """The table's row count as PostgreSQL estimates it, refreshed each minute."""
    if time.monotonic() - _row_estimate["at"] > 60:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT greatest(reltuples, 0) FROM pg_class WHERE relname = 'gallery_image'"
            )
            row = cursor.fetchone()
        _row_estimate.update(rows=int(row[0]) if row else 0, at=time.monotonic())
    return _row_estimate["rows"]


def use_exact_scan() -> bool:
    return _indexed_rows_estimate() <= settings.SEARCH_EXACT_MAX_ROWS


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
    filters = _filters(request)  # before encoding: a bad filter is cheaper to report
    vector, has_image = query_vector(request)
    conditions, params = _base_conditions()
    for _, condition, values in filters:
        conditions.append(condition)
        params.update(values)
    offset = (request.page - 1) * request.page_size
    wanted = offset + request.page_size + 1  # one more tells whether a next page exists
    # Sorting by date pages through a fixed pool of the most relevant hits.
    pool = wanted if request.sort == "relevance" else settings.SEARCH_DATE_SORT_POOL
    params.update(
        query=_vector_literal(vector),
        pool=pool,
        limit=request.page_size + 1,
        offset=offset,
        max_distance=2.0 if request.min_score is None else 1 - request.min_score,
    )
    sql = SEARCH_SQL.format(
        columns=RESULT_COLUMNS, conditions=" AND ".join(conditions), order=ORDERS[request.sort]
    )
    if exact is None:
        exact = use_exact_scan()
    started = time.perf_counter()
    rows = _run(sql, params, exact=exact)
    if not exact and _scan_fell_short(rows, pool):
        # The index ran out of scan budget before finding enough rows that pass the filters:
        # answer exactly instead of returning a short page.
        exact = True
        rows = _run(sql, params, exact=True)
    database_ms = (time.perf_counter() - started) * 1000
    threshold = settings.SEARCH_IMAGE_CONFIDENCE if has_image else settings.SEARCH_TEXT_CONFIDENCE
    results = SearchResults(
        hits=[Hit(image=row, score=float(row.score)) for row in rows[: request.page_size]],
        page=request.page,
        page_size=request.page_size,
        has_next=len(rows) > request.page_size,
        best_score=float(rows[0].best_score) if rows else None,
        confidence_threshold=threshold,
        strategy="exact" if exact else "hnsw",
        database_ms=database_ms,
    )
    if not results.hits:
        results.empty_reason = explain_empty(request, filters, vector)
    return results


def _scan_fell_short(rows: list[Image], pool: int) -> bool:
    """Fewer candidates than asked for: the filters may have outlasted the scan budget."""
    return not rows or rows[0].candidate_count < pool


# -- explaining an empty page ----------------------------------------------------------------

FILTER_NAMES = {
    "tags_any": "the tags to include (any of)",
    "tags_all": "the tags that must all be present",
    "tags_not": "the tags to exclude",
    "after": "the start date",
    "before": "the end date",
}


def explain_empty(request: SearchRequest, filters, vector: np.ndarray) -> str:
    """Which filter removed everything, found by adding the filters one at a time."""
    conditions, params = _base_conditions()
    if not _count(conditions, params):
        waiting = Image.objects.exclude(status=Image.Status.INDEXED).count()
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
                f"SELECT 1 - min(i.embedding <=> %(query)s::vector) FROM gallery_image i "
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
            f"SELECT count(*) FROM gallery_image i WHERE {' AND '.join(conditions)}", params
        )
        return cursor.fetchone()[0]


def query_image_vector(data: bytes, filename: str = "query image") -> np.ndarray:
    """The vector of an uploaded query image, after the same checks as an upload."""
    import io

    from gallery.ingest import RejectedImage, check_upload_size, validate_image

    try:
        check_upload_size(len(data))
        validate_image(data, filename, notes=[])
    except RejectedImage as error:
        raise SearchError("image", str(error)) from None
    picture = encoder.open_image_for_encoding(io.BytesIO(data))
    return encoder.encode_images([picture])[0]


# -- keyword search (the baseline a user has without CLIP) -----------------------------------

KEYWORD_SQL = """
WITH query AS (
    -- Any of the query's stemmed words (OR), so a long caption still finds partial matches.
    SELECT NULLIF(array_to_string(tsvector_to_array(to_tsvector('english', %(text)s)), ' | '),
                  '')::tsquery AS terms
), documents AS (
    SELECT i.id, to_tsvector('english',
        i.caption || ' ' || regexp_replace(i.original_filename, '[._-]+', ' ', 'g') || ' ' ||
        coalesce((SELECT string_agg(tag.name, ' ') FROM gallery_tag tag
                  JOIN gallery_image_tags it ON it.tag_id = tag.id WHERE it.image_id = i.id), '')
    ) AS document
    FROM gallery_image i
)
SELECT d.id FROM documents d, query q
WHERE d.document @@ q.terms
ORDER BY ts_rank_cd(d.document, q.terms) DESC, d.id
LIMIT %(limit)s
"""


def keyword_search(text: str, *, limit: int = 100) -> list[int]:
    """Image ids ranked by PostgreSQL full-text search over captions, file names and tags."""
    with connection.cursor() as cursor:
        cursor.execute(KEYWORD_SQL, {"text": text, "limit": limit})
        return [row[0] for row in cursor.fetchall()]


# -- browsing --------------------------------------------------------------------------------


def browse_images(*, status: str = ""):
    """The gallery: newest first, optionally only one indexing status."""
    images = Image.objects.prefetch_related("tags")
    if status in Image.Status.values:
        images = images.filter(status=status)
    return images


def status_counts() -> dict[str, int]:
    counts = dict(Image.objects.values_list("status").annotate(n=Count("pk")))
    return {status: counts.get(status, 0) for status in Image.Status.values}

"""How a search's SQL is written and run: the query vector and its distance in the form of the
model's index, what is searched (vectors, joined to images when a filter reads them), the
index's settings sent in the same round trip, and result rows turned into images."""

import functools
import time

import numpy as np
from django.conf import settings
from django.db import transaction

from gallery.indexing import vector_index
from gallery.models import EmbeddingModel, Image
from gallery.replicas import read_connection
from gallery.search import filters as search_filters

# The image's columns; never the vector, which the page does not show (~0.2 ms a row to parse).
RESULT_COLUMNS = ", ".join(f"i.{field.column}" for field in Image._meta.concrete_fields)
IMAGE_FIELDS = len(Image._meta.concrete_fields)


def tag_names_of(image_id: str) -> str:
    """A result's tag names, sorted as the pages show them; `image_id` is its id's column."""
    return (
        "ARRAY(SELECT tag.name FROM gallery_tag tag JOIN gallery_image_tags it "
        f"ON it.tag_id = tag.id WHERE it.image_id = {image_id} ORDER BY lower(tag.name))"
    )


# Images with a vector of the active model, aliased i (image) and e (embedding).
SEARCHABLE = "gallery_embedding e JOIN gallery_image i ON i.id = e.image_id"

# Result orders for the aliases of the ranked rows ({c}) and of their images ({i}).
ORDERS = {
    # "+ 0" makes PostgreSQL sort the materialized rows again (strict order after relaxed scan).
    "relevance": "{c}.distance + 0, {c}.id",
    "date": "{i}.taken_at DESC, {i}.id DESC",
}


def order_sql(order: str, *, ranked: str = "c", image: str = "i") -> str:
    return order.format(c=ranked, i=image)


def vector_literal(vector: np.ndarray) -> str:
    # One format for the whole vector: ~40 % faster than formatting 512 values one by one.
    return _literal_format(len(vector)) % tuple(vector.tolist())


@functools.cache
def _literal_format(dimensions: int) -> str:
    return "[" + ",".join(["%.7g"] * dimensions) + "]"


def distance_sql(model: EmbeddingModel, *, exact: bool = False) -> str:
    """Cosine distance in the exact form of the model's index expression (see vector_index).

    A search that never uses the index (`exact`: a small library) reads the full-precision
    vectors instead: a halfvec index's distances are good to about 1e-3, and near-ties
    would otherwise come out in another order than the stored vectors say."""
    storage = "vector" if exact else vector_index.index_storage(model)
    expression = vector_index.vector_expression(model, storage)
    return f"{expression} <=> %(query)s::{storage}({int(model.dimensions)})"


def model_condition(model: EmbeddingModel) -> str:
    # A literal, not a parameter: the planner must see it to use the model's partial index.
    return f"e.model_id = {int(model.pk)}"


def searchable(filters: list[search_filters.Filter]) -> str:
    """The vectors alone unless a filter needs the image row. Measured at 100k: an exact scan
    took 250 ms with the join and 135 ms without; a 1 % tag filter 9.4 ms and 6.6 ms."""
    return SEARCHABLE if search_filters.reads_image_rows(filters) else "gallery_embedding e"


# The settings of an index scan: how wide the graph search is, and that it goes on scanning
# (to hnsw.max_scan_tuples) until enough rows pass the filters.
INDEX_SETTINGS = (
    "SELECT set_config('hnsw.ef_search', %(ef_search)s::text, true), "
    "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    "set_config('hnsw.max_scan_tuples', %(max_scan_tuples)s::text, true)"
)


def run(sql: str, params: dict, *, exact: bool | None, as_images: bool = True) -> list:
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


def count(sql_from: str, conditions: list[str], params: dict) -> int:
    with read_connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {sql_from} WHERE {' AND '.join(conditions)}", params)
        return cursor.fetchone()[0]


def _fetch(cursor, as_images: bool) -> list:
    """The cursor's rows: plain tuples (hundreds of (id, distance) rows cost ~10 us each as
    model instances), or images (see `as_images`)."""
    rows = cursor.fetchall()
    if not as_images:
        return rows
    return as_images_of([column.name for column in cursor.description[IMAGE_FIELDS:]], rows)


def as_images_of(names: list[str], rows) -> list[Image]:
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


vector_counts: dict[int, tuple[int, float]] = {}  # model pk -> (vectors, when counted)


def searchable_count(model: EmbeddingModel) -> int:
    """How many vectors the model has, found at most once a minute per process.

    A large library's count is the index's own row estimate (kept by ANALYZE and VACUUM):
    counting a million vectors took 70-85 ms, a search 14 ms. Below ten times the exact-scan
    limit the rows are counted, since whether to scan exactly depends on it."""
    known, counted_at = vector_counts.get(model.pk, (0, float("-inf")))
    if time.monotonic() - counted_at > 60:
        with read_connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [model.index_name]
            )
            found = cursor.fetchone()
        known = found[0] if found else 0
        # 0 or -1: never analysed (an index built on an empty table says 0), so unknown.
        if known <= 0 or known < 10 * settings.SEARCH_EXACT_MAX_ROWS:
            known = model.embeddings.count()
        vector_counts[model.pk] = (known, time.monotonic())
    return known


def use_exact_scan(model: EmbeddingModel) -> bool:
    return searchable_count(model) <= settings.SEARCH_EXACT_MAX_ROWS

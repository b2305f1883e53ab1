"""The vector index: each model's partial HNSW index on gallery_embedding, its name and storage
(vector or halfvec), the expression searches order by, ef_search, and rebuilding it.
"""

import re
import threading
import time

from django.conf import settings
from django.db import connection, transaction

from gallery.models import EmbeddingModel

# The operator class of each storage an index can keep its vectors in.
INDEX_OPERATOR_CLASSES = {"vector": "vector_cosine_ops", "halfvec": "halfvec_cosine_ops"}


def vector_expression(model: EmbeddingModel, storage: str, alias: str = "e") -> str:
    """The model's vectors cast to their own size in `storage`: the expression its index
    orders by. A statement that orders by exactly this expression (under the index's
    predicate) is one PostgreSQL answers from the index."""
    return f"({alias}.vector::{storage}({int(model.dimensions)}))"


def vector_index_sql(
    model: EmbeddingModel,
    *,
    storage: str | None = None,
    m: int | None = None,
    ef_construction: int | None = None,
    name: str | None = None,
    concurrently: bool = False,
) -> str:
    """This model's partial HNSW cosine index (by default as configured: SEARCH_INDEX_*)."""
    storage = storage or settings.SEARCH_INDEX_STORAGE
    m = m or settings.SEARCH_INDEX_M
    ef_construction = ef_construction or settings.SEARCH_INDEX_EF_CONSTRUCTION
    expression = vector_expression(model, storage, alias="gallery_embedding")
    return (
        f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS "
        f"{name or model.index_name} ON gallery_embedding "
        f"USING hnsw ({expression.replace('gallery_embedding.', '')} "
        f"{INDEX_OPERATOR_CLASSES[storage]}) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE model_id = {int(model.pk)}"
    )


def create_vector_index(model: EmbeddingModel) -> None:
    with connection.cursor() as cursor:
        # CREATE INDEX refuses a table with deferred foreign-key checks still pending.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(vector_index_sql(model))


def rebuilt_index_name(model: EmbeddingModel) -> str:
    return f"{model.index_name}_rebuild"


_index_storages: dict[int, tuple[str, float]] = {}  # model pk -> (storage, when read)
_index_storage_lock = threading.Lock()


def index_storage(model: EmbeddingModel) -> str:
    """The storage of the model's valid HNSW index, which the search statement must match.

    Read from the catalog every MODEL_REFRESH_SECONDS, so a rebuild into another storage
    (`rebuild_vector_index`) reaches every process while both indexes still exist. Where
    both do, the configured storage wins; where none does, the configured storage.
    """
    with _index_storage_lock:
        storage, read_at = _index_storages.get(model.pk, ("", float("-inf")))
    if time.monotonic() - read_at < settings.MODEL_REFRESH_SECONDS:
        return storage
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x "
            "JOIN pg_class c ON c.oid = x.indexrelid "
            "WHERE x.indrelid = 'gallery_embedding'::regclass AND x.indisvalid "
            "AND c.relname IN (%s, %s)",
            [model.index_name, rebuilt_index_name(model)],
        )
        found = {
            storage
            for (definition,) in cursor.fetchall()
            for storage, operator_class in INDEX_OPERATOR_CLASSES.items()
            if operator_class in definition
        }
    storage = settings.SEARCH_INDEX_STORAGE
    if found and storage not in found:
        storage = found.pop()
    with _index_storage_lock:
        _index_storages[model.pk] = (storage, time.monotonic())
    return storage


def forget_index_storages() -> None:
    with _index_storage_lock:
        _index_storages.clear()


def index_description(model: EmbeddingModel) -> str:
    """The model's index as a person reads it: storage, parameters and size."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(c.oid), pg_size_pretty(pg_relation_size(c.oid)) "
            "FROM pg_class c WHERE c.relname = %s",
            [model.index_name],
        )
        row = cursor.fetchone()
    if row is None:
        return "no index"
    definition, size = row
    storage = next(
        (name for name, opclass in INDEX_OPERATOR_CLASSES.items() if opclass in definition), "?"
    )
    # "... WITH (m='32', ef_construction='200') WHERE ..." -> "m 32, ef_construction 200"
    parameters = re.search(r"WITH \((.*?)\)", definition).group(1)
    parameters = re.sub(r"='?(\d+)'?", r" \1", parameters)
    return f"{storage}, {parameters}, {size}"


def ef_search_for(vector_count: int) -> int:
    """hnsw.ef_search for a library of this size: SEARCH_EF_SEARCH when set, else a value
    that grows with the library: 100 up to 100k vectors, 251 at 1M, at most 400 (bench_search's
    1M clustered vectors, m 32 halfvec: recall@10 0.981 at ef 200 in 12.7 ms, 0.988 at 251 in
    14.2 ms; an earlier build of the same index measured 0.953 and 0.969)."""
    if settings.SEARCH_EF_SEARCH:
        return settings.SEARCH_EF_SEARCH
    return max(100, min(400, round(100 * (max(vector_count, 1) / 100_000) ** 0.4)))


def rebuild_vector_index(
    model: EmbeddingModel, *, storage: str | None = None, m=None, ef_construction=None, progress
) -> float:
    """Build the model's index anew with the configured (or given) parameters while searches
    go on: CREATE INDEX CONCURRENTLY under a second name, wait until every process has
    seen it, then drop the old one and give the new one its name. Returns seconds taken."""
    started = time.monotonic()
    new_name = rebuilt_index_name(model)
    with connection.cursor() as cursor:
        # A rebuild that was interrupted leaves an invalid index behind: start afresh.
        cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {new_name}")
        progress(f"Building {new_name} (searches keep using {model.index_name})...")
        cursor.execute(
            vector_index_sql(
                model,
                storage=storage,
                m=m,
                ef_construction=ef_construction,
                name=new_name,
                concurrently=True,
            )
        )
    # Processes re-read the index storage every MODEL_REFRESH_SECONDS: once they have, none
    # sends a statement that only the old index answers.
    progress(f"Waiting {settings.MODEL_REFRESH_SECONDS} s for every process to see it...")
    time.sleep(settings.MODEL_REFRESH_SECONDS + 1)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {model.index_name}")
        cursor.execute(f"ALTER INDEX {new_name} RENAME TO {model.index_name}")
    forget_index_storages()
    return time.monotonic() - started


def drop_vector_indexes(model: EmbeddingModel) -> None:
    """Drop the model's index and any rebuild of it left behind; locks the table against
    searches until the transaction commits."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {model.index_name}")
        cursor.execute(f"DROP INDEX IF EXISTS {rebuilt_index_name(model)}")

"""bench_search: recall@10 and database latency of the product's search statement on synthetic
vectors, per ef_search, filtered, in the other index storage and for a second model, beside
the bare index query, FAISS and HTTP."""

import time

import numpy as np
from django.db import connection
from django.test.utils import override_settings

from gallery.indexing import encoder, encoder_base, registry, vector_index
from gallery.models import EmbeddingModel
from gallery.offline import faiss_comparison, http_latency, sandbox
from gallery.offline.synthetic import BENCH_TAGS, clustered_unit_vectors, load_vectors, tagged_rows
from gallery.offline.timing import recall_and_latency, recall_of
from gallery.search.request import SearchRequest
from gallery.search.selector import search_images


def build_index(sql: str, name: str) -> dict:
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(sql)
        seconds = time.perf_counter() - started
        cursor.execute("SELECT pg_relation_size(%s)", [name])
        size = cursor.fetchone()[0]
    return {"build_seconds": round(seconds, 1), "size_mb": round(size / 2**20, 1)}


def measure_search(
    queries, expected, *, ef: int | None, exact: bool = False, filters: dict | None = None
) -> dict:
    """Recall@10 and database latency of the product's own search statement."""
    recalls, latencies, returned = [], [], []
    overrides = {} if ef is None else {"SEARCH_EF_SEARCH": ef}
    with override_settings(**overrides):
        search_images(SearchRequest(image_vector=queries[0], page_size=10), exact=exact)  # warm
        for query, truth in zip(queries, expected, strict=True):
            results = search_images(
                SearchRequest(image_vector=query, page_size=10, **(filters or {})), exact=exact
            )
            found = [hit.image.pk for hit in results.hits]
            returned.append(len(found))
            recalls.append(recall_of(found, truth))
            latencies.append(results.database_ms)
    return {
        **recall_and_latency(recalls, latencies),
        "mean_rows_returned": round(float(np.mean(returned)), 2),
        "min_rows_returned": int(np.min(returned)),
    }


def measure_bare_statement(queries, expected, ef: int, model) -> dict:
    """The smallest statement the index answers (ids of the top 10, nothing else), with the
    settings made once per session: what the product statement's extra work is measured
    against (statement overhead, README)."""
    storage = vector_index.index_storage(model)
    expression = vector_index.vector_expression(model, storage)
    distance = f"{expression} <=> %s::{storage}({int(model.dimensions)})"
    sql = (
        f"SELECT e.image_id FROM gallery_embedding e WHERE e.model_id = {int(model.pk)} "
        f"ORDER BY {distance} LIMIT 10"
    )
    recalls, latencies = [], []
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, false)", [str(ef)])
        for query, truth in zip(queries, expected, strict=True):
            literal = "[" + ",".join(f"{v:.7g}" for v in query.tolist()) + "]"
            started = time.perf_counter()
            cursor.execute(sql, [literal])
            found = [row[0] for row in cursor.fetchall()]
            latencies.append((time.perf_counter() - started) * 1000)
            recalls.append(recall_of(found, truth))
        cursor.execute("RESET hnsw.ef_search")
    return recall_and_latency(recalls, latencies)


def run_search_benchmark(
    *,
    count: int,
    ef_values: list[int],
    query_count: int,
    model: str,
    m: int,
    ef_construction: int,
    storage: str,
    http: bool,
    other_storage: bool = True,
    faiss: bool = True,
    second_model: str = "",
    progress=print,
) -> dict:
    """Search figures for one model's vectors, and optionally a larger second model's.

    Both models' vectors share gallery_embedding, as during a model switch, so the second
    row also shows that each model's partial index serves its own vectors only.
    """
    figures = {"count": count, "m": m, "ef_construction": ef_construction, "storage": storage}
    overrides = {**sandbox.random_weights(model), "SEARCH_INDEX_STORAGE": storage}
    with override_settings(**overrides), sandbox.isolated_library("benchsearch") as library:
        vector_index.forget_index_storages()
        active = registry.active_model()
        figures["model"] = active.model_id
        figures["dimensions"] = active.dimensions
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX {active.index_name}")  # COPY first, then build
        progress(f"Generating and loading {count:,} vectors with COPY...")
        vectors = clustered_unit_vectors(count, seed=1, dimensions=active.dimensions)
        started = time.perf_counter()
        ids = np.array(load_vectors(vectors, active))
        figures["load_seconds"] = round(time.perf_counter() - started, 1)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        progress(
            f"Building the HNSW index ({storage}, m {m}, ef_construction {ef_construction})..."
        )
        figures["index"] = _build_model_index(active, m, ef_construction, storage=storage)
        vector_index.forget_index_storages()
        queries = clustered_unit_vectors(query_count, seed=2, dimensions=active.dimensions)
        scores = queries @ vectors.T
        truth_positions = [list(np.argsort(-row)[:10]) for row in scores]
        truth = [list(ids[positions]) for positions in truth_positions]
        shipped = vector_index.ef_search_for(count)
        ef_values = sorted({*ef_values, shipped})
        progress("Measuring recall and latency per ef_search...")
        figures["ef_search"] = [
            {"ef_search": ef, **measure_search(queries, truth, ef=ef)} for ef in ef_values
        ]
        figures["exact_scan"] = measure_search(queries[:10], truth[:10], ef=None, exact=True)
        figures["shipped_ef_search"] = shipped
        figures["statement"] = {
            "ef_search": shipped,
            "bare": measure_bare_statement(queries, truth, shipped, active),
            "product": measure_search(queries, truth, ef=shipped),
        }
        figures["filtered"] = _filtered_figures(queries, scores, ids, shipped, progress)
        if other_storage:
            other = next(kind for kind in vector_index.INDEX_OPERATOR_CLASSES if kind != storage)
            progress(f"Building the same index as {other}, measured beside it...")
            figures["other_storage"] = _other_storage_figures(
                active, other, queries, truth, shipped, m, ef_construction
            )
        if faiss:
            figures["faiss"] = faiss_comparison.measure_faiss(
                vectors,
                queries,
                truth_positions,
                m=m,
                ef_construction=ef_construction,
                ef_values=ef_values,
                progress=progress,
            )
            figures["faiss_ratios"] = faiss_comparison.ratios_to_faiss(
                figures["ef_search"], figures["faiss"]
            )
            figures["statement"]["faiss_p50_ms"] = next(
                row["p50_ms"]
                for row in figures["faiss"]["ef_search"]
                if row["ef_search"] == shipped
            )
        if http:
            progress("Measuring end-to-end HTTP latency under gunicorn...")
            figures["http"] = http_latency.measure_http(library, model)
        if second_model:
            figures["second_model"] = _second_model_figures(
                second_model, count, query_count, shipped, m, ef_construction, progress
            )
    vector_index.forget_index_storages()
    return figures


def _filtered_figures(queries, scores, ids, ef: int, progress) -> list[dict]:
    """The product statement restricted to each bench tag, against the exact filtered top 10."""
    figures = []
    for tag, every in BENCH_TAGS:
        mask = tagged_rows(scores.shape[1], every)
        filtered_truth = []
        for row in scores:
            order = np.argsort(-row)
            filtered_truth.append(list(ids[order[mask[order]]][:10]))
        progress(f"Measuring filtered queries ({tag})...")
        figures.append(
            {
                "selectivity": tag,
                "matching_rows": int(mask.sum()),
                **measure_search(queries, filtered_truth, ef=ef, filters={"tags_any": [tag]}),
            }
        )
    return figures


def _other_storage_figures(
    model, storage: str, queries, truth, ef: int, m: int, ef_construction: int
) -> dict:
    """The same index built in the other storage beside the first, measured, then dropped."""
    name = vector_index.rebuilt_index_name(model)
    figures = {
        "storage": storage,
        "index": _build_model_index(model, m, ef_construction, storage=storage, name=name),
        "ef_search": ef,
    }
    with override_settings(SEARCH_INDEX_STORAGE=storage):
        vector_index.forget_index_storages()
        figures.update(measure_search(queries, truth, ef=ef))
    vector_index.forget_index_storages()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {name}")
    return figures


def _build_model_index(
    model, m: int, ef_construction: int, *, storage: str | None = None, name: str | None = None
) -> dict:
    """The product's partial index for this model (registry SQL), with the given parameters."""
    sql = vector_index.vector_index_sql(
        model, m=m, ef_construction=ef_construction, storage=storage, name=name
    )
    return build_index(sql, name or model.index_name)


def _second_model_figures(
    architecture: str, count: int, query_count: int, ef: int, m: int, ef_construction: int, progress
) -> dict:
    """Register a second model, load its vectors for the same images, activate and measure."""
    dimensions = encoder.architecture_dimensions(architecture)
    second = EmbeddingModel.objects.create(
        model_id=f"{architecture}:random-seed0",
        architecture=architecture,
        pretrained=encoder_base.RANDOM_WEIGHTS,
        dimensions=dimensions,
        state=EmbeddingModel.State.NEXT,
    )
    progress(f"Loading {count:,} {dimensions}-d vectors of {architecture} for the same images...")
    vectors = clustered_unit_vectors(count, seed=3, dimensions=dimensions)
    ids = np.array(load_vectors(vectors, second, create_images=False))
    progress(f"Building the HNSW index of {architecture}...")
    index = _build_model_index(second, m, ef_construction)
    registry.activate_model(second)
    queries = clustered_unit_vectors(query_count, seed=4, dimensions=dimensions)
    truth = [list(ids[np.argsort(-row)[:10]]) for row in queries @ vectors.T]
    progress(f"Measuring {architecture} at ef_search {ef}...")
    return {
        "model": second.model_id,
        "dimensions": dimensions,
        "index": index,
        "ef_search": ef,
        **measure_search(queries, truth, ef=ef),
    }

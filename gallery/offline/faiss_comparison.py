"""FAISS beside the product: the same vectors and queries through FAISS's HNSW and exact scan,
and the product's recall and latency relative to it."""

import os
import time

from gallery.offline.timing import recall_and_latency, recall_of


def measure_faiss(
    vectors, queries, truth_positions, *, m: int, ef_construction: int, ef_values, progress
) -> dict:
    """The same vectors and queries through FAISS (the in-memory library rclip-like tools
    use): HNSW with the same m / ef_construction, built on every core and searched one query
    at a time on one thread, and an exact inner-product scan."""
    import faiss  # the bench extra; imported here so that --no-faiss runs without it

    dimensions = vectors.shape[1]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexHNSWFlat(dimensions, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    progress(f"FAISS: building HNSW (m {m}, ef_construction {ef_construction})...")
    started = time.perf_counter()
    index.add(vectors)
    figures = {"build_seconds": round(time.perf_counter() - started, 1), "ef_search": []}
    faiss.omp_set_num_threads(1)

    def timed(search_index, query_rows, truths):
        recalls, latencies = [], []
        for query, truth in zip(query_rows, truths, strict=True):
            started = time.perf_counter()
            _, found = search_index.search(query[None, :], 10)
            latencies.append((time.perf_counter() - started) * 1000)
            recalls.append(recall_of(found[0].tolist(), truth))
        return recall_and_latency(recalls, latencies)

    for ef in ef_values:
        index.hnsw.efSearch = ef
        figures["ef_search"].append({"ef_search": ef, **timed(index, queries, truth_positions)})
    del index
    progress("FAISS: exact scan...")
    exact = faiss.IndexFlatIP(dimensions)
    exact.add(vectors)
    figures["exact_scan"] = timed(exact, queries[:20], truth_positions[:20])
    return figures


def ratios_to_faiss(product_rows: list[dict], faiss_figures: dict) -> list[dict]:
    """Per ef_search: the product statement's recall minus FAISS's and its latency ratio."""
    by_ef = {row["ef_search"]: row for row in faiss_figures["ef_search"]}
    return [
        {
            "ef_search": row["ef_search"],
            "recall_difference": round(
                row["recall_at_10"] - by_ef[row["ef_search"]]["recall_at_10"], 4
            ),
            "p50_ratio": round(row["p50_ms"] / max(by_ef[row["ef_search"]]["p50_ms"], 1e-3), 1),
        }
        for row in product_rows
        if row["ef_search"] in by_ef
    ]

"""Benchmarks run by management commands: each returns plain figures the command prints."""

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from django.test.utils import override_settings
from django.utils import timezone
from PIL import Image as PILImage

from gallery.indexing import encoder, queueing
from gallery.library import ingest
from gallery.models import Image
from gallery.offline import sandbox
from gallery.search.request import SearchRequest

PHOTO_SIZE = (4000, 3000)  # 12 megapixels, a typical phone photo
SMALL_SIZE = (640, 480)


def generate_images(folder: Path, count: int, size, fmt: str, seed: int = 0) -> list[Path]:
    """Photo-like test images: smooth random colour fields with fine noise, all distinct."""
    rng = np.random.default_rng(seed)
    paths = []
    extension = {"JPEG": "jpg", "PNG": "png"}[fmt]
    for index in range(count):
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        picture = PILImage.fromarray(coarse).resize(size, PILImage.Resampling.BICUBIC)
        noise = rng.integers(-12, 13, size=(size[1], size[0], 3), dtype=np.int16)
        pixels = np.clip(np.asarray(picture, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = folder / f"{fmt.lower()}-{index:05d}.{extension}"
        PILImage.fromarray(pixels).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


# The encoders compared side by side: the reference and both ONNX Runtime precisions.
RAW_BACKENDS = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
RAW_SAMPLE = 64  # images per timing round; rounds alternate between encoders
RAW_ROUNDS = 3


def load_benchmark_encoder(spec, backend: str, precision: str, batch_size: int):
    from django.conf import settings

    if backend == "torch":
        return encoder.load_torch_encoder(spec, device="cpu")
    from gallery.indexing import onnx_clip

    return onnx_clip.OnnxClipEncoder(
        spec, precision=precision, batch_size=batch_size, threads=settings.ENCODER_THREADS
    )


def raw_forward_rates(encoders: dict, paths: list[Path], progress=print) -> dict:
    """Images per second of each encoder's forward pass alone, on the same preprocessed images.

    Rounds alternate between the encoders so that a noisy neighbour slows all of them alike;
    the median round counts.
    """
    pictures = [encoder.open_image_for_encoding(path, 512) for path in paths[:RAW_SAMPLE]]
    prepared = {}
    for label, clip in encoders.items():
        prepared[label] = [clip.preprocess(picture) for picture in pictures]
        clip.encode_pixels(prepared[label][: clip.batch_size])  # warm-up
    rounds = {label: [] for label in encoders}
    for round_number in range(RAW_ROUNDS):
        progress(f"raw forward pass, round {round_number + 1} of {RAW_ROUNDS}...")
        for label, clip in encoders.items():
            started = time.perf_counter()
            clip.encode_pixels(prepared[label])
            rounds[label].append(len(pictures) / (time.perf_counter() - started))
    return {label: float(np.median(rates)) for label, rates in rounds.items()}


def pipeline_rate(paths: list[Path]) -> tuple[float, float, list[int]]:
    """Files on disk to vectors in PostgreSQL through ingest, the queue and a worker.

    Returns (images per second overall, seconds spent in ingest, the new images' ids).
    """
    started = time.perf_counter()
    ids = [result.image.pk for result in ingest.import_files(paths) if result.ok]
    ingest_seconds = time.perf_counter() - started
    _wait_until_indexed(ids, since=None)
    return len(ids) / (time.perf_counter() - started), ingest_seconds, ids


def worker_rate(ids: list[int]) -> float:
    """Stored images to vectors through the queue and a worker (what `reindex` does)."""
    since = timezone.now()
    started = time.perf_counter()
    queueing.reindex_images(Image.objects.filter(pk__in=ids))
    _wait_until_indexed(ids, since=since)
    return len(ids) / (time.perf_counter() - started)


def _wait_until_indexed(ids, since, timeout: float = 3600) -> None:
    done = Image.objects.filter(pk__in=ids, status=Image.Status.INDEXED)
    if since is not None:
        done = done.filter(indexed_at__gte=since)
    deadline = time.monotonic() + timeout
    while done.count() < len(ids):
        if Image.objects.filter(pk__in=ids, status=Image.Status.FAILED).exists():
            raise RuntimeError("An image failed to encode during the benchmark.")
        if time.monotonic() > deadline:
            raise RuntimeError("Timed out waiting for the worker.")
        time.sleep(0.05)


def run_indexing_benchmark(
    *, count: int, model: str, batch_size: int, small_count: int, progress=print
) -> dict:
    from django.conf import settings

    spec = encoder.ModelSpec(name=model, pretrained=encoder.RANDOM_WEIGHTS)
    overrides = dict(
        CLIP_MODEL=model,
        CLIP_PRETRAINED=encoder.RANDOM_WEIGHTS,
        CLIP_WEIGHTS_FILE="",
        ENCODE_BATCH_SIZE=batch_size,
    )
    default = (encoder.configured_backend(), settings.CLIP_PRECISION)
    default_label = default[0] if default[0] == "torch" else "{} {}".format(*default)
    results = {
        "model": spec.model_id,
        "batch_size": batch_size,
        "default_backend": default_label,
        "raw": [],
        "scenarios": [],
    }
    scenarios = [
        ("12 MP JPEG", count, PHOTO_SIZE, "JPEG"),
        ("640x480 PNG", small_count, SMALL_SIZE, "PNG"),
    ]
    with (
        tempfile.TemporaryDirectory(prefix="visual-search-bench-") as folder,
        override_settings(**overrides),
        sandbox.isolated_library("bench") as library,
    ):
        generated = {}
        for seed, (label, scenario_count, size, fmt) in enumerate(scenarios):
            if scenario_count:
                progress(f"{label}: generating {scenario_count} images...")
                generated[label] = generate_images(Path(folder), scenario_count, size, fmt, seed)
        progress("Loading (and, the first time, exporting) the encoders...")
        encoders = {
            f"{backend} {precision}": load_benchmark_encoder(spec, backend, precision, batch_size)
            for backend, precision in RAW_BACKENDS
        }
        rates = raw_forward_rates(encoders, next(iter(generated.values())), progress)
        del encoders
        torch_rate = rates["torch fp32"]
        default_rate = rates["torch fp32" if default[0] == "torch" else default_label]
        results["raw"] = [
            {
                "encoder": label,
                "images_per_s": round(rate, 2),
                "vs_torch": round(rate / torch_rate, 2),
                "default": label == default_label
                or (default[0] == "torch" and label == "torch fp32"),
            }
            for label, rate in rates.items()
        ]
        with library.worker():
            for label, paths in generated.items():
                progress(f"{label}: timing the pipeline...")
                pipeline, ingest_seconds, ids = pipeline_rate(paths)
                progress(f"{label}: timing the worker alone (re-index)...")
                worker = worker_rate(ids)
                results["scenarios"].append(
                    {
                        "images": label,
                        "count": len(paths),
                        "mean_file_bytes": int(np.mean([path.stat().st_size for path in paths])),
                        "default_raw_images_per_s": round(default_rate, 2),
                        "pipeline_images_per_s": round(pipeline, 2),
                        "pipeline_ratio": round(pipeline / default_rate, 3),
                        "worker_images_per_s": round(worker, 2),
                        "worker_ratio": round(worker / default_rate, 3),
                        "ingest_seconds": round(ingest_seconds, 2),
                    }
                )
    return results


def write_json(path, figures: dict) -> None:
    Path(path).write_text(json.dumps(figures, indent=2) + "\n")


def format_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(value) for value in row] for row in [headers, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = [
        "  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# -- search ----------------------------------------------------------------------------------


def clustered_unit_vectors(
    count: int, seed: int, clusters: int = 100, dimensions: int = 512
) -> np.ndarray:
    """Synthetic embeddings: points around random centres, like photos of recurring subjects."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345 + dimensions).normal(size=(clusters, dimensions))
    chunks = []
    for start in range(0, count, 50_000):
        size = min(50_000, count - start)
        block = centres[rng.integers(0, clusters, size)] + rng.normal(
            scale=0.8, size=(size, dimensions)
        )
        chunks.append((block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32))
    return np.concatenate(chunks)


def load_vectors(vectors: np.ndarray, model, *, create_images: bool = True) -> list[int]:
    """COPY vectors into the (isolated) library as `model`'s; returns the image ids in order.

    Row n of `vectors` belongs to bench image n, created here unless it already exists (a
    second model's vectors for the same images). Every 100th image gets the tag
    "one-percent" and every 10th "ten-percent".
    """
    from django.db import connection
    from pgvector.psycopg import register_vector

    connection.ensure_connection()
    raw = connection.connection
    register_vector(raw)
    with raw.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_vectors (n integer, embedding vector)")
        with cursor.copy(
            "COPY bench_vectors (n, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "vector"])
            for number, vector in enumerate(vectors):
                copy.write_row([number, vector])
        if create_images:
            _create_bench_images(cursor)
        cursor.execute(
            """
            INSERT INTO gallery_embedding (image_id, model_id, vector, created_at)
            SELECT i.id, %s, b.embedding, now()
            FROM bench_vectors b JOIN gallery_image i ON i.sha256 = lpad(to_hex(b.n), 64, '0')
            ORDER BY b.n
            """,
            [model.pk],
        )
        cursor.execute("SELECT id FROM gallery_image ORDER BY sha256")
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute("DROP TABLE bench_vectors")
    raw.commit()
    return ids


def _create_bench_images(cursor) -> None:
    cursor.execute(
        """
        INSERT INTO gallery_image (file, thumbnail, sha256, original_filename, width, height,
            format, byte_size, caption, uploaded_at, taken_at, status, status_error,
            indexed_at)
        SELECT 'originals/' || n || '.jpg', '', lpad(to_hex(n), 64, '0'), '', 1, 1, 'JPEG',
            1, '', now(), timestamptz '2015-01-01' + n * interval '1 hour', 'indexed', '',
            now()
        FROM bench_vectors ORDER BY n
        """
    )
    for name, every in (("one-percent", 100), ("ten-percent", 10)):
        cursor.execute("INSERT INTO gallery_tag (name) VALUES (%s) RETURNING id", [name])
        tag_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO gallery_image_tags (image_id, tag_id) "
            "SELECT id, %s FROM gallery_image WHERE ('x' || right(sha256, 8))::bit(32)::int "
            "%% %s = 0",
            [tag_id, every],
        )


def build_index(sql: str, name: str) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(sql)
        seconds = time.perf_counter() - started
        cursor.execute("SELECT pg_relation_size(%s)", [name])
        size = cursor.fetchone()[0]
    return {"build_seconds": round(seconds, 1), "size_mb": round(size / 2**20, 1)}


def percentile(values, q) -> float:
    return round(float(np.percentile(values, q)), 2)


def measure_search(
    queries, expected, *, ef: int | None, exact: bool = False, filters: dict | None = None
) -> dict:
    """Recall@10 and database latency of the product's own search statement."""
    from gallery.search.selector import search_images

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
            recalls.append(len(set(found) & set(truth)) / len(truth))
            latencies.append(results.database_ms)
    return {
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "mean_rows_returned": round(float(np.mean(returned)), 2),
        "min_rows_returned": int(np.min(returned)),
    }


def measure_bare_statement(queries, expected, ef: int, model) -> dict:
    """The smallest statement the index answers (ids of the top 10, nothing else), with the
    settings made once per session: what the product statement's extra work is measured
    against (statement overhead, README)."""
    from django.db import connection

    from gallery.indexing import registry

    storage = registry.index_storage(model)
    distance = (
        f"{registry.vector_expression(model, storage)} <=> %s::{storage}({int(model.dimensions)})"
    )
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
            recalls.append(len(set(found) & set(truth)) / len(truth))
        cursor.execute("RESET hnsw.ef_search")
    return {
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
    }


def measure_faiss(
    vectors, queries, truth_positions, *, m: int, ef_construction: int, ef_values, progress
) -> dict:
    """The same vectors and queries through FAISS (the in-memory library rclip-like tools
    use): HNSW with the same m / ef_construction, built on every core and searched one query
    at a time on one thread, and an exact inner-product scan."""
    import os

    import faiss

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
            recalls.append(len(set(found[0].tolist()) & set(truth)) / len(truth))
        return {
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
        }

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


def free_port() -> int:
    """A local TCP port nothing listens on now, for a gunicorn of the benchmark's own."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure_http(library, model: str, requests: int = 20) -> dict:
    """End-to-end latency of GET /search under gunicorn, uncached and cached text queries."""
    import subprocess
    import sys
    import urllib.parse
    import urllib.request

    port = free_port()
    env = library.child_environment(
        CLIP_MODEL=model,
        CLIP_PRETRAINED="random",
        SEARCH_EXACT_MAX_ROWS="0",
        # The requests come without an account; a private library would answer 401.
        SITE_ACCESS="public",
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "searchsite.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "300",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/search?"

    def get(text: str) -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(base + urllib.parse.urlencode({"q": text}), timeout=120) as r:
            r.read()
        return (time.perf_counter() - started) * 1000

    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                get("warm up the model")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start for the HTTP benchmark") from None
                time.sleep(0.5)
        uncached = [get(f"a photo of object number {n} on a table") for n in range(requests)]
        cached = [get("a photo of object number 0 on a table") for _ in range(requests)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "uncached_p50_ms": percentile(uncached, 50),
        "uncached_p95_ms": percentile(uncached, 95),
        "cached_p50_ms": percentile(cached, 50),
        "cached_p95_ms": percentile(cached, 95),
    }


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
    from django.db import connection

    from gallery.indexing import registry

    other = next(kind for kind in registry.INDEX_OPERATOR_CLASSES if kind != storage)
    figures = {"count": count, "m": m, "ef_construction": ef_construction, "storage": storage}
    overrides = dict(
        CLIP_MODEL=model,
        CLIP_PRETRAINED=encoder.RANDOM_WEIGHTS,
        CLIP_WEIGHTS_FILE="",
        SEARCH_INDEX_STORAGE=storage,
    )
    with override_settings(**overrides), sandbox.isolated_library("benchsearch") as library:
        registry.forget_index_storages()
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
        registry.forget_index_storages()
        queries = clustered_unit_vectors(query_count, seed=2, dimensions=active.dimensions)
        scores = queries @ vectors.T
        truth_positions = [list(np.argsort(-row)[:10]) for row in scores]
        truth = [list(ids[positions]) for positions in truth_positions]
        shipped = registry.ef_search_for(count)
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
        figures["filtered"] = []
        for tag, every in (("one-percent", 100), ("ten-percent", 10)):
            mask = np.array([int(f"{n:064x}"[-8:], 16) % every == 0 for n in range(count)])
            filtered_truth = []
            for row in scores:
                order = np.argsort(-row)
                filtered_truth.append(list(ids[order[mask[order]]][:10]))
            progress(f"Measuring filtered queries ({tag})...")
            figures["filtered"].append(
                {
                    "selectivity": tag,
                    "matching_rows": int(mask.sum()),
                    **measure_search(
                        queries, filtered_truth, ef=shipped, filters={"tags_any": [tag]}
                    ),
                }
            )
        if other_storage:
            progress(f"Building the same index as {other}, measured beside it...")
            figures["other_storage"] = {
                "storage": other,
                "index": _build_model_index(
                    active,
                    m,
                    ef_construction,
                    storage=other,
                    name=registry.rebuilt_index_name(active),
                ),
                "ef_search": shipped,
            }
            with override_settings(SEARCH_INDEX_STORAGE=other):
                registry.forget_index_storages()
                figures["other_storage"].update(measure_search(queries, truth, ef=shipped))
            registry.forget_index_storages()
            with connection.cursor() as cursor:
                cursor.execute(f"DROP INDEX {registry.rebuilt_index_name(active)}")
        if faiss:
            figures["faiss"] = measure_faiss(
                vectors,
                queries,
                truth_positions,
                m=m,
                ef_construction=ef_construction,
                ef_values=ef_values,
                progress=progress,
            )
            figures["faiss_ratios"] = ratios_to_faiss(figures["ef_search"], figures["faiss"])
            figures["statement"]["faiss_p50_ms"] = next(
                row["p50_ms"]
                for row in figures["faiss"]["ef_search"]
                if row["ef_search"] == shipped
            )
        if http:
            progress("Measuring end-to-end HTTP latency under gunicorn...")
            figures["http"] = measure_http(library, model)
        if second_model:
            figures["second_model"] = _second_model_figures(
                second_model, count, query_count, shipped, m, ef_construction, progress
            )
    registry.forget_index_storages()
    return figures


def _build_model_index(
    model, m: int, ef_construction: int, *, storage: str | None = None, name: str | None = None
) -> dict:
    """The product's partial index for this model (registry SQL), with the given parameters."""
    from gallery.indexing import registry

    sql = registry.vector_index_sql(
        model, m=m, ef_construction=ef_construction, storage=storage, name=name
    )
    return build_index(sql, name or model.index_name)


def _second_model_figures(
    architecture: str, count: int, query_count: int, ef: int, m: int, ef_construction: int, progress
) -> dict:
    """Register a second model, load its vectors for the same images, activate and measure."""
    from gallery.indexing import encoder as clip_encoder
    from gallery.indexing import registry
    from gallery.models import EmbeddingModel

    dimensions = clip_encoder.architecture_dimensions(architecture)
    second = EmbeddingModel.objects.create(
        model_id=f"{architecture}:random-seed0",
        architecture=architecture,
        pretrained=encoder.RANDOM_WEIGHTS,
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

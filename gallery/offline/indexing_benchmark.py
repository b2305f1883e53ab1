"""bench_indexing: images per second of each encoder's forward pass, and of files on disk to
vectors in PostgreSQL through ingest, the queue and a worker (and the worker alone)."""

import tempfile
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.test.utils import override_settings
from django.utils import timezone

from gallery import pixels
from gallery.indexing import encoder, encoder_base, queueing
from gallery.library import ingest
from gallery.models import Image
from gallery.offline import sandbox
from gallery.offline.encoder_comparison import COMPARED_ENCODERS, load_compared_encoder
from gallery.offline.synthetic import PHOTO_SIZE, SMALL_SIZE, generate_images

RAW_SAMPLE = 64  # images per timing round; rounds alternate between encoders
RAW_ROUNDS = 3


def raw_forward_rates(encoders: dict, paths: list[Path], progress=print) -> dict:
    """Images per second of each encoder's forward pass alone, on the same preprocessed images.

    Rounds alternate between the encoders so that a noisy neighbour slows all of them alike;
    the median round counts.
    """
    pictures = [pixels.open_upright(path, 512) for path in paths[:RAW_SAMPLE]]
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
    spec = encoder.ModelSpec(name=model, pretrained=encoder_base.RANDOM_WEIGHTS)
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
        override_settings(**sandbox.random_weights(model), ENCODE_BATCH_SIZE=batch_size),
        sandbox.isolated_library("bench") as library,
    ):
        generated = {}
        for seed, (label, scenario_count, size, fmt) in enumerate(scenarios):
            if scenario_count:
                progress(f"{label}: generating {scenario_count} images...")
                generated[label] = generate_images(Path(folder), scenario_count, size, fmt, seed)
        progress("Loading (and, the first time, exporting) the encoders...")
        encoders = {
            f"{backend} {precision}": load_compared_encoder(spec, backend, precision, batch_size)
            for backend, precision in COMPARED_ENCODERS
        }
        rates = raw_forward_rates(encoders, next(iter(generated.values())), progress)
        del encoders
        default_raw = "torch fp32" if default[0] == "torch" else default_label
        results["raw"] = _raw_figures(rates, default_raw)
        with library.worker():
            for label, paths in generated.items():
                results["scenarios"].append(
                    _scenario_figures(label, paths, rates[default_raw], progress)
                )
    return results


def _raw_figures(rates: dict, default_raw: str) -> list[dict]:
    torch_rate = rates["torch fp32"]
    return [
        {
            "encoder": label,
            "images_per_s": round(rate, 2),
            "vs_torch": round(rate / torch_rate, 2),
            "default": label == default_raw,
        }
        for label, rate in rates.items()
    ]


def _scenario_figures(label: str, paths: list[Path], default_rate: float, progress) -> dict:
    """The pipeline's and the worker's rates on one kind of image, against the raw rate."""
    progress(f"{label}: timing the pipeline...")
    pipeline, ingest_seconds, ids = pipeline_rate(paths)
    progress(f"{label}: timing the worker alone (re-index)...")
    worker = worker_rate(ids)
    return {
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

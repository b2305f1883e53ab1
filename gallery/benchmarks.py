"""Benchmarks run by management commands: each returns plain figures the command prints."""

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from django.test.utils import override_settings
from django.utils import timezone
from PIL import Image as PILImage

from gallery import encoder, indexing, ingest, sandbox
from gallery.models import Image

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


def raw_forward_rate(clip: "encoder.ClipEncoder", paths: list[Path], batch_size: int) -> float:
    """Images per second of the model's forward pass alone, on preprocessed batches."""
    import torch

    pixels = torch.stack(
        [clip.preprocess(encoder.open_image_for_encoding(path, clip.image_size)) for path in paths]
    )
    with torch.inference_mode():
        clip.model.encode_image(pixels[:batch_size])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(pixels), batch_size):
            clip.model.encode_image(pixels[start : start + batch_size])
        elapsed = time.perf_counter() - started
    return len(paths) / elapsed


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
    indexing.reindex_images(Image.objects.filter(pk__in=ids))
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
    spec = encoder.ModelSpec(name=model, pretrained=encoder.RANDOM_WEIGHTS)
    overrides = dict(
        CLIP_MODEL=model,
        CLIP_PRETRAINED=encoder.RANDOM_WEIGHTS,
        CLIP_WEIGHTS_FILE="",
        ENCODE_BATCH_SIZE=batch_size,
    )
    results = {"model": spec.model_id, "batch_size": batch_size, "scenarios": []}
    scenarios = [
        ("12 MP JPEG", count, PHOTO_SIZE, "JPEG"),
        ("640x480 PNG", small_count, SMALL_SIZE, "PNG"),
    ]
    with (
        tempfile.TemporaryDirectory(prefix="visual-search-bench-") as folder,
        override_settings(**overrides),
        sandbox.isolated_library("bench") as library,
    ):
        clip = encoder.ClipEncoder(spec, device="cpu", batch_size=batch_size)
        with library.worker():
            for seed, (label, scenario_count, size, fmt) in enumerate(scenarios):
                if not scenario_count:
                    continue
                progress(f"{label}: generating {scenario_count} images...")
                paths = generate_images(Path(folder), scenario_count, size, fmt, seed=seed)
                progress(f"{label}: timing the raw forward pass...")
                raw = raw_forward_rate(clip, paths, batch_size)
                progress(f"{label}: timing the pipeline...")
                pipeline, ingest_seconds, ids = pipeline_rate(paths)
                progress(f"{label}: timing the worker alone (re-index)...")
                worker = worker_rate(ids)
                mean_bytes = int(np.mean([path.stat().st_size for path in paths]))
                results["scenarios"].append(
                    {
                        "images": label,
                        "count": scenario_count,
                        "mean_file_bytes": mean_bytes,
                        "raw_images_per_s": round(raw, 2),
                        "pipeline_images_per_s": round(pipeline, 2),
                        "pipeline_ratio": round(pipeline / raw, 3),
                        "worker_images_per_s": round(worker, 2),
                        "worker_ratio": round(worker / raw, 3),
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

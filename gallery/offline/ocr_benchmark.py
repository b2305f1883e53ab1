"""bench_ocr: how well and how fast the product's OCR reads words in photo-like images.

Images with known words (word_images.py) are stored through the real ingest path in an
isolated library (so previews are made as for an upload), and read by gallery/indexing/ocr.py
from the file the OCR job reads. A second set has no text at all: it shows what an image
costs when the detector finds nothing and the recogniser never runs.
"""

import os
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from django.db import connection
from PIL import Image as PILImage

from gallery.indexing import ocr, text_reading
from gallery.library.ingest import ingest_image
from gallery.models import Image
from gallery.offline.sandbox import isolated_library
from gallery.offline.word_images import (
    SIZES,
    VOCABULARY,
    font_files,
    photo_like_background,
    text_sample,
)


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def product_keyword_top_ids(word: str, limit: int = 10) -> list[int]:
    """The site's own keyword search (mode=keyword: the stored full-text document, where the
    text read in an image is one part)."""
    from gallery.search.request import SearchRequest
    from gallery.search.selector import search_images

    results = search_images(SearchRequest(text=word, mode="keyword", page_size=limit))
    return [hit.image.pk for hit in results.hits]


def _give_placeholder_vectors(image_ids: list[int]) -> None:
    """Keyword search answers among searchable images (those with a vector of the active
    model); the vectors' values do not matter to it, so random ones spare loading CLIP."""
    import numpy as np

    from gallery.indexing import registry
    from gallery.models import Embedding

    model = registry.active_model()
    rng = np.random.default_rng(0)
    Embedding.objects.bulk_create(
        Embedding(image_id=pk, model=model, vector=rng.standard_normal(model.dimensions))
        for pk in image_ids
    )


def keyword_top_ids(word: str, limit: int = 10) -> list[int]:
    """Images whose read text matches the word by PostgreSQL full-text search, best first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT id FROM gallery_image
            WHERE to_tsvector('english', ocr_text) @@ plainto_tsquery('english', %(word)s)
            ORDER BY ts_rank_cd(to_tsvector('english', ocr_text),
                                plainto_tsquery('english', %(word)s)) DESC, id
            LIMIT %(limit)s
            """,
            {"word": word, "limit": limit},
        )
        return [row[0] for row in cursor.fetchall()]


def _timings(readings: list[dict]) -> dict:
    def summary(key):
        values = sorted(reading[key] for reading in readings)
        if not values:
            return {"mean": None, "p50": None, "p95": None}
        return {
            "mean": round(statistics.fmean(values), 3),
            "p50": round(statistics.median(values), 3),
            "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 3),
        }

    keys = ("seconds", "cpu_seconds", "detect_seconds", "recognise_seconds")
    return {key: summary(key) for key in keys}


def run_ocr_benchmark(
    *, count: int = 200, blank: int | None = None, threads: int = 1, seed: int = 0, progress=print
) -> dict:
    if count > len(VOCABULARY):
        raise ValueError(f"--n is at most {len(VOCABULARY)} (one distinct word per image).")
    blank = max(50, count // 4) if blank is None else blank
    rng = random.Random(seed)
    fonts = font_files()
    own_words = rng.sample(VOCABULARY, count)
    load_before = os.getloadavg()
    progress(f"Loading the OCR model ({threads} thread(s))...")
    process = psutil.Process()
    resident = process.memory_info().rss
    started = time.perf_counter()
    reader = ocr.TextReader(threads)
    figures = {
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "fonts": len(fonts),
        "model_load_seconds": round(time.perf_counter() - started, 2),
        "model_resident_mib": round((process.memory_info().rss - resident) / 2**20),
    }
    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as folder, isolated_library("ocr"):
        progress(f"Generating and storing {count} images with words and {blank} without...")
        samples = _store_samples(Path(folder), rng, own_words, blank, fonts)
        Image.objects.update(status=Image.Status.INDEXED)
        progress("Reading them through gallery/indexing/ocr.py...")
        readings = _read_samples(reader, samples, progress)
        with_text = [reading for reading in readings if reading["words"]]
        without_text = [reading for reading in readings if not reading["words"]]
        expected, found, read_tokens, right_tokens = _word_counts(with_text)
        search, searched_by = _keyword_search([image_id for image_id, _ in samples], progress)
        hits = sum(reading["image"] in search(reading["words"][0]) for reading in with_text)
    figures.update(
        {
            "with_text": {
                "images": len(with_text),
                "words": expected,
                "word_recall": round(found / expected, 3) if expected else None,
                "word_precision": round(right_tokens / read_tokens, 3) if read_tokens else None,
                "keyword_recall_at_10": round(hits / len(with_text), 3) if with_text else None,
                "images_with_every_word_read": sum(
                    {w.lower() for w in r["words"]} <= set(tokens(r["text"])) for r in with_text
                ),
                **_timings(with_text),
            },
            "without_text": {
                "images": len(without_text),
                "images_with_text_read": sum(bool(r["text"]) for r in without_text),
                "recogniser_ran": sum(r["recognise_seconds"] > 0 for r in without_text),
                **_timings(without_text),
            },
            "source_shortest_side_p50": statistics.median(r["source_side"] for r in readings),
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
            "resident_mib_after": round(process.memory_info().rss / 2**20),
            "keyword_search": searched_by,
            "misread_samples": [
                {"words": r["words"], "read": r["text"]}
                for r in with_text
                if not {w.lower() for w in r["words"]} <= set(tokens(r["text"]))
            ][:15],
        }
    )
    return figures


def _store_samples(folder: Path, rng: random.Random, own_words, blank: int, fonts) -> list:
    """Images with each own word (and a few more), then `blank` without text, stored through
    ingest; (image id, words or None) each."""
    samples = []
    for index in range(len(own_words) + blank):
        if index < len(own_words):
            picture, words = text_sample(rng, own_words[index], fonts)
        else:
            picture, words = photo_like_background(rng, rng.choice(SIZES)), None
        path = folder / f"{index:04}.jpg"
        picture.save(path, "JPEG", quality=90)
        stored = ingest_image(data=path.read_bytes(), filename=path.name, enqueue=False)
        samples.append((stored.image.pk, words))
    return samples


def _read_samples(reader, samples: list, progress) -> list[dict]:
    """Each image read by the product's reader from the file the OCR job reads, timed."""
    readings = []
    for done, (image_id, words) in enumerate(samples, 1):
        image = Image.objects.get(pk=image_id)
        source = text_reading.reading_sources(image)[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        reading = reader.read(ocr.open_for_reading(source))
        seconds = time.perf_counter() - started
        # CPU time: what the image costs when other processes do not share the cores
        # (the reader runs on `threads` threads, so it is wall time x threads at most).
        cpu_seconds = time.process_time() - cpu_started
        text_reading.store_image_text(image_id=image_id, text=reading.text)
        readings.append(
            {
                "image": image_id,
                "words": words,
                "text": reading.text,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "detect_seconds": reading.detect_seconds,
                "recognise_seconds": reading.recognise_seconds,
                "source_side": min(PILImage.open(source).size),
            }
        )
        if done % 50 == 0:
            progress(f"  {done} of {len(samples)}")
    return readings


def _word_counts(with_text: list[dict]) -> tuple[int, int, int, int]:
    """(words drawn, of them read, tokens read, of them right) over the images with words."""
    expected = found = read_tokens = right_tokens = 0
    for reading in with_text:
        truth = {word.lower() for word in reading["words"]}
        got = tokens(reading["text"])
        expected += len(truth)
        found += len(truth & set(got))
        read_tokens += len(got)
        right_tokens += sum(token in truth for token in got)
    return expected, found, read_tokens, right_tokens


def _keyword_search(image_ids: list[int], progress):
    """The site's keyword search where this version has one, else plain full-text search;
    with what the figures call it."""
    try:
        _give_placeholder_vectors(image_ids)
        search, searched_by = (
            product_keyword_top_ids,
            "the site's keyword search (mode=keyword)",
        )
        search("probe")
    except Exception as error:  # no keyword mode in this version: plain full-text search
        progress(f"Keyword search of the site unavailable ({error}); using plain FTS.")
        search = keyword_top_ids
        searched_by = "PostgreSQL full-text search over ocr_text ('english')"
    return search, searched_by

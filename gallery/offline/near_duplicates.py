"""bench_duplicates: how well the staff page's near-duplicate groups match the truth, and how
long the scan takes.

Originals (photo-like generated images, or Debian's Tux Paint stamps on photo-like
backgrounds) get the edits that make copies in a real library: resized, re-compressed as
JPEG quality 40, a 5 % crop, brightness +/-15 % and a small rotation. Some originals get
variants, the rest stay alone as distinct images; everything goes through the product's
ingest and encoder into an isolated library, and `find_duplicate_groups` is scored against
the truth pair by pair (precision and recall of "these two are in one group").
"""

import io
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from django.test.utils import override_settings
from PIL import Image as PILImage
from PIL import ImageDraw, ImageEnhance

from gallery.indexing import encoder
from gallery.offline import sandbox

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
PHOTO_SIZE = (640, 480)
VARIANT_KINDS = ("resized", "jpeg40", "crop5", "brighter15", "darker15", "rotated3")


def photo_like(seed: int, size=PHOTO_SIZE) -> PILImage.Image:
    """A distinct photo-like picture: a smooth colour field, a few shapes, fine noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    picture = PILImage.fromarray(coarse).resize(size, PILImage.Resampling.BICUBIC)
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(3, 8))):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        w, h = rng.integers(size[0] // 10, size[0] // 2), rng.integers(size[1] // 10, size[1] // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x), int(y), int(x + w), int(y + h)], fill=colour)
    noise = rng.integers(-10, 11, size=(size[1], size[0], 3), dtype=np.int16)
    pixels = np.clip(np.asarray(picture, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return PILImage.fromarray(pixels)


def stamp_photo(path: Path, seed: int, size=PHOTO_SIZE) -> PILImage.Image:
    """A Tux Paint stamp over a photo-like background (stamps are cut-outs with alpha)."""
    background = photo_like(seed, size)
    with PILImage.open(path) as stamp:
        stamp = stamp.convert("RGBA")
        stamp.thumbnail((size[0] * 3 // 4, size[1] * 3 // 4))
        offset = ((size[0] - stamp.width) // 2, (size[1] - stamp.height) // 2)
        background.paste(stamp, offset, stamp)
    return background


def originals(count: int, *, source: str = "generated", seed: int = 0) -> list[PILImage.Image]:
    """`count` distinct originals; `source` is "generated", "tuxpaint" or "auto" (Tux Paint's
    stamps when installed)."""
    if source == "auto":
        source = "tuxpaint" if TUXPAINT_STAMPS.is_dir() else "generated"
    if source == "generated":
        return [photo_like(seed * 100_003 + n) for n in range(count)]
    stamps = sorted(TUXPAINT_STAMPS.rglob("*.png"))
    if len(stamps) < count:
        raise ValueError(
            f"Only {len(stamps)} Tux Paint stamps under {TUXPAINT_STAMPS}; "
            "`apt-get install tuxpaint-stamps-default`, or use generated originals."
        )
    picks = np.random.default_rng(seed).choice(len(stamps), size=count, replace=False)
    return [stamp_photo(stamps[pick], seed * 100_003 + n) for n, pick in enumerate(picks)]


def variant(image: PILImage.Image, kind: str) -> PILImage.Image:
    """A copy of `image` as a library gets them: resized, re-saved, cropped, brightened."""
    width, height = image.size
    if kind == "resized":
        return image.resize((width // 2, height // 2), PILImage.Resampling.LANCZOS)
    if kind == "jpeg40":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=40)
        return PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "crop5":  # 5 % of each dimension cut away, off-centre
        dx, dy = round(width * 0.05), round(height * 0.05)
        return image.crop((dx // 3, dy // 3, width - dx + dx // 3, height - dy + dy // 3))
    if kind in ("brighter15", "darker15"):
        return ImageEnhance.Brightness(image).enhance(1.15 if kind == "brighter15" else 0.85)
    if kind == "rotated3":  # straightened: rotated, corners filled with the mean colour
        mean = tuple(int(c) for c in np.asarray(image).reshape(-1, 3).mean(axis=0))
        return image.rotate(3, resample=PILImage.Resampling.BICUBIC, fillcolor=mean)
    raise ValueError(f"Unknown variant {kind!r}")


def encoded(image: PILImage.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def library_with_variants(
    count: int, *, with_variants: float = 0.5, variants_each: int = 3, source="generated", seed=0
) -> tuple[list[tuple[str, bytes]], list[list[str]]]:
    """(file name, bytes) of `count` originals, a share of them with `variants_each` edits,
    and the true groups (lists of file names: each original with its variants)."""
    rng = np.random.default_rng(seed + 1)
    files, truth = [], []
    for number, picture in enumerate(originals(count, source=source, seed=seed)):
        name = f"original-{number:04d}.jpg"
        files.append((name, encoded(picture)))
        if rng.random() >= with_variants:
            continue
        group = [name]
        for kind in rng.choice(VARIANT_KINDS, size=variants_each, replace=False):
            copy_name = f"original-{number:04d}-{kind}.jpg"
            files.append((copy_name, encoded(variant(picture, str(kind)))))
            group.append(copy_name)
        truth.append(group)
    return files, truth


def same_group_pairs(groups) -> set[tuple]:
    """Every unordered pair of members that share a group."""
    return {tuple(sorted(pair)) for group in groups for pair in combinations(group, 2)}


def pair_scores(found, truth) -> dict:
    found_pairs, true_pairs = same_group_pairs(found), same_group_pairs(truth)
    hits = len(found_pairs & true_pairs)
    return {
        "precision": round(hits / len(found_pairs), 4) if found_pairs else 1.0,
        "recall": round(hits / len(true_pairs), 4) if true_pairs else 1.0,
        "groups_found": len(found),
        "groups_exact": len({frozenset(g) for g in found} & {frozenset(g) for g in truth}),
    }


def run_duplicates_benchmark(
    *,
    count: int,
    model: str,
    source: str,
    thresholds: list[float],
    hash_distances: list[int],
    neighbours: list[int] = (),
    pretrained: str = encoder.RANDOM_WEIGHTS,
    weights_file: str = "",
    progress=print,
) -> dict:
    """Score the groups at every (cosine threshold, pHash distance) and number of
    neighbours, and time the scan."""
    from django.conf import settings

    from gallery.indexing import encoding, registry
    from gallery.library import duplicates, ingest

    figures: dict = {"originals": count, "source": source}
    overrides = dict(CLIP_MODEL=model, CLIP_PRETRAINED=pretrained, CLIP_WEIGHTS_FILE=weights_file)
    with override_settings(**overrides), sandbox.isolated_library("benchdups"):
        active = registry.active_model()
        figures["model"] = active.model_id
        progress(f"Generating {count} originals ({source}) and their variants...")
        files, truth_names = library_with_variants(count, source=source)
        started = time.perf_counter()
        ids = {}
        for name, data in files:
            ids[name] = ingest.ingest_image(data=data, filename=name, enqueue=False).image.pk
        figures["ingest_seconds"] = round(time.perf_counter() - started, 1)
        progress(f"Encoding {len(ids)} images with {active.model_id}...")
        started = time.perf_counter()
        encoding.encode_images(list(ids.values()))
        figures["encode_seconds"] = round(time.perf_counter() - started, 1)
        truth = [[ids[name] for name in group] for group in truth_names]
        figures["images"] = len(ids)
        figures["true_groups"] = len(truth)
        figures["true_pairs"] = len(same_group_pairs(truth))
        figures["cosine"] = _cosine_figures(active, truth, ids.values())

        progress("Scanning: pairs from the index, pHashes, union-find...")
        from django.core.cache import cache

        from gallery.models import Image

        stored = Image.objects.in_bulk(list(ids.values()))
        cache.delete_many([duplicates.PHASH_CACHE_PREFIX + i.sha256 for i in stored.values()])
        started = time.perf_counter()
        shipped = duplicates.find_duplicate_groups()  # every pHash computed: a first scan
        figures["scan_seconds_cold"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        duplicates.find_duplicate_groups()  # pHashes cached: what the staff page costs then
        figures["scan_seconds_warm"] = round(time.perf_counter() - started, 3)
        figures["shipped"] = {
            "threshold": settings.NEAR_DUPLICATE_SIMILARITY,
            "phash_distance": settings.NEAR_DUPLICATE_PHASH_DISTANCE,
            "neighbours": settings.NEAR_DUPLICATE_NEIGHBOURS,
            **pair_scores([group.ids for group in shipped.groups], truth),
            "candidate_pairs": shipped.candidate_pairs,
            "confirmed_pairs": shipped.confirmed_pairs,
        }
        pairs = duplicates.candidate_pairs(
            active, threshold=min(thresholds), neighbours=settings.NEAR_DUPLICATE_NEIGHBOURS
        )
        hashes = {pk: duplicates.perceptual_hash(image) for pk, image in stored.items()}
        figures["grid"] = []
        for threshold in thresholds:
            for distance in [*hash_distances, None]:  # None: cosine alone (the search page)
                kept = [
                    pair
                    for pair, similarity in pairs.items()
                    if similarity >= threshold
                    and (distance is None or hashes[pair[0]] - hashes[pair[1]] <= distance)
                ]
                figures["grid"].append(
                    {
                        "threshold": threshold,
                        "phash_distance": distance,
                        **pair_scores(_union_groups(kept), truth),
                    }
                )
        figures["phash_only"] = _phash_only_figures(hashes, truth, hash_distances)
        # The shipped rule with more neighbours per image: what the index's k costs in recall.
        figures["neighbours"] = [
            {
                "neighbours": k,
                **pair_scores(
                    [g.ids for g in duplicates.find_duplicate_groups(neighbours=k).groups], truth
                ),
            }
            for k in neighbours
        ]

    return figures


def run_scan_timing(*, model: str, scan_sizes: list[int], progress=print) -> list[dict]:
    """How long the index scan of `candidate_pairs` takes on synthetic libraries."""
    from django.conf import settings

    from gallery.indexing import registry
    from gallery.library import duplicates
    from gallery.offline import benchmarks

    overrides = dict(CLIP_MODEL=model, CLIP_PRETRAINED=encoder.RANDOM_WEIGHTS, CLIP_WEIGHTS_FILE="")
    rows = []
    for size in scan_sizes:
        progress(f"Timing the index scan at {size:,} synthetic vectors...")
        with override_settings(**overrides), sandbox.isolated_library("benchdupscan"):
            active = registry.active_model()
            vectors = benchmarks.clustered_unit_vectors(size, seed=3, dimensions=active.dimensions)
            # A near-copy for every 20th vector, so the scan finds pairs as in a real library.
            rng = np.random.default_rng(4)
            copies = vectors[::20] + rng.normal(scale=0.01, size=vectors[::20].shape)
            copies /= np.linalg.norm(copies, axis=1, keepdims=True)
            loaded = np.concatenate([vectors, copies.astype(np.float32)])
            _create_scan_images(len(loaded))
            benchmarks.load_vectors(loaded, active, create_images=False)
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("ANALYZE gallery_embedding")
            total = size + len(copies)
            started = time.perf_counter()
            found = duplicates.candidate_pairs(
                active,
                threshold=settings.NEAR_DUPLICATE_SIMILARITY,
                neighbours=settings.NEAR_DUPLICATE_NEIGHBOURS,
            )
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "vectors": total,
                    "seconds": round(seconds, 2),
                    "ms_per_image": round(1000 * seconds / total, 3),
                    "pairs": len(found),
                    "planted_pairs": len(copies),
                }
            )
    return rows


def _create_scan_images(count: int) -> None:
    """Image rows for synthetic vectors, named as benchmarks.load_vectors matches them (the
    model's defaults fill every other column)."""
    from django.utils import timezone

    from gallery.models import Image

    now = timezone.now()
    Image.objects.bulk_create(
        [
            Image(
                file=f"originals/{n}.jpg",
                sha256=f"{n:064x}",
                width=1,
                height=1,
                format="JPEG",
                byte_size=1,
                taken_at=now,
                status=Image.Status.INDEXED,
            )
            for n in range(count)
        ],
        batch_size=5000,
    )


def _union_groups(pairs) -> list[list[int]]:
    parent: dict[int, int] = {}

    def find(item):
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for item in list(parent):
        groups.setdefault(find(item), []).append(item)
    return [sorted(group) for group in groups.values() if len(group) > 1]


def _cosine_figures(model, truth, all_ids) -> dict:
    """The cosine of true copies to their original, and of each distinct image to its
    nearest distinct neighbour: how far apart the two populations are."""
    from gallery.models import Embedding

    rows = Embedding.objects.filter(model=model).values_list("image_id", "vector")
    vectors = {pk: np.asarray(vector, dtype=np.float64) for pk, vector in rows}
    ids = sorted(vectors)
    matrix = np.stack([vectors[pk] for pk in ids])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    cosines = matrix @ matrix.T
    index = {pk: n for n, pk in enumerate(ids)}
    group_of = {pk: n for n, group in enumerate(truth) for pk in group}
    true = [cosines[index[a], index[b]] for a, b in same_group_pairs(truth)]
    nearest_other = []
    for pk in ids:
        row = cosines[index[pk]].copy()
        row[index[pk]] = -2
        if pk in group_of:
            for other in truth[group_of[pk]]:
                row[index[other]] = -2
        nearest_other.append(row.max())
    return {
        "true_pairs_min": round(float(np.min(true)), 4) if true else None,
        "true_pairs_p5": round(float(np.percentile(true, 5)), 4) if true else None,
        "true_pairs_median": round(float(np.median(true)), 4) if true else None,
        "distinct_nearest_max": round(float(np.max(nearest_other)), 4),
        "distinct_nearest_p95": round(float(np.percentile(nearest_other, 95)), 4),
        "distinct_nearest_median": round(float(np.median(nearest_other)), 4),
    }


def _phash_only_figures(hashes, truth, hash_distances) -> list[dict]:
    """pHash over every pair (no vectors): what the hash alone separates."""
    order = sorted(hashes)
    distances = {(a, b): hashes[a] - hashes[b] for a, b in combinations(order, 2)}
    true_pairs = same_group_pairs(truth)
    true_distances = [distances[pair] for pair in true_pairs]
    other = [d for pair, d in distances.items() if pair not in true_pairs]
    rows = [
        {
            "phash_distance": distance,
            **pair_scores(
                _union_groups([pair for pair, d in distances.items() if d <= distance]), truth
            ),
        }
        for distance in hash_distances
    ]
    return [
        {
            "true_pairs_max": int(max(true_distances)) if true_distances else None,
            "true_pairs_p95": float(np.percentile(true_distances, 95)) if true_distances else None,
            "distinct_pairs_min": int(min(other)) if other else None,
        },
        *rows,
    ]

"""bench_duplicates: how well the staff page's near-duplicate groups match the truth, and how
long the scan takes.

Originals and their copies come from duplicate_images.py (resized, re-compressed as JPEG
quality 40, a 5 % crop, brightness +/-15 % and a small rotation). Some originals get
variants, the rest stay alone as distinct images; everything goes through the product's
ingest and encoder into an isolated library, and `find_duplicate_groups` is scored against
the truth pair by pair (precision and recall of "these two are in one group").
"""

import time
from itertools import combinations

import numpy as np
from django.test.utils import override_settings

from gallery.indexing import encoder_base
from gallery.offline import duplicate_images, sandbox, synthetic


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
    bands: list[int] = (),
    pretrained: str = encoder_base.RANDOM_WEIGHTS,
    weights_file: str = "",
    progress=print,
) -> dict:
    """Score the groups at every (cosine threshold, pHash distance), number of neighbours
    and number of hash bands, and time the scan."""
    from django.conf import settings

    from gallery.indexing import encoding, registry
    from gallery.library import duplicates, ingest, perceptual_hash

    figures: dict = {"originals": count, "source": source}
    overrides = dict(CLIP_MODEL=model, CLIP_PRETRAINED=pretrained, CLIP_WEIGHTS_FILE=weights_file)
    with override_settings(**overrides), sandbox.isolated_library("benchdups"):
        active = registry.active_model()
        figures["model"] = active.model_id
        progress(f"Generating {count} originals ({source}) and their variants...")
        files, truth_names = duplicate_images.library_with_variants(count, source=source)
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

        progress("Scanning: pairs from the index and the hash bands, pHashes, union-find...")
        from gallery.models import Image

        # As a library indexed before pHashes were stored: every hash read from its thumbnail.
        Image.objects.filter(pk__in=ids.values()).update(phash=None)
        started = time.perf_counter()
        shipped = duplicates.find_duplicate_groups()
        figures["scan_seconds_cold"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        duplicates.find_duplicate_groups()  # pHashes stored: what every later scan costs
        figures["scan_seconds_warm"] = round(time.perf_counter() - started, 3)
        stored = Image.objects.in_bulk(list(ids.values()))
        figures["shipped"] = {
            "threshold": settings.NEAR_DUPLICATE_SIMILARITY,
            "phash_distance": settings.NEAR_DUPLICATE_PHASH_DISTANCE,
            "neighbours": settings.NEAR_DUPLICATE_NEIGHBOURS,
            "bands": duplicates.PHASH_BANDS,
            **pair_scores([group.ids for group in shipped.groups], truth),
            "index_pairs": shipped.index_pairs,
            "hash_pairs": shipped.hash_pairs,
            "candidate_pairs": shipped.candidate_pairs,
            "confirmed_pairs": shipped.confirmed_pairs,
        }
        pairs = duplicates.candidate_pairs(
            active, threshold=min(thresholds), neighbours=settings.NEAR_DUPLICATE_NEIGHBOURS
        )
        hashes = {pk: perceptual_hash.perceptual_hash(image) for pk, image in stored.items()}
        figures["grid"] = _grid_figures(pairs, hashes, truth, thresholds, hash_distances)
        figures["phash_only"] = _phash_only_figures(hashes, truth, hash_distances)
        figures["neighbours"] = _neighbours_figures(truth, neighbours, bands)

    return figures


def _grid_figures(pairs: dict, hashes: dict, truth, thresholds, hash_distances) -> list[dict]:
    """The groups' scores for every cosine threshold and pHash distance (None: cosine alone,
    as the search page folds near-duplicates)."""
    from gallery.library import perceptual_hash

    rows = []
    for threshold in thresholds:
        for distance in [*hash_distances, None]:
            kept = [
                pair
                for pair, similarity in pairs.items()
                if similarity >= threshold
                and (
                    distance is None
                    or perceptual_hash.distance(hashes[pair[0]], hashes[pair[1]]) <= distance
                )
            ]
            rows.append(
                {
                    "threshold": threshold,
                    "phash_distance": distance,
                    **pair_scores(_union_groups(kept), truth),
                }
            )
    return rows


def _neighbours_figures(truth, neighbours, bands) -> list[dict]:
    """The shipped rule with other numbers of neighbours per image and of hash bands (0: the
    index's candidates alone): what each side adds to recall."""
    from gallery.library import duplicates

    rows = []
    for k in neighbours:
        for band_count in bands:
            started = time.perf_counter()
            scan = duplicates.find_duplicate_groups(neighbours=k, bands=band_count)
            rows.append(
                {
                    "neighbours": k,
                    "bands": band_count,
                    **pair_scores([g.ids for g in scan.groups], truth),
                    "hash_pairs": scan.hash_pairs,
                    "seconds": round(time.perf_counter() - started, 3),
                }
            )
    return rows


def run_scan_timing(*, model: str, scan_sizes: list[int], progress=print) -> list[dict]:
    """How long the whole scan (`find_duplicate_groups`: hash bands, index, cosines of the
    hash candidates, groups) takes on synthetic libraries: clustered vectors, and the pHashes
    of generated photos (128 x 96: pHash looks at 32 x 32), with a near-copy of every 20th
    image (its vector moved a little, its hash 4 bits away)."""
    from django.conf import settings

    from gallery.indexing import registry, vector_index
    from gallery.library import duplicates, perceptual_hash

    rows = []
    for size in scan_sizes:
        progress(f"Timing the scan at {size:,} synthetic images (pHashes first)...")
        started = time.perf_counter()
        hashes = [
            perceptual_hash.hash_of_pixels(
                duplicate_images.photo_like(7_000_000 + n, size=(128, 96))
            )
            for n in range(size)
        ]
        hash_seconds = time.perf_counter() - started
        rng = np.random.default_rng(4)
        for original in hashes[::20]:
            flipped = original
            for bit in rng.choice(64, size=4, replace=False):
                flipped ^= 1 << int(bit)
            hashes.append(perceptual_hash.as_stored(flipped & ((1 << 64) - 1)))
        with (
            override_settings(**sandbox.random_weights(model)),
            sandbox.isolated_library("benchdupscan"),
        ):
            active = registry.active_model()
            vectors = synthetic.clustered_unit_vectors(size, seed=3, dimensions=active.dimensions)
            # A near-copy for every 20th vector, so the scan finds pairs as in a real library.
            copies = vectors[::20] + rng.normal(scale=0.01, size=vectors[::20].shape)
            copies /= np.linalg.norm(copies, axis=1, keepdims=True)
            loaded = np.concatenate([vectors, copies.astype(np.float32)])
            _create_scan_images(hashes)
            progress(f"Loading {len(loaded):,} vectors, then building the index...")
            from django.db import connection

            # One build after the load: inserting 100,000 vectors into the index one by one
            # takes many times longer.
            with connection.cursor() as cursor:
                cursor.execute(f"DROP INDEX IF EXISTS {active.index_name}")
            synthetic.load_vectors(loaded, active, create_images=False)
            vector_index.create_vector_index(active)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE gallery_embedding")
            total = size + len(copies)
            progress("Scanning...")
            started = time.perf_counter()
            scan = duplicates.find_duplicate_groups(model=active)
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "images": total,
                    "seconds": round(seconds, 2),
                    "hash_side_seconds": round(scan.hash_seconds, 2),
                    "index_side_seconds": round(scan.index_seconds, 2),
                    "ms_per_image": round(1000 * seconds / total, 3),
                    "index_pairs": scan.index_pairs,
                    "hash_pairs": scan.hash_pairs,
                    "confirmed_pairs": scan.confirmed_pairs,
                    "skipped_buckets": scan.skipped_buckets,
                    "planted_pairs": len(copies),
                    "threshold": settings.NEAR_DUPLICATE_SIMILARITY,
                    "phash_seconds_per_image_generated": round(hash_seconds / size, 5),
                }
            )
    return rows


def _create_scan_images(hashes: list[int]) -> None:
    """Image rows for synthetic vectors, named as synthetic.load_vectors matches them (the
    model's defaults fill every other column), with these pHashes."""
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
                phash=phash,
            )
            for n, phash in enumerate(hashes)
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
    from gallery.library import perceptual_hash

    order = sorted(hashes)
    distances = {
        (a, b): perceptual_hash.distance(hashes[a], hashes[b]) for a, b in combinations(order, 2)
    }
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

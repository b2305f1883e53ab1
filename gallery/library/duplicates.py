"""Near-duplicates across the library: finding groups of copies and keeping one of each.

Candidate pairs come from the active model's HNSW index, never from comparing every pair:
one statement asks the index for each image's `NEAR_DUPLICATE_NEIGHBOURS` nearest
neighbours (a LATERAL join ordered by `<=>`, the exact expression of the model's partial
index) and keeps those at cosine >= `NEAR_DUPLICATE_SIMILARITY`. A perceptual hash confirms
each pair (pHash of the stored thumbnail, within `NEAR_DUPLICATE_PHASH_DISTANCE` bits of 64),
since two different photos of one scene can be as close in CLIP's space as two copies of one
photo. Confirmed pairs are grouped by union-find, so a burst of five is one group.

pHashes are computed from the 320 px thumbnail (pHash itself looks at 32 x 32 pixels, so
the original would only cost more to decode) and kept in the Redis cache under the image's
SHA-256; without Redis they are computed again.
"""

import time
from dataclasses import dataclass, field
from datetime import datetime

import imagehash
from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone
from PIL import Image as PILImage

from gallery.cache import cache_call
from gallery.indexing import registry
from gallery.library import lifecycle
from gallery.models import EmbeddingModel, Image

PHASH_CACHE_PREFIX = "phash:"

# Each image's nearest neighbours through the model's partial HNSW index. The inner query is
# the search statement's form (same cast, same predicate), with the outer row's vector as
# the query: PostgreSQL runs one index scan per image, k rows each, never all pairs.
NEIGHBOUR_PAIRS_SQL = """
SELECT e.image_id, n.image_id, n.distance
FROM gallery_embedding e
CROSS JOIN LATERAL (
    SELECT c.image_id, (c.vector::vector({d})) <=> (e.vector::vector({d})) AS distance
    FROM gallery_embedding c
    WHERE c.model_id = {model}
    ORDER BY distance
    LIMIT %(limit)s
) n
WHERE e.model_id = {model} AND n.image_id <> e.image_id AND n.distance <= %(max_distance)s
"""


@dataclass
class DuplicateGroup:
    """Images that are copies of one picture; the suggested one to keep comes first."""

    images: list[Image]
    # The lowest cosine similarity among the confirmed pairs that joined the group.
    similarity: float

    @property
    def keep(self) -> Image:
        return self.images[0]

    @property
    def ids(self) -> list[int]:
        return [image.pk for image in self.images]


@dataclass
class DuplicateScan:
    threshold: float = 0.0
    max_hash_distance: int = 0
    groups: list[DuplicateGroup] = field(default_factory=list)
    images_scanned: int = 0
    candidate_pairs: int = 0  # from the index, at or above the cosine threshold
    confirmed_pairs: int = 0  # of those, within the pHash distance
    index_seconds: float = 0.0
    hash_seconds: float = 0.0
    scanned_at: datetime | None = None
    from_cache: bool = False  # the last scan, kept (see latest_duplicate_groups)

    @property
    def seconds(self) -> float:
        return self.index_seconds + self.hash_seconds


def candidate_pairs(
    model: EmbeddingModel, *, threshold: float, neighbours: int
) -> dict[tuple[int, int], float]:
    """{(smaller id, larger id): cosine similarity} for every image and those of its
    `neighbours` nearest (through the index) at `threshold` or more."""
    sql = NEIGHBOUR_PAIRS_SQL.format(d=int(model.dimensions), model=int(model.pk))
    pairs: dict[tuple[int, int], float] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        # SET LOCAL: ef_search at least the neighbours asked for, and a plain (strict) scan.
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', 'off', true)",
            [str(max(40, 2 * neighbours))],
        )
        # +1: an image is its own nearest neighbour.
        cursor.execute(sql, {"limit": neighbours + 1, "max_distance": 1 - threshold})
        for a, b, distance in cursor.fetchall():
            pairs[(min(a, b), max(a, b))] = 1 - float(distance)
        transaction.set_rollback(True)  # reads only: ends the settings above
    return pairs


def perceptual_hash(image: Image) -> imagehash.ImageHash | None:
    """The pHash of the image's thumbnail (preview or original without one), cached by
    SHA-256; None when no file can be read."""
    key = PHASH_CACHE_PREFIX + image.sha256
    cached = cache_call(cache.get, key)
    if cached:
        return imagehash.hex_to_hash(cached)
    for stored in (image.thumbnail, image.preview, image.file):
        if not stored:
            continue
        try:
            with default_storage.open(stored.name) as handle, PILImage.open(handle) as pixels:
                value = imagehash.phash(pixels.convert("RGB"))
        except (OSError, SyntaxError, ValueError):
            continue
        cache_call(cache.set, key, str(value), None)
        return value
    return None


def confirmed_pairs(pairs, images: dict[int, Image], *, max_hash_distance: int | None = None):
    """The pairs (of ids in `images`) whose pHashes differ in at most `max_hash_distance`
    bits; a pair with an unreadable image is not confirmed."""
    if max_hash_distance is None:
        max_hash_distance = settings.NEAR_DUPLICATE_PHASH_DISTANCE
    hashes = {pk: perceptual_hash(images[pk]) for pk in {pk for pair in pairs for pk in pair}}
    return {
        pair
        for pair in pairs
        if hashes[pair[0]] is not None
        and hashes[pair[1]] is not None
        and hashes[pair[0]] - hashes[pair[1]] <= max_hash_distance
    }


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        roots = sorted((self.find(a), self.find(b)))
        self.parent[roots[1]] = roots[0]


def _keeper_order(image: Image) -> tuple:
    # The copy most worth keeping first: most pixels, then the largest file (least
    # re-compressed), then the first uploaded.
    return (-image.width * image.height, -image.byte_size, image.pk)


def find_duplicate_groups(
    *,
    model: EmbeddingModel | None = None,
    threshold: float | None = None,
    max_hash_distance: int | None = None,
    neighbours: int | None = None,
) -> DuplicateScan:
    """Every group of near-duplicates among the images with a vector of `model` (the active
    one by default), largest groups first."""
    model = model or registry.active_model()
    threshold = settings.NEAR_DUPLICATE_SIMILARITY if threshold is None else threshold
    if max_hash_distance is None:
        max_hash_distance = settings.NEAR_DUPLICATE_PHASH_DISTANCE
    neighbours = neighbours or settings.NEAR_DUPLICATE_NEIGHBOURS
    scan = DuplicateScan(
        scanned_at=timezone.now(),
        threshold=threshold,
        max_hash_distance=max_hash_distance,
        images_scanned=model.embeddings.count(),
    )
    started = time.perf_counter()
    pairs = candidate_pairs(model, threshold=threshold, neighbours=neighbours)
    scan.index_seconds = time.perf_counter() - started
    scan.candidate_pairs = len(pairs)
    started = time.perf_counter()
    images = Image.objects.in_bulk({image_id for pair in pairs for image_id in pair})
    pairs = {pair: value for pair, value in pairs.items() if set(pair) <= images.keys()}
    confirmed = confirmed_pairs(pairs, images, max_hash_distance=max_hash_distance)
    scan.confirmed_pairs = len(confirmed)
    groups = _UnionFind()
    lowest = {pair: pairs[pair] for pair in confirmed}
    for a, b in confirmed:
        groups.union(a, b)
    scan.hash_seconds = time.perf_counter() - started
    members: dict[int, list[Image]] = {}
    for pk in {pk for pair in lowest for pk in pair}:
        members.setdefault(groups.find(pk), []).append(images[pk])
    similarity: dict[int, float] = {}
    for (a, _), value in lowest.items():
        root = groups.find(a)
        similarity[root] = min(value, similarity.get(root, 1.0))
    scan.groups = [
        DuplicateGroup(images=sorted(group, key=_keeper_order), similarity=similarity[root])
        for root, group in members.items()
    ]
    scan.groups.sort(key=lambda group: (-len(group.images), min(group.ids)))
    return scan


# The staff page shows the last scan (a scan takes about 1.4 ms an image: 15 s at 10,000),
# so that deleting copies does not scan the library again; "Scan again" does.
SCAN_CACHE_SECONDS = 3600


def _scan_cache_key(model: EmbeddingModel) -> str:
    # added_at too: a model row of another (test, restored) database may reuse the id.
    return f"duplicate-scan:{model.pk}:{model.added_at.timestamp()}"


def latest_duplicate_groups(*, rescan: bool = False) -> DuplicateScan:
    """The last scan's groups (kept an hour in Redis) without the images deleted since, or a
    new scan when none is kept (or `rescan`)."""
    model = registry.active_model()
    kept = None if rescan else cache_call(cache.get, _scan_cache_key(model))
    if kept is None:
        scan = find_duplicate_groups(model=model)
        summary = {
            **{name: getattr(scan, name) for name in _SCAN_FIGURES},
            "groups": [(group.ids, group.similarity) for group in scan.groups],
        }
        cache_call(cache.set, _scan_cache_key(model), summary, SCAN_CACHE_SECONDS)
        return scan
    images = Image.objects.in_bulk([pk for ids, _ in kept["groups"] for pk in ids])
    scan = DuplicateScan(**{name: kept[name] for name in _SCAN_FIGURES}, from_cache=True)
    for ids, similarity in kept["groups"]:
        left = [images[pk] for pk in ids if pk in images]
        if len(left) > 1:
            scan.groups.append(
                DuplicateGroup(images=sorted(left, key=_keeper_order), similarity=similarity)
            )
    return scan


_SCAN_FIGURES = (
    "threshold",
    "max_hash_distance",
    "images_scanned",
    "candidate_pairs",
    "confirmed_pairs",
    "index_seconds",
    "hash_seconds",
    "scanned_at",
)


@transaction.atomic
def keep_one_delete_others(*, keep, others, by) -> int:
    """Delete `others` (through lifecycle.delete_images: rows, vectors and files) and keep
    `keep`; returns how many were deleted. Refused when the one to keep is gone, so a group
    is never deleted whole."""
    keep_id = int(getattr(keep, "pk", keep))
    if not Image.objects.select_for_update().filter(pk=keep_id).exists():
        raise lifecycle.LibraryError(
            f"Image {keep_id} no longer exists: nothing was deleted, so a copy is kept."
        )
    doomed = sorted({int(getattr(image, "pk", image)) for image in others} - {keep_id})
    return lifecycle.delete_images(images=doomed, by=by)

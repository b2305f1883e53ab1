"""Near-duplicates across the library: finding groups of copies and keeping one of each.

Two images are near-duplicates when their vectors of the active model are at cosine >=
`NEAR_DUPLICATE_SIMILARITY` and their perceptual hashes (pHash of the thumbnail,
gallery/library/perceptual_hash.py) differ in at most `NEAR_DUPLICATE_PHASH_DISTANCE` of 64
bits: the rule of search pages' folding too. Two different photos of one scene can be as
close in CLIP's space as two copies of one photo, hence the hash.

A scan never compares every pair. Candidate pairs come from two sides, unioned:

- the active model's HNSW index: one statement asks it for each image's
  `NEAR_DUPLICATE_NEIGHBOURS` nearest neighbours (a LATERAL join ordered by `<=>` on the
  exact expression of the model's partial index);
- the hashes, by multi-index hashing: the 64 bits are cut into `PHASH_BANDS` bands, and two
  images whose hashes agree on a whole band are a candidate (images are bucketed by each
  band's value, and only pairs within a bucket are compared).

Every candidate must pass both tests above. Confirmed pairs are grouped by union-find, so a
burst of five is one group. The scan runs as an RQ job (`scan_duplicates_job`): a 100,000
image library takes minutes, longer than a web request may; the staff page shows its last
result.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import django_rq
import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from gallery.cache import cache_call
from gallery.indexing import queueing, registry, vector_index
from gallery.library import lifecycle, perceptual_hash
from gallery.models import EmbeddingModel, Image

logger = logging.getLogger(__name__)

# Bands the hash is cut into for its candidates (bench_duplicates, 491 images of which 388 in
# groups of four: pairs within 12 bits that share a band, 4 bands: 83 %, 5: 95 %, 6: 98 %,
# 8: 99.5 %). Pairs compared grow with n² · bands / 2^(64 / bands): at 100,000 generated
# photos' hashes, 6 bands compare 25 million pairs and 8 bands 183 million.
PHASH_BANDS = 6
# A bucket larger than this (thousands of blank or night frames sharing a band) is skipped
# in that band rather than compared pair by pair: the other bands and the index still
# propose its copies. The scan counts such buckets (`skipped_buckets`).
PHASH_BUCKET_CAP = 2000

# Each image's nearest neighbours through the model's partial HNSW index. The inner query
# orders by the index's own expression under its predicate, with the outer row's vector as
# the query: PostgreSQL runs one index scan per image, k rows each, never all pairs.
NEIGHBOUR_PAIRS_SQL = """
SELECT e.image_id, n.image_id, n.distance
FROM gallery_embedding e
CROSS JOIN LATERAL (
    SELECT c.image_id, {candidate} <=> {query} AS distance
    FROM gallery_embedding c
    WHERE c.model_id = {model}
    ORDER BY distance
    LIMIT %(limit)s
) n
WHERE e.model_id = {model} AND n.image_id <> e.image_id AND n.distance <= %(max_distance)s
"""

# The cosine similarity of given pairs (those the hashes proposed), from the stored vectors.
PAIR_SIMILARITY_SQL = """
SELECT p.first_id, p.second_id, 1 - ((a.vector::vector({d})) <=> (b.vector::vector({d})))
FROM unnest(%(first)s::bigint[], %(second)s::bigint[]) AS p(first_id, second_id)
JOIN gallery_embedding a ON a.model_id = {model} AND a.image_id = p.first_id
JOIN gallery_embedding b ON b.model_id = {model} AND b.image_id = p.second_id
"""


def neighbour_pairs_sql(model: EmbeddingModel) -> str:
    storage = vector_index.index_storage(model)
    return NEIGHBOUR_PAIRS_SQL.format(
        candidate=vector_index.vector_expression(model, storage, alias="c"),
        query=vector_index.vector_expression(model, storage, alias="e"),
        model=int(model.pk),
    )


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
    index_pairs: int = 0  # from the index, at or above the cosine threshold
    hash_pairs: int = 0  # from the hash bands, within the pHash distance
    candidate_pairs: int = 0  # both, each pair once
    confirmed_pairs: int = 0  # of those, passing both tests
    hashes_filled: int = 0  # pHashes read from thumbnails (images stored before the column)
    skipped_buckets: int = 0  # hash buckets over PHASH_BUCKET_CAP, left to the other bands
    index_seconds: float = 0.0
    hash_seconds: float = 0.0
    scanned_at: datetime | None = None

    @property
    def seconds(self) -> float:
        return self.index_seconds + self.hash_seconds


def candidate_pairs(
    model: EmbeddingModel, *, threshold: float, neighbours: int
) -> dict[tuple[int, int], float]:
    """{(smaller id, larger id): cosine similarity} for every image and those of its
    `neighbours` nearest (through the index) at `threshold` or more."""
    pairs: dict[tuple[int, int], float] = {}
    if threshold > 1:
        return pairs  # no cosine reaches it: near-duplicates are off
    with transaction.atomic(), connection.cursor() as cursor:
        # SET LOCAL: ef_search at least the neighbours asked for, and a plain (strict) scan.
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', 'off', true)",
            [str(max(40, 2 * neighbours))],
        )
        # +1: an image is its own nearest neighbour.
        cursor.execute(
            neighbour_pairs_sql(model), {"limit": neighbours + 1, "max_distance": 1 - threshold}
        )
        for a, b, distance in cursor.fetchall():
            pairs[(min(a, b), max(a, b))] = 1 - float(distance)
        transaction.set_rollback(True)  # reads only: ends the settings above
    return pairs


def _bands(count: int) -> list[tuple[int, int]]:
    """(shift, width) of `count` bands covering the 64 bits, as equal as can be."""
    widths = [64 // count + (1 if n < 64 % count else 0) for n in range(count)]
    return [(sum(widths[:n]), width) for n, width in enumerate(widths)]


def hash_candidate_pairs(
    hashes: dict[int, int],
    *,
    max_distance: int,
    bands: int = PHASH_BANDS,
    bucket_cap: int = PHASH_BUCKET_CAP,
) -> tuple[set[tuple[int, int]], int]:
    """The pairs (smaller id, larger id) of `hashes` ({image id: stored pHash}) that share at
    least one band's value and differ in at most `max_distance` bits, and how many buckets
    were skipped for holding more than `bucket_cap` images.

    By the pigeonhole principle, two hashes within `max_distance` bits agree on a whole band
    whenever `bands` > `max_distance`; with fewer bands (faster: fewer, smaller buckets to
    compare) most close pairs still do, and the index proposes the others.
    """
    ids = np.fromiter(hashes.keys(), dtype=np.int64, count=len(hashes))
    values = np.fromiter(hashes.values(), dtype=np.int64, count=len(hashes)).view(np.uint64)
    found: set[tuple[int, int]] = set()
    skipped = 0
    for shift, width in _bands(bands):
        keys = (values >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        cuts = np.flatnonzero(np.diff(keys[order])) + 1
        starts = np.concatenate(([0], cuts))
        sizes = np.diff(np.concatenate((starts, [len(order)])))
        skipped += int(np.count_nonzero(sizes > bucket_cap))
        # Buckets of one size at a time, as one array (buckets x members): no Python loop
        # over the tens of thousands of small buckets.
        for size in np.unique(sizes[(sizes > 1) & (sizes <= bucket_cap)]):
            members = order[starts[sizes == size][:, None] + np.arange(size)]
            first, second = np.triu_indices(size, 1)
            # At most about 4 million pairs at once (64 MB of hashes).
            step = max(1, 4_000_000 // len(first))
            for row in range(0, len(members), step):
                a = members[row : row + step][:, first]
                b = members[row : row + step][:, second]
                close = np.bitwise_count(values[a] ^ values[b]) <= max_distance
                for x, y in zip(ids[a[close]].tolist(), ids[b[close]].tolist(), strict=True):
                    found.add((x, y) if x < y else (y, x))
    return found, skipped


def pair_similarities(model: EmbeddingModel, pairs) -> dict[tuple[int, int], float]:
    """{pair: cosine similarity} of these pairs' vectors of `model` (pairs with an image
    that has none are left out)."""
    pairs = list(pairs)
    similarities: dict[tuple[int, int], float] = {}
    sql = PAIR_SIMILARITY_SQL.format(d=int(model.dimensions), model=int(model.pk))
    with connection.cursor() as cursor:
        for start in range(0, len(pairs), 50_000):
            chunk = pairs[start : start + 50_000]
            cursor.execute(sql, {"first": [a for a, _ in chunk], "second": [b for _, b in chunk]})
            similarities.update({(a, b): float(value) for a, b, value in cursor.fetchall()})
    return similarities


def confirmed_pairs(pairs, images: dict[int, Image], *, max_hash_distance: int | None = None):
    """The pairs (of ids in `images`) whose pHashes differ in at most `max_hash_distance`
    bits; a pair with an unreadable image is not confirmed."""
    if max_hash_distance is None:
        max_hash_distance = settings.NEAR_DUPLICATE_PHASH_DISTANCE
    hashes = {
        pk: perceptual_hash.perceptual_hash(images[pk])
        for pk in {pk for pair in pairs for pk in pair}
    }
    return {
        pair
        for pair in pairs
        if hashes[pair[0]] is not None
        and hashes[pair[1]] is not None
        and perceptual_hash.distance(hashes[pair[0]], hashes[pair[1]]) <= max_hash_distance
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
    bands: int = PHASH_BANDS,
) -> DuplicateScan:
    """Every group of near-duplicates among the images with a vector of `model` (the active
    one by default), largest groups first. `bands=0` leaves the hash side out (the index's
    candidates alone)."""
    model = model or registry.active_model()
    threshold = settings.NEAR_DUPLICATE_SIMILARITY if threshold is None else threshold
    if max_hash_distance is None:
        max_hash_distance = settings.NEAR_DUPLICATE_PHASH_DISTANCE
    neighbours = neighbours or settings.NEAR_DUPLICATE_NEIGHBOURS
    scan = DuplicateScan(
        scanned_at=timezone.now(), threshold=threshold, max_hash_distance=max_hash_distance
    )
    indexed = Image.objects.filter(embeddings__model=model)
    started = time.perf_counter()
    scan.hashes_filled = perceptual_hash.fill_missing_hashes(indexed)
    hashes = dict(indexed.filter(phash__isnull=False).values_list("pk", "phash"))
    scan.images_scanned = model.embeddings.count()
    hash_pairs: set[tuple[int, int]] = set()
    if bands and threshold <= 1:
        hash_pairs, scan.skipped_buckets = hash_candidate_pairs(
            hashes, max_distance=max_hash_distance, bands=bands
        )
    scan.hash_seconds = time.perf_counter() - started
    started = time.perf_counter()
    pairs = candidate_pairs(model, threshold=threshold, neighbours=neighbours)
    scan.index_pairs, scan.hash_pairs = len(pairs), len(hash_pairs)
    new_pairs = hash_pairs - pairs.keys()
    pairs.update(
        (pair, value)
        for pair, value in pair_similarities(model, new_pairs).items()
        if value >= threshold
    )
    scan.index_seconds = time.perf_counter() - started
    scan.candidate_pairs = len(pairs)
    confirmed = {
        pair: value
        for pair, value in pairs.items()
        if pair in hash_pairs
        or (
            pair[0] in hashes
            and pair[1] in hashes
            and perceptual_hash.distance(hashes[pair[0]], hashes[pair[1]]) <= max_hash_distance
        )
    }
    scan.confirmed_pairs = len(confirmed)
    groups = _UnionFind()
    for a, b in confirmed:
        groups.union(a, b)
    images = Image.objects.in_bulk({pk for pair in confirmed for pk in pair})
    members: dict[int, list[Image]] = {}
    similarity: dict[int, float] = {}
    for (a, b), value in confirmed.items():
        if a in images and b in images:  # neither deleted during the scan
            root = groups.find(a)
            similarity[root] = min(value, similarity.get(root, 1.0))
    for pk, image in images.items():
        root = groups.find(pk)
        if root in similarity:
            members.setdefault(root, []).append(image)
    scan.groups = [
        DuplicateGroup(images=sorted(group, key=_keeper_order), similarity=similarity[root])
        for root, group in members.items()
        if len(group) > 1
    ]
    scan.groups.sort(key=lambda group: (-len(group.images), min(group.ids)))
    return scan


# -- the scan as a job, and its last result ----------------------------------------------------

SCAN_JOB = "gallery.library.tasks.scan_duplicates_job"
# One id, so a scan is never queued twice while one waits or runs ("Scan again" pressed twice,
# by two people).
SCAN_JOB_ID = "duplicate-scan"
# A library indexed before pHashes were stored reads each thumbnail once (about 10 ms an
# image: 17 min at 100,000) before its first scan; later scans of 100,000 take minutes.
SCAN_JOB_TIMEOUT = 2 * 3600
SCAN_RETRY_INTERVALS = (60,)

_SCAN_FIGURES = (
    "threshold",
    "max_hash_distance",
    "images_scanned",
    "index_pairs",
    "hash_pairs",
    "candidate_pairs",
    "confirmed_pairs",
    "hashes_filled",
    "skipped_buckets",
    "index_seconds",
    "hash_seconds",
    "scanned_at",
)


def _scan_cache_key(model: EmbeddingModel) -> str:
    # added_at too: a model row of another (test, restored) database may reuse the id.
    return f"duplicate-scan:{model.pk}:{model.added_at.timestamp()}"


def scan_and_store_duplicates() -> DuplicateScan:
    """Scan the library (the active model) and keep the result, without expiry, as the staff
    page's last scan: its figures and each group's ids."""
    model = registry.active_model()
    scan = find_duplicate_groups(model=model)
    summary = {
        **{name: getattr(scan, name) for name in _SCAN_FIGURES},
        "groups": [(group.ids, group.similarity) for group in scan.groups],
    }
    cache_call(cache.set, _scan_cache_key(model), summary, None)
    logger.info(
        "Near-duplicate scan of %d images: %d groups, %d pairs confirmed of %d candidates "
        "(%.1f s hashes, %.1f s index)",
        scan.images_scanned,
        len(scan.groups),
        scan.confirmed_pairs,
        scan.candidate_pairs,
        scan.hash_seconds,
        scan.index_seconds,
    )
    return scan


def last_duplicate_scan() -> DuplicateScan | None:
    """The last stored scan of the active model, without the images deleted since (and the
    groups they leave with one image); None when none was stored."""
    model = registry.active_model()
    kept = cache_call(cache.get, _scan_cache_key(model))
    if kept is None:
        return None
    images = Image.objects.in_bulk([pk for ids, _ in kept["groups"] for pk in ids])
    # A figure the stored scan lacks (kept by an older version) keeps its default.
    scan = DuplicateScan(**{name: kept[name] for name in _SCAN_FIGURES if name in kept})
    for ids, similarity in kept["groups"]:
        left = [images[pk] for pk in ids if pk in images]
        if len(left) > 1:
            scan.groups.append(
                DuplicateGroup(images=sorted(left, key=_keeper_order), similarity=similarity)
            )
    return scan


def request_duplicate_scan() -> bool:
    """Queue a scan (at the back of ENCODING_QUEUE) unless one is waiting or running; False
    when the queue cannot be reached."""
    try:
        queueing.enqueue_once(
            django_rq.get_queue(settings.ENCODING_QUEUE),
            SCAN_JOB,
            job_id=SCAN_JOB_ID,
            at_front=False,
            retry_intervals=SCAN_RETRY_INTERVALS,
            job_timeout=SCAN_JOB_TIMEOUT,
        )
    except RedisError as error:
        logger.warning("Queue unreachable (%s): no near-duplicate scan queued.", error)
        return False
    return True


def duplicate_scan_running() -> bool:
    """Whether a scan waits in the queue or runs on a live worker."""
    try:
        return queueing.job_is_live(django_rq.get_queue(settings.ENCODING_QUEUE), SCAN_JOB_ID)
    except RedisError:
        return False


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

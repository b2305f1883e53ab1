"""The semantic ranking of one search, read block by block: each block is the best rows
strictly after the previous block's last (distance, id), so pages cut from it never repeat or
skip a row however deep; a page's images come in the same statement as its block.

    SELECT set_config('hnsw.ef_search', ...), ...;     -- ends with the implicit transaction
    WITH candidates AS MATERIALIZED (                  -- HNSW (or exact) order + all filters
        SELECT e.image_id AS id, e.vector::halfvec(d) <=> q AS distance
        FROM gallery_embedding e [JOIN gallery_image i ON i.id = e.image_id]
        WHERE e.model_id = <active model> AND filters ORDER BY distance LIMIT n),
    block AS (SELECT id, distance FROM candidates
        WHERE (distance, id) > <the previous block's last>  -- pages continue, never repeat
        ORDER BY distance + 0, id LIMIT <block size>)      -- strict order restored
    SELECT <the image and its tags, for the rows on the page>, id, distance, rank FROM block

With `hnsw.iterative_scan = relaxed_order` the index keeps scanning until enough rows pass the
filters (a 0.5 % filter returned 0.2 of 10 rows without it, 10 of 10 with it); the
materialized CTE then restores strict order, as pgvector's documentation prescribes.
"""

import hashlib
import json
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

from gallery.cache import cache_call
from gallery.models import EmbeddingModel, Image
from gallery.replicas import read_connection
from gallery.search import statements
from gallery.search.statements import IMAGE_FIELDS, RESULT_COLUMNS, tag_names_of

TAG_NAMES = tag_names_of("i.id")


@dataclass
class Totals:
    candidates: int  # rows the vector scan returned (at most the pool)
    matches: int  # those at or above the minimum score (fused: the fused ranking's rows)
    best_score: float | None
    keyword_matches: int = 0


# The vector order and every filter: the first `pool` rows of the index (or an exact scan).
CANDIDATES = """
WITH candidates AS MATERIALIZED (
    SELECT e.image_id AS id, {distance} AS distance
    FROM {searchable}
    WHERE {conditions}
    ORDER BY distance
    LIMIT %(pool)s
),
"""

# Images of ranked rows (id, distance), in `order`; the rows come as arrays, ranks by ordinality.
RANKED_SQL = """
SELECT {columns}, r.distance, 1 - r.distance AS score, {tag_names} AS tag_names
FROM unnest(%(ids)s::bigint[], %(distances)s::float8[]) WITH ORDINALITY AS r(id, distance, rank)
JOIN gallery_image i ON i.id = r.id
ORDER BY {order}
LIMIT %(limit)s OFFSET %(offset)s
"""


def ranked_images(rows, params: dict, *, order: str, limit: int, offset: int) -> list[Image]:
    sql = RANKED_SQL.format(columns=RESULT_COLUMNS, order=order, tag_names=TAG_NAMES)
    ids, distances = [row[0] for row in rows], [row[1] for row in rows]
    # No vector order here: no index settings, no transaction (one round trip).
    return statements.run(
        sql,
        {**params, "ids": ids, "distances": distances, "limit": limit, "offset": offset},
        exact=None,
    )


# -- the semantic ranking, block by block ---------------------------------------------------

# A block of the ranking: the index's first `pool` rows (relaxed order), sorted strictly;
# the block is the first `size` of them after the previous block's last (distance, id). The
# keyset is applied after the scan, not in it: a filter on the distance made the planner
# leave the index for a sequential scan. Rows ranked within the page being shown (ranks
# counted from 1 within the block) come with their images, so a first page is one statement.
BLOCK_SQL = (
    CANDIDATES
    + """block AS (
    SELECT id, distance FROM candidates
    WHERE {after}
    ORDER BY distance + 0, id
    LIMIT %(size)s
)
SELECT {columns}, b.id AS ranked_id, b.distance, 1 - b.distance AS score,
       (SELECT count(*) FROM candidates) AS found,
       CASE WHEN i.id IS NOT NULL THEN {tag_names} END AS tag_names
-- Ranked after the LIMIT: a window function below it would turn the top-N sort of an exact
-- block into a sort of every row.
FROM (SELECT *, row_number() OVER (ORDER BY distance + 0, id) AS rank FROM block) b
LEFT JOIN gallery_image i ON i.id = b.id AND b.rank > %(shown_from)s AND b.rank <= %(shown_to)s
ORDER BY b.rank
"""
)
# BLOCK_SQL's columns after the image's own, and where the count of candidates is.
BLOCK_EXTRA_COLUMNS = ["ranked_id", "distance", "score", "found", "tag_names"]
BLOCK_FOUND = IMAGE_FIELDS + BLOCK_EXTRA_COLUMNS.index("found")
# Strictly after the previous block's last row: the keyset that continues the ranking.
AFTER = "(distance, id) > (%(after_distance)s, %(after_id)s)"
# The first block's rows: pages 1 and 2 at the default page size. Small, because a filtered
# search scans the index until this many rows pass the filters (an ef_search-sized first
# block cost a 10 % tag filter 167 ms at 1M vectors); one graph search fills it otherwise.
FIRST_BLOCK = 50
# How long the blocks after the first are kept for the pages that follow.
RANKING_CACHE_SECONDS = 600


@dataclass
class Ranking:
    """The semantic ranking of one search, as (image id, distance) best first, read in
    blocks as deep as a page needs.

    Each block holds the best rows strictly after the previous block's last (distance, id),
    so the pages cut from the ranking never repeat or skip a row, however deep. (Reading one
    growing pool per page did: under relaxed iterative scan a longer scan can bring rows
    closer than a shorter one returned, so page 2's pool sorted differently from page 1's.)
    Block k keeps `block * 2**k` rows (`block` is FIRST_BLOCK; SEARCH_HYBRID_DEPTH in hybrid
    mode). The first is the index's first rows (one graph search unless filters reject many),
    sorted strictly; later blocks are read `block` rows deeper than they keep so the relaxed
    order is sorted out before the cut. A block the index cannot fill while more rows pass the
    filters is read exactly, as is every block of a library scanned exactly; either way the
    same block gives the same rows.

    The first block is read afresh by every search, so an upload shows at once. The blocks
    after it are kept in the cache for RANKING_CACHE_SECONDS, under the query, the filters
    and the row they follow, so a deep page does not read the earlier blocks again; without
    Redis they are read again and come out the same.
    """

    model: EmbeddingModel
    semantic: dict  # the statement's parts: distance, searchable, conditions
    conditions: list[str]
    filters: list
    params: dict  # the query vector, the filters' values and ef_search
    exact: bool
    rows: list[tuple[int, float]] = field(default_factory=list)
    blocks: int = 0
    ended: bool = False
    read_exactly: bool = False
    # The first block's size (FIRST_BLOCK; SEARCH_HYBRID_DEPTH in hybrid mode).
    block: int = 0
    # Positions (from 0) of the page to be shown: a block read from the database brings
    # their images (`images`, by id), so a page in the first block is one statement.
    shown: range = range(0)
    images: dict[int, Image] = field(default_factory=dict)

    def __post_init__(self):
        self.block = self.block or FIRST_BLOCK

    @property
    def strategy(self) -> str:
        return "exact" if self.exact or self.read_exactly else "hnsw"

    def first(self, count: int, *, max_distance: float = 2.0) -> list[tuple[int, float]]:
        """The first `count` rows (at most SEARCH_MAX_RESULTS) within `max_distance`."""
        count = min(count, settings.SEARCH_MAX_RESULTS)
        while len(self.rows) < count and not self.ended:
            if self.rows and self.rows[-1][1] > max_distance:
                break  # every later row is farther still
            self._read_block()
        return [row for row in self.rows[:count] if row[1] <= max_distance]

    def images_of(self, rows: list[tuple[int, float]]) -> list[Image] | None:
        """The images of these ranked rows, or None when a block read without them (one kept
        in the cache) holds any of them."""
        if not all(image_id in self.images for image_id, _ in rows):
            return None
        return [self.images[image_id] for image_id, _ in rows]

    def totals(self, matches: int) -> Totals:
        best = 1 - self.rows[0][1] if self.rows else None
        return Totals(candidates=len(self.rows), matches=matches, best_score=best)

    def _read_block(self) -> None:
        start = len(self.rows)
        size = min(self.block << self.blocks, settings.SEARCH_MAX_RESULTS - start)
        after = self.rows[-1] if self.rows else None
        key = self._cache_key(after, size) if after else None
        block = cache_call(cache.get, key) if key else None
        if block is None:
            block = self._scan(after, size, start)
            if key:
                cache_call(cache.set, key, block, RANKING_CACHE_SECONDS)
        rows, exactly = block
        self.rows += rows
        self.blocks += 1
        self.read_exactly = self.read_exactly or exactly
        self.ended = len(rows) < size or len(self.rows) >= settings.SEARCH_MAX_RESULTS

    def _scan(self, after, size: int, start: int) -> tuple[list[tuple[int, float]], bool]:
        # The shown page's ranks within this block (from 1; an empty range when elsewhere).
        shown_from = min(max(self.shown.start - start, 0), size)
        shown_to = min(max(self.shown.stop - start, shown_from), size)
        params = {**self.params, "size": size, "shown_from": shown_from, "shown_to": shown_to}
        if after is not None:
            params.update(after_id=after[0], after_distance=after[1])
        # An exact read runs with index scans off: its page's images are read by id after it.
        exactly = {**params, "shown_from": 0, "shown_to": 0}
        sql = BLOCK_SQL.format(
            **self.semantic,
            columns=RESULT_COLUMNS,
            tag_names=TAG_NAMES,
            after="true" if after is None else AFTER,
        )
        if not self.exact:
            if after is None:
                # The first block is one graph search as wide as the block, sorted strictly:
                # nothing before it can be missed, so it needs no deeper read.
                pool = size
                params["ef_search"] = max(int(params["ef_search"]), size)
            else:
                # `block` rows deeper than the block needs, so the relaxed order is sorted out.
                pool = start + size + self.block
            rows = statements.run(sql, {**params, "pool": pool}, exact=False, as_images=False)
            found = rows[0][BLOCK_FOUND] if rows else 0
            if len(rows) == size or not (
                found >= pool
                or _index_scan_fell_short(
                    found, pool, self.model, self.filters, self.conditions, self.params
                )
            ):
                return self._ranked_rows(rows), False
            # The block is short while more rows could follow: the scan ran out of budget
            # before enough rows passed the filters, or returned too many rows the ranking
            # has passed. Read exactly instead of ending the ranking early.
        # Exactly: the first block is the first `size` rows (a top-N sort: 65-100 ms at 100k
        # instead of 220 ms for sorting every row); a later block reads every row in order
        # (LIMIT NULL), so rows the index missed before cannot fill the pool ahead of the
        # ones after the keyset.
        pool = size if after is None else None
        rows = statements.run(sql, {**exactly, "pool": pool}, exact=True, as_images=False)
        return self._ranked_rows(rows), True

    def _ranked_rows(self, rows) -> list[tuple[int, float]]:
        """A block statement's (image id, distance) rows; the shown rows' images are kept.
        Only those become model instances (50 of them cost ~0.5 ms)."""
        shown = [row for row in rows if row[0] is not None]
        for image in statements.as_images_of(BLOCK_EXTRA_COLUMNS, shown):
            self.images[image.pk] = image
        return [(row[IMAGE_FIELDS], float(row[IMAGE_FIELDS + 1])) for row in rows]

    def _cache_key(self, after: tuple[int, float], size: int) -> str:
        parts = [self.model.pk, self.semantic, self.params, self.exact, self.block, size, after]
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
        return f"search-ranking:{digest.hexdigest()}"


def _index_scan_fell_short(found: int, pool: int, model, filters, conditions, params) -> bool:
    """Whether an exact scan could find candidates the index scan did not (it ran out of scan
    budget with `found` of the `pool` rows it was asked for).

    Not when the results simply end before the pool is full (a small library, a narrow
    filter): then every vector of the model was a candidate, or the rows that pass the
    filters, counted only up to the pool, are no more than the candidates. That count
    computes no distance; an exact scan computes one for every row that passes.
    """
    if found >= pool or found >= statements.searchable_count(model):
        return False
    with read_connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {statements.searchable(filters)} "
            f"WHERE {' AND '.join(conditions)} LIMIT %(pool)s) passing",
            {**params, "pool": pool},
        )
        return cursor.fetchone()[0] > found

"""Collapsing near-duplicates on a page of search results: bursts and re-saved copies show as
one tile with "+N similar" instead of filling the page with the same picture.

Collapsing works within the page the search returned: paging stays exactly the search's own
(page 2 starts at the same rank whether duplicates are collapsed or shown), so a page may
show fewer tiles than `page_size`, and a burst that straddles two pages shows one tile on
each. The close pairs come from one SQL statement over the page's stored vectors (at most
101 rows, so at most 5,050 cosine distances, computed in PostgreSQL); only those are checked by
their perceptual hashes (stored with each image, `Image.phash`).
"""

from django.conf import settings

from gallery.library.duplicates import confirmed_pairs
from gallery.replicas import read_connection

# The page's pairs at or above the threshold, each once (a < b), from the stored vectors in
# the same cast as the model's index expression.
CLOSE_PAIRS_SQL = """
SELECT a.image_id, b.image_id
FROM gallery_embedding a JOIN gallery_embedding b ON b.model_id = a.model_id
WHERE a.model_id = %(model)s AND a.image_id = ANY(%(ids)s) AND b.image_id = ANY(%(ids)s)
  AND a.image_id < b.image_id
  AND (a.vector::vector({d})) <=> (b.vector::vector({d})) <= %(max_distance)s
"""


def close_pairs(image_ids: list[int], model, *, threshold: float) -> set[tuple[int, int]]:
    """(smaller id, larger id) of every two of these images whose vectors of `model` are at
    cosine similarity `threshold` or more."""
    if len(image_ids) < 2 or threshold > 1:
        return set()  # above 1 no cosine reaches it: folding is off, no statement is run
    with read_connection.cursor() as cursor:
        cursor.execute(
            CLOSE_PAIRS_SQL.format(d=int(model.dimensions)),
            {"model": model.pk, "ids": list(image_ids), "max_distance": 1 - threshold},
        )
        return {(a, b) for a, b in cursor.fetchall()}


def collapse_near_duplicates(hits: list, model, *, threshold: float | None = None) -> list:
    """The hits with each near-duplicate folded into the first hit it resembles.

    Two hits are near-duplicates by the staff page's rule (gallery/library/duplicates.py):
    cosine >= threshold, confirmed by their pHashes, so two different photos of one scene
    stay apart. In page order, a hit not yet folded leads a tile and takes every later
    unfolded near-duplicate of it (its `similar`). Only the leader is compared, never a chain
    (A like B like C does not fold C into A unless C is like A too).
    """
    threshold = settings.NEAR_DUPLICATE_SIMILARITY if threshold is None else threshold
    pairs = close_pairs([hit.image.pk for hit in hits], model, threshold=threshold)
    if pairs:
        pairs = confirmed_pairs(pairs, {hit.image.pk: hit.image for hit in hits})
    if not pairs:
        return hits
    folded: set[int] = set()
    leaders = []
    for position, hit in enumerate(hits):
        if hit.image.pk in folded:
            continue
        leaders.append(hit)
        for later in hits[position + 1 :]:
            key = tuple(sorted((hit.image.pk, later.image.pk)))
            if later.image.pk not in folded and key in pairs:
                folded.add(later.image.pk)
                hit.similar.append(later)
    return leaders

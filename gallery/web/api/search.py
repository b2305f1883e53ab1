"""Search over the API: /api/v1/search and the first address, /api/search (the same
operations, mounted twice), answering through SearchOut."""

from django.urls import reverse
from ninja import File, Form, Query, Router, UploadedFile

from gallery.replicas import reads_from_replica
from gallery.search.selector import Hit
from gallery.web.api.schemas import ErrorOut, SearchOut, SearchParams
from gallery.web.limits import limit_search_rate
from gallery.web.searching import refuse_blank, run_search

router = Router()

SEARCH_DOC = """Search by text (`q`), by an image in the library (`like`), by a query image
(POST a multipart `image` file), or any of them together, narrowed by tags and the days
taken. The same parameters and answers as `/api/search` (the first, unversioned address),
with paging links to this address. A posted image is kept for 24 hours: `next` and
`previous` carry it as `image_token`. `more` and `less` (image ids) refine a search by
relevance feedback; the links carry them too."""

ANSWERS = {200: SearchOut, 400: ErrorOut, 401: ErrorOut, 429: ErrorOut, 503: ErrorOut}


@router.get(
    "/search",
    response=ANSWERS,
    auth=None,
    url_name="search",
    summary="Search (query parameters)",
    description=SEARCH_DOC,
)
@limit_search_rate
@reads_from_replica  # inside the limit: a retry on the primary is not counted twice
def search(request, params: Query[SearchParams]):
    return _answer(request, dict(params), request.GET, image=None)


@router.post(
    "/search",
    response=ANSWERS,
    auth=None,
    summary="Search (form fields, with a query image)",
    description=SEARCH_DOC,
)
@limit_search_rate
@reads_from_replica
def search_with_image(request, params: Form[SearchParams], image: File[UploadedFile] = None):
    return _answer(request, dict(params), request.POST, image=image)


def _answer(request, values: dict, raw, *, image) -> dict:
    refuse_blank(values, image)
    found = run_search(values, raw, image)
    results = found.results
    base = request.build_absolute_uri(request.path) + "?"
    return {
        "results": [_hit_json(request, hit) for hit in results.hits],
        "page": results.page,
        "page_size": results.page_size,
        "has_next": results.has_next,
        "next": base + found.next_query if found.next_query else None,
        "previous": base + found.previous_query if found.previous_query else None,
        "image_token": found.token or None,
        "mode": results.mode,
        # Sorted by date: how many results the date order covers (null by relevance).
        "sorted_among": results.sorted_among,
        "best_score": results.best_score,
        "confident": results.confident,
        "confidence_threshold": results.confidence_threshold,
        "duplicates": values.get("duplicates") or "collapse",
        "message": results.empty_reason
        or ("" if results.confident or not results.hits else "No confident match."),
    }


def _hit_json(request, hit: Hit) -> dict:
    image = hit.image
    return {
        "id": image.pk,
        # What orders the results in this mode: cosine similarity (semantic), reciprocal rank
        # fusion (hybrid) or ts_rank_cd (keyword); the ranks say where the hit came from.
        "score": round(hit.score, 6),
        "matched_by": hit.matched_by,
        "semantic_rank": hit.semantic_rank,
        "keyword_rank": hit.keyword_rank,
        "similarity": None if hit.similarity is None else round(hit.similarity, 4),
        "caption": image.caption,
        "tags": hit.tag_names,
        "taken_at": image.taken_at,
        "taken_on": image.taken_day,
        "uploaded_at": image.uploaded_at,
        "width": image.width,
        "height": image.height,
        "thumbnail_url": request.build_absolute_uri(image.thumbnail.url)
        if image.thumbnail
        else None,
        "original_url": request.build_absolute_uri(image.file.url),
        "detail_url": request.build_absolute_uri(reverse("image_detail", args=[image.pk])),
        # Near-duplicates folded into this hit (none with duplicates=show).
        "similar_ids": hit.similar_ids,
    }

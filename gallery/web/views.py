"""Thin views: parse the request, call one selector or service, render."""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST
from django.views.static import serve

from gallery.indexing import encoder, progress
from gallery.library import ingest, lifecycle, permissions, selectors, validation
from gallery.models import Image
from gallery.replicas import reads_from_replica
from gallery.search import query_vectors, selector
from gallery.search.query_syntax import SYNTAX_HELP
from gallery.search.request import SearchError
from gallery.web import health
from gallery.web.forms import (
    GalleryFilterForm,
    ImageEditForm,
    ImageSelectionForm,
    SearchForm,
    UploadForm,
)
from gallery.web.limits import limit_search_rate

GALLERY_PAGE_SIZE = 48


@reads_from_replica
def gallery(request):
    filters = GalleryFilterForm(request.GET)
    valid = filters.is_valid()  # invalid filters are left out and their errors shown
    images = selectors.browse_images(**filters.filters())
    page = Paginator(images, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    counts = progress.status_counts()
    query = filters.query()
    context = {
        "page": page,
        "filters": filters,
        "status": filters.filters().get("status", ""),
        "counts": counts,
        "all_statuses_query": filters.query(status=""),
        "status_links": [
            (value, label, counts.get(value, 0), filters.query(status=value))
            for value, label in Image.Status.choices
        ],
        "query_prefix": f"{query}&" if query else "",
        "return_query": filters.query(page=page.number),
        "changeable_ids": permissions.changeable_image_ids(request.user, page.object_list),
    }
    return render(request, "gallery/gallery.html", context, status=200 if valid else 400)


def _image_page(request, image: Image, *, edit_form=None, status: int = 200):
    can_change = permissions.can_change_image(request.user, image)
    context = {
        "image": image,
        "can_change": can_change,
        "edit_form": edit_form or (ImageEditForm.for_image(image) if can_change else None),
    }
    return render(request, "gallery/image_detail.html", context, status=status)


@reads_from_replica
def image_detail(request, pk: int):
    image = get_object_or_404(Image.objects.prefetch_related("tags"), pk=pk)
    return _image_page(request, image)


# Changing images: POST only, CSRF-checked. The services refuse (PermissionDenied, which
# Django answers with 403) whatever `request.user` may not change, before changing anything.


@login_required
@require_POST
def image_edit(request, pk: int):
    image = get_object_or_404(Image.objects.prefetch_related("tags"), pk=pk)
    form = ImageEditForm(request.POST)
    if not permissions.can_change_image(request.user, image):
        raise PermissionDenied("You may change only images you uploaded.")
    if not form.is_valid():
        return _image_page(request, image, edit_form=form, status=400)
    try:
        lifecycle.edit_image(
            image=image,
            caption=form.cleaned_data["caption"],
            tags=form.cleaned_data["tags"],
            by=request.user,
        )
    except lifecycle.LibraryError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Saved the caption and tags.")
    return redirect("image_detail", pk=pk)


@login_required
@require_POST
def image_delete(request, pk: int):
    image = get_object_or_404(Image, pk=pk)
    lifecycle.delete_images(images=[image], by=request.user)
    messages.success(request, f"Deleted {image}.")
    return redirect("gallery")


@login_required
@require_POST
def image_retry(request, pk: int):
    image = get_object_or_404(Image, pk=pk)
    if lifecycle.retry_failed_images(images=[image], by=request.user):
        messages.success(request, "Queued for indexing again.")
    else:
        messages.info(request, "This image has not failed: nothing to retry.")
    return redirect("image_detail", pk=pk)


def _gallery_url(query: str) -> str:
    """The gallery with the filters and page of `query` (only those: never another site)."""
    listing = GalleryFilterForm(QueryDict(query))
    listing.is_valid()
    query = listing.query(page=listing.cleaned_data.get("page"))
    return reverse("gallery") + (f"?{query}" if query else "")


@login_required
@require_POST
def gallery_selection(request):
    """Delete, or add tags to, the images checked in the gallery; then back to the same page."""
    form = ImageSelectionForm(request.POST)
    target = _gallery_url(request.POST.get("return_to", ""))
    if not form.is_valid():
        messages.error(request, form.error_text())
        return redirect(target)
    images, action = form.cleaned_data["images"], form.cleaned_data["action"]
    try:
        if action == "delete":
            count = lifecycle.delete_images(images=images, by=request.user)
            messages.success(request, f"Deleted {count} image{'s' if count != 1 else ''}.")
        else:
            tags = form.cleaned_data["tags"]
            count = lifecycle.tag_images(images=images, tags=tags, by=request.user)
            messages.success(
                request,
                f"Added {', '.join(tags)} to {count} image{'s' if count != 1 else ''}.",
            )
    except lifecycle.LibraryError as error:
        messages.error(request, str(error))
    return redirect(target)


def serve_media(request, path: str):
    """Originals and thumbnails, served by Django so `up` needs no other web server."""
    response = serve(request, path, document_root=settings.MEDIA_ROOT)
    # Files are named by their content hash: a name never points at other bytes. A private
    # library's files are for its members only: no shared cache (a proxy, a CDN) may keep
    # them and hand them to someone else.
    audience = "public" if settings.SITE_ACCESS == "public" else "private"
    response["Cache-Control"] = f"{audience}, max-age=31536000, immutable"
    return response


def healthz(request):
    report = health.check_services()
    return JsonResponse(report, status=200 if report["ok"] else 503)


def _wants_json(request) -> bool:
    return request.accepts("application/json") and not request.accepts("text/html")


@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    limits = {
        "max_bytes": settings.MAX_UPLOAD_BYTES,
        "max_size": validation.human_size(settings.MAX_UPLOAD_BYTES),
        "max_pixels": settings.MAX_IMAGE_PIXELS,
    }
    if request.method == "GET":
        return render(request, "gallery/upload.html", {"form": UploadForm(), **limits})
    form = UploadForm(
        request.POST,
        uploaded_files=request.FILES.getlist("files"),
        oversized=getattr(request, "oversized_uploads", []),
    )
    if not form.is_valid():
        if _wants_json(request):
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        return render(request, "gallery/upload.html", {"form": form, **limits}, status=400)
    results = ingest.ingest_uploads(
        files=form.uploaded_files,
        oversized_names=form.oversized,
        uploaded_by=request.user,
        tag_names=form.cleaned_data["tags"],
        caption=form.cleaned_data["caption"],
    )
    if _wants_json(request):
        return JsonResponse({"results": [_upload_result_json(result) for result in results]})
    context = {"form": UploadForm(), "results": results, **limits}
    return render(request, "gallery/upload.html", context)


def _upload_result_json(result: ingest.IngestResult) -> dict:
    data = {
        "filename": result.filename,
        "ok": result.ok,
        "error": result.error,
        "notes": result.notes,
        "created": result.created,
    }
    if result.image is not None:
        data["image"] = {
            "id": result.image.pk,
            "thumbnail_url": result.image.thumbnail.url if result.image.thumbnail else None,
            "status": result.image.status,
        }
    return data


# -- search ----------------------------------------------------------------------------------


def _query_image(form: SearchForm) -> tuple[object, str]:
    """The query image's vector and token: encoded once when uploaded, then recalled."""
    token = form.cleaned_data["image_token"]
    if form.cleaned_data["image"] is not None:
        vector = query_vectors.query_image_vector(form.cleaned_data["image"].read())
        return vector, query_vectors.remember_query_image(vector)
    if token:
        return query_vectors.recall_query_image(token), token
    return None, ""


def _search(form: SearchForm) -> tuple[selector.SearchResults, str]:
    """Run a valid form's search; returns the results and the query image's token, if any."""
    vector, token = _query_image(form)
    return selector.search_images(form.search_request(image_vector=vector)), token


def _pageable(form: SearchForm, token: str) -> bool:
    """Whether other pages can repeat this search: not when a query image could not be kept
    (Redis unavailable), since a page without it would search for something else."""
    return bool(token) or form.cleaned_data.get("image") is None


# Not carried by links as sent: the marks are rewritten as one comma-separated list each.
UNCARRIED = {"page", "image", "image_token", "csrfmiddlewaretoken", "more", "less"}


def _search_params(form: SearchForm, token: str, *, marks: bool = True) -> dict:
    """The search's parameters as links carry them, without a page: the filters, the query
    image's token and (unless `marks` is false) the relevance feedback marks."""
    params = {name: value for name, value in form.data.items() if name not in UNCARRIED and value}
    for name in ("more", "less") if marks else ():
        if form.cleaned_data.get(name):
            params[name] = ",".join(str(pk) for pk in form.cleaned_data[name])
    if token:
        params["image_token"] = token
    return params


def _paging_query(form: SearchForm, token: str, page: int) -> str:
    return urlencode({**_search_params(form, token), "page": page})


def _feedback_context(form: SearchForm, token: str, results) -> dict:
    """What the results' "Refine" form needs: the search to repeat, the marks, and the marks
    on images this page does not show (kept as hidden fields, so marks accumulate)."""
    more, less = form.cleaned_data.get("more") or [], form.cleaned_data.get("less") or []
    shown = {hit.image.pk for hit in results.hits} | {form.cleaned_data.get("like")}
    unmarked = _search_params(form, token, marks=False)
    return {
        "feedback": True,
        "feedback_like": form.cleaned_data.get("like"),
        "feedback_fields": list(unmarked.items()),
        "marked_more": set(more),
        "marked_less": set(less),
        "hidden_more": [pk for pk in more if pk not in shown],
        "hidden_less": [pk for pk in less if pk not in shown],
        "unmarked_query": urlencode(unmarked) if more or less else "",
    }


def _duplicates_context(form: SearchForm, token: str, results, *, pageable: bool) -> dict:
    """How many near-duplicates this page folded, and the link that shows or folds them."""
    shown = form.cleaned_data["duplicates"] == "show"
    params = {**_search_params(form, token), "page": results.page}
    if shown:
        params.pop("duplicates", None)
    else:
        params["duplicates"] = "show"
    return {
        "duplicates_folded": sum(len(hit.similar) for hit in results.hits),
        "duplicates_shown": shown,
        "duplicates_toggle_query": urlencode(params) if pageable else "",
    }


# Read-only: a POST only encodes a query image and redirects. Without a token in the form,
# search addresses stay clean and shareable.
@csrf_exempt
@require_http_methods(["GET", "POST"])
@limit_search_rate
@reads_from_replica  # inside the limit: a retry on the primary is not counted twice
def search_page(request):
    form = SearchForm(
        request.POST if request.method == "POST" else request.GET or None, request.FILES or None
    )
    context = {"form": form, "syntax_help": SYNTAX_HELP}
    if not form.is_bound:
        return render(request, "gallery/search.html", context)
    if not form.is_valid():
        return render(request, "gallery/search.html", context, status=400)
    if form.is_blank():
        form.add_error("q", "Type something to search for, or give a query image.")
        return render(request, "gallery/search.html", context, status=400)
    try:
        if request.method == "POST":
            # Only encode the posted image; the GET after the redirect searches (once).
            # Paging and sharing use GET; the uploaded image is remembered by its token.
            vector, token = _query_image(form)
            if token:
                page = form.cleaned_data["page"] or 1
                return redirect(reverse("search") + "?" + _paging_query(form, token, page))
            # Redis could not keep the image for paging: answer this page at once.
            results = selector.search_images(form.search_request(image_vector=vector))
        else:
            results, token = _search(form)
    except SearchError as error:
        form.add_error(error.parameter if error.parameter in form.fields else None, str(error))
        return render(request, "gallery/search.html", context, status=400)
    except encoder.ModelWeightsUnavailable as error:
        # A set-up problem, not the user's: say what the administrator has to do.
        form.add_error(None, f"Search is unavailable: {error}")
        return render(request, "gallery/search.html", context, status=503)
    pageable = _pageable(form, token)
    context.update(
        results=results,
        previous_query=_paging_query(form, token, results.page - 1)
        if pageable and results.page > 1
        else "",
        next_query=_paging_query(form, token, results.page + 1)
        if pageable and results.has_next
        else "",
        query_image_token=token,
        query_image_unkept=not pageable,
    )
    if pageable:
        context.update(_feedback_context(form, token, results))
    context.update(_duplicates_context(form, token, results, pageable=pageable))
    return render(request, "gallery/search.html", context)


def _api_error(parameter: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"parameter": parameter, "message": message}}, status=400)


@csrf_exempt  # a read-only query endpoint, used by scripts without a session
@require_http_methods(["GET", "POST"])
def api_search(request):
    """The first search API, kept as it was; /api/v1/search answers the same way."""
    return search_json_response(request, url_name="api_search")


@limit_search_rate  # here, so both /api/search and /api/v1/search are counted
@reads_from_replica
def search_json_response(request, *, url_name: str) -> JsonResponse:
    """The JSON answer to a search sent as query parameters (GET) or form fields and an
    image file (POST); links to other pages point at the URL named `url_name`."""
    form = SearchForm(request.GET if request.method == "GET" else request.POST, request.FILES)
    if not form.is_valid():
        return _api_error(*form.first_error())
    if form.is_blank():
        return _api_error("q", "Give q (text), like (an image id) or an image file.")
    try:
        results, token = _search(form)
    except SearchError as error:
        return _api_error(error.parameter, str(error))
    except encoder.ModelWeightsUnavailable as error:
        return JsonResponse({"error": {"parameter": None, "message": str(error)}}, status=503)
    base = request.build_absolute_uri(reverse(url_name)) + "?"
    return JsonResponse(
        {
            "results": [_hit_json(request, hit) for hit in results.hits],
            "page": results.page,
            "page_size": results.page_size,
            "has_next": results.has_next,
            "next": base + _paging_query(form, token, results.page + 1)
            if results.has_next and _pageable(form, token)
            else None,
            "previous": base + _paging_query(form, token, results.page - 1)
            if results.page > 1 and _pageable(form, token)
            else None,
            "image_token": token or None,
            "mode": results.mode,
            # Sorted by date: how many results the date order covers (null by relevance).
            "sorted_among": results.sorted_among,
            "best_score": results.best_score,
            "confident": results.confident,
            "confidence_threshold": results.confidence_threshold,
            "duplicates": form.cleaned_data["duplicates"] or "collapse",
            "message": results.empty_reason
            or ("" if results.confident or not results.hits else "No confident match."),
        }
    )


def _hit_json(request, hit: selector.Hit) -> dict:
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
        "taken_at": image.taken_at.isoformat(),
        "taken_on": image.taken_day.isoformat(),
        "uploaded_at": image.uploaded_at.isoformat(),
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

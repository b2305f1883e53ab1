"""The pages (HTML only; the JSON API is gallery/web/api/): parse the request, call one
selector or service, render."""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST
from django.views.static import serve

from gallery.errors import InvalidInput, NotAllowed, Unavailable
from gallery.indexing import progress
from gallery.library import lifecycle, permissions, selectors, validation
from gallery.models import Image
from gallery.replicas import reads_from_replica
from gallery.search.query_syntax import SYNTAX_HELP
from gallery.web import searching
from gallery.web.api.images import upload_json
from gallery.web.forms import (
    GalleryFilterForm,
    ImageEditForm,
    ImageSelectionForm,
    SearchForm,
    UploadForm,
)
from gallery.web.limits import limit_search_rate
from gallery.web.responses import wants_json


@reads_from_replica
def gallery(request):
    filters = GalleryFilterForm(request.GET)
    valid = filters.is_valid()  # invalid filters are left out and their errors shown
    images = selectors.browse_images(**filters.filters())
    page = Paginator(images, selectors.GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
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


# Changing images: POST only, CSRF-checked. The services refuse (NotAllowed, answered 403)
# whatever `request.user` may not change, before changing anything.


@login_required
@require_POST
def image_edit(request, pk: int):
    image = get_object_or_404(Image.objects.prefetch_related("tags"), pk=pk)
    form = ImageEditForm(request.POST)
    if not permissions.can_change_image(request.user, image):
        raise NotAllowed("You may change only images you uploaded.")
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
    form = UploadForm.posted(request)
    if not form.is_valid():
        if wants_json(request):
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        return render(request, "gallery/upload.html", {"form": form, **limits}, status=400)
    results = form.ingest(uploaded_by=request.user)
    if wants_json(request):  # the upload page's script, and scripts: the API's answer
        return JsonResponse(upload_json(request, results))
    context = {"form": UploadForm(), "results": results, **limits}
    return render(request, "gallery/upload.html", context)


# -- search ----------------------------------------------------------------------------------


def _feedback_context(found: searching.Search) -> dict:
    """What the results' "Refine" form needs: the search to repeat, the marks, and the marks
    on images this page does not show (kept as hidden fields, so marks accumulate)."""
    values = found.values
    more, less = values.get("more") or [], values.get("less") or []
    shown = {hit.image.pk for hit in found.results.hits} | {values.get("like")}
    unmarked = found.link_params(marks=False)
    return {
        "feedback": True,
        "feedback_like": values.get("like"),
        "feedback_fields": list(unmarked.items()),
        "marked_more": set(more),
        "marked_less": set(less),
        "hidden_more": [pk for pk in more if pk not in shown],
        "hidden_less": [pk for pk in less if pk not in shown],
        "unmarked_query": urlencode(unmarked) if more or less else "",
    }


def _duplicates_context(found: searching.Search) -> dict:
    """How many near-duplicates this page folded, and the link that shows or folds them."""
    shown = found.values["duplicates"] == "show"
    params = found.link_params(page=found.results.page)
    if shown:
        params.pop("duplicates", None)
    else:
        params["duplicates"] = "show"
    return {
        "duplicates_folded": sum(len(hit.similar) for hit in found.results.hits),
        "duplicates_shown": shown,
        "duplicates_toggle_query": urlencode(params) if found.pageable else "",
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
    values, image_file = form.cleaned_data, form.cleaned_data["image"]
    if searching.is_blank(values, image_file):
        form.add_error("q", "Type something to search for, or give a query image.")
        return render(request, "gallery/search.html", context, status=400)
    try:
        if request.method == "POST":
            # Only encode the posted image; the GET after the redirect searches (once).
            # Paging and sharing use GET; the uploaded image is remembered by its token.
            vector, token = searching.encode_query_image(values, image_file)
            if token:
                params = searching.link_params(form.data, values, token, page=values["page"] or 1)
                return redirect(reverse("search") + "?" + urlencode(params))
            # Redis could not keep the image for paging: answer this page at once.
            found = searching.run_search(values, form.data, image_file, query_image=(vector, ""))
        else:
            found = searching.run_search(values, form.data)
    except InvalidInput as error:
        form.add_error(error.parameter if error.parameter in form.fields else None, str(error))
        return render(request, "gallery/search.html", context, status=400)
    except Unavailable as error:
        # A set-up problem, not the user's: say what the administrator has to do.
        form.add_error(None, f"Search is unavailable: {error}")
        response = render(request, "gallery/search.html", context, status=503)
        for name, value in error.headers.items():  # Retry-After
            response[name] = value
        return response
    context.update(
        results=found.results,
        previous_query=found.previous_query,
        next_query=found.next_query,
        query_image_token=found.token,
        query_image_unkept=not found.pageable,
    )
    if found.pageable:
        context.update(_feedback_context(found))
    context.update(_duplicates_context(found))
    return render(request, "gallery/search.html", context)

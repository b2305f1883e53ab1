"""Thin views: parse the request, call one selector or service, render."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from gallery import health, ingest
from gallery.forms import UploadForm
from gallery.models import Image

GALLERY_PAGE_SIZE = 48


def gallery(request):
    images = Image.objects.prefetch_related("tags")
    page = Paginator(images, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "gallery/gallery.html", {"page": page})


def healthz(request):
    report = health.check_services()
    return JsonResponse(report, status=200 if report["ok"] else 503)


def _wants_json(request) -> bool:
    return request.accepts("application/json") and not request.accepts("text/html")


@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    limits = {"max_bytes": settings.MAX_UPLOAD_BYTES, "max_pixels": settings.MAX_IMAGE_PIXELS}
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
        return JsonResponse({"results": [_result_json(result) for result in results]})
    context = {"form": UploadForm(), "results": results, **limits}
    return render(request, "gallery/upload.html", context)


def _result_json(result: ingest.IngestResult) -> dict:
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

"""Thin views: parse the request, call one selector or service, render."""

from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import render

from gallery import health
from gallery.models import Image

GALLERY_PAGE_SIZE = 48


def gallery(request):
    images = Image.objects.prefetch_related("tags")
    page = Paginator(images, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "gallery/gallery.html", {"page": page})


def healthz(request):
    report = health.check_services()
    return JsonResponse(report, status=200 if report["ok"] else 503)

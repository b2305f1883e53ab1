"""/api/v1/images: upload, read, edit, delete and list images. Thin: the forms, services and
selectors the pages use do the work, so both answer alike."""

from typing import Annotated

from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import File, Form, Query, Router, Status, UploadedFile
from pydantic import Field

from gallery.errors import InvalidInput
from gallery.library import ingest, lifecycle, permissions, selectors
from gallery.library.lifecycle import MAX_CAPTION_LENGTH
from gallery.library.tags import MAX_TAG_FIELD_LENGTH
from gallery.models import Image
from gallery.replicas import reads_from_replica
from gallery.web.api.schemas import (
    PRINTABLE,
    ErrorOut,
    ImageChange,
    ImageFilters,
    ImageOut,
    ImagePage,
    UploadOut,
)
from gallery.web.forms import UploadForm

router = Router()


def _absolute(request, url: str) -> str:
    return request.build_absolute_uri(url)


def image_json(request, image: Image) -> dict:
    api_url = reverse("api_v1:image", args=[image.pk])
    return {
        "id": image.pk,
        "caption": image.caption,
        "tags": [tag.name for tag in image.tags.all()],
        "status": image.status,
        "status_error": image.status_error,
        "original_filename": image.original_filename,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "byte_size": image.byte_size,
        "taken_at": image.taken_at,
        "taken_on": image.taken_day,
        "uploaded_at": image.uploaded_at,
        "indexed_at": image.indexed_at,
        "ocr_text": image.ocr_text,
        "uploaded_by": image.uploaded_by.get_username() if image.uploaded_by else None,
        "can_change": permissions.can_change_image(request.user, image),
        "urls": {
            "original": _absolute(request, image.file.url),
            "thumbnail": _absolute(request, image.thumbnail.url) if image.thumbnail else None,
            "page": _absolute(request, reverse("image_detail", args=[image.pk])),
            "api": _absolute(request, api_url),
            "more_like_this": _absolute(request, reverse("api_v1:search") + f"?like={image.pk}"),
        },
    }


def upload_json(request, results: list[ingest.IngestResult]) -> dict:
    """An upload's answer (UploadOut): the API's and the upload page's for scripts."""
    return {
        "results": [_upload_result_json(request, result) for result in results],
        "image_ids": [result.image.pk for result in results if result.ok],
        "created_ids": [result.image.pk for result in results if result.created],
    }


def _upload_result_json(request, result: ingest.IngestResult) -> dict:
    image = result.image
    return {
        "filename": result.filename,
        "ok": result.ok,
        "created": result.created,
        "error": result.error,
        "notes": result.notes,
        "image": {
            "id": image.pk,
            "status": image.status,
            "thumbnail_url": _absolute(request, image.thumbnail.url) if image.thumbnail else None,
            "api_url": _absolute(request, reverse("api_v1:image", args=[image.pk])),
        }
        if image is not None
        else None,
    }


def _image(pk: int) -> Image:
    return get_object_or_404(
        Image.objects.select_related("uploaded_by").prefetch_related("tags"), pk=pk
    )


# The upload's form as the document states it: `files` is required. The code takes it as
# optional, since a file over MAX_UPLOAD_BYTES is skipped while it arrives (gallery/web/
# uploads.py) and must still be answered by name, as refused.
UPLOAD_FORM = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}},
        "tags": {"type": "string", "maxLength": MAX_TAG_FIELD_LENGTH, "pattern": PRINTABLE},
        "caption": {"type": "string", "maxLength": MAX_CAPTION_LENGTH, "pattern": PRINTABLE},
    },
}
FormText = Annotated[
    str, Field("", max_length=max(MAX_TAG_FIELD_LENGTH, MAX_CAPTION_LENGTH), pattern=PRINTABLE)
]


@router.post(
    "/images",
    response={200: UploadOut, 201: UploadOut, 400: ErrorOut, 401: ErrorOut},
    url_name="images",
    summary="Upload images",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": UPLOAD_FORM}},
        }
    },
)
def upload_images(
    request,
    files: File[list[UploadedFile]] = None,
    tags: Form[FormText] = "",
    caption: Form[FormText] = "",
):
    """Upload one or more images (multipart `files`, repeated), with comma-separated `tags`
    and a `caption` for every file, exactly as the upload page does: the same checks and
    limits (MAX_UPLOAD_BYTES, MAX_IMAGE_PIXELS), each file's own result (a refused file
    says why and leaves nothing behind), the same content stored once (its tags merged).
    New images are queued for indexing. 201 when something new was stored, else 200."""
    form = UploadForm.posted(request)
    if not form.is_valid():
        name, message = form.first_error()
        raise InvalidInput(message, "files" if name == "__all__" else name)
    body = upload_json(request, form.ingest(uploaded_by=request.auth))
    return Status(201 if body["created_ids"] else 200, body)


@router.get(
    "/images",
    response={200: ImagePage, 400: ErrorOut, 401: ErrorOut},
    auth=None,
    url_name="images",
    summary="List images",
)
@reads_from_replica
def list_images(request, filters: Query[ImageFilters]):
    """The gallery's listing, newest first, with its filters: indexing `status`, one `tag`
    and the days taken (`after`, `before`, inclusive)."""
    images = selectors.browse_images(
        status=filters.status or "",
        tag=" ".join(filters.tag.split()),
        after=filters.after,
        before=filters.before,
    ).select_related("uploaded_by")
    start = (filters.page - 1) * filters.page_size
    rows = list(images[start : start + filters.page_size + 1])
    has_next = len(rows) > filters.page_size
    base = _absolute(request, reverse("api_v1:images")) + "?"
    return {
        "results": [image_json(request, image) for image in rows[: filters.page_size]],
        "count": images.count(),
        "page": filters.page,
        "page_size": filters.page_size,
        "has_next": has_next,
        "next": base + _list_query(request, filters.page + 1) if has_next else None,
        "previous": base + _list_query(request, filters.page - 1) if filters.page > 1 else None,
    }


def _list_query(request, page: int) -> str:
    query = request.GET.copy()
    query["page"] = str(page)
    return query.urlencode()


@router.get(
    "/images/{int:image_id}",
    response={200: ImageOut, 401: ErrorOut, 404: ErrorOut},
    auth=None,
    url_name="image",
    summary="Get an image",
)
@reads_from_replica
def get_image(request, image_id: int):
    """An image's metadata, tags, indexing status and addresses."""
    return image_json(request, _image(image_id))


@router.patch(
    "/images/{int:image_id}",
    response={200: ImageOut, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Edit an image's caption and tags",
)
def edit_image(request, image_id: int, change: ImageChange):
    """Set the caption and/or replace the tags (JSON body); a field left out is kept.
    Uploaders change their own images, staff any."""
    image = _image(image_id)
    lifecycle.edit_image(
        image=image,
        caption=image.caption if change.caption is None else change.caption,
        tags=[tag.name for tag in image.tags.all()] if change.tags is None else change.tags,
        by=request.auth,
    )
    return image_json(request, _image(image_id))


@router.delete(
    "/images/{int:image_id}",
    response={204: None, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Delete an image",
)
def delete_image(request, image_id: int):
    """Delete the image with its vectors; its files are removed after the delete commits.
    Uploaders delete their own images, staff any."""
    lifecycle.delete_images(images=[_image(image_id)], by=request.auth)
    return Status(204, None)

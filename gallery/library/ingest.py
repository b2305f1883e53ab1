"""Getting images into the library: validate, de-duplicate, store by content hash with a
thumbnail and a preview (see gallery/previews.py).

Every write path (web upload, folder import, evaluation datasets) goes through `ingest_image`.
A rejected file leaves no row and no file behind; identical content is stored once.
"""

import hashlib
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from gallery import previews
from gallery.indexing import queueing
from gallery.library import perceptual_hash
from gallery.library.tags import tags_named
from gallery.library.validation import (
    ACCEPTED_FORMATS,
    IMAGE_FILE_EXTENSIONS,
    RejectedImage,
    check_upload_size,
    size_message,
    validate_image,
)
from gallery.models import Image
from gallery.storage import StorageFull, remove, write_once

logger = logging.getLogger(__name__)


@dataclass
class IngestResult:
    filename: str
    image: Image | None = None
    created: bool = False
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.image is not None


def ingest_image(
    *,
    data: bytes,
    filename: str,
    uploaded_by=None,
    tag_names: list[str] | tuple[str, ...] = (),
    caption: str = "",
    enqueue: bool = True,
) -> IngestResult:
    """Add one image (or merge tags into the identical image already stored)."""
    result = IngestResult(filename=filename)
    try:
        check_upload_size(len(data))
        sha256 = hashlib.sha256(data).hexdigest()
        existing = Image.objects.filter(sha256=sha256).first()
        if existing is None:
            validated = validate_image(data, filename, result.notes, with_preview=True)
            existing = _store_new_image(
                data=data,
                sha256=sha256,
                validated=validated,
                filename=filename,
                uploaded_by=uploaded_by,
                tag_names=tag_names,
                caption=caption,
                enqueue=enqueue,
                result=result,
            )
        if not result.created:
            _merge_into_existing(existing, tag_names, caption)
            result.notes.append("Already in the library: tags merged into the existing image.")
        result.image = existing
    except (RejectedImage, StorageFull) as refusal:
        result.error = refusal.message
    return result


def _store_new_image(
    *, data, sha256, validated, filename, uploaded_by, tag_names, caption, enqueue, result
) -> Image:
    extension = ACCEPTED_FORMATS[validated.format]
    now = timezone.now()
    original_name = f"originals/{sha256[:2]}/{sha256}.{extension}"
    thumbnail_name = f"thumbnails/{sha256[:2]}/{sha256}.webp"
    preview_name = None
    written = []  # the files this call created, removed again if no row comes of them
    try:
        written.append(write_once(original_name, data))
        written.append(write_once(thumbnail_name, validated.thumbnail))
        if validated.preview is not None:
            preview_name = previews.preview_name(sha256, settings.PREVIEW_SIZE)
            written.append(write_once(preview_name, validated.preview))
        with transaction.atomic():
            image = Image.objects.create(
                file=original_name,
                thumbnail=thumbnail_name,
                preview=preview_name,
                sha256=sha256,
                original_filename=filename[:255],
                width=validated.width,
                height=validated.height,
                format=validated.format,
                byte_size=len(data),
                caption=caption,
                uploaded_by=uploaded_by,
                taken_at=validated.taken_at or now,
                taken_on=validated.taken_on or timezone.localtime(now).date(),
                phash=perceptual_hash.hash_of_thumbnail(validated.thumbnail),
            )
            image.tags.set(tags_named(tag_names))
            if enqueue:
                queueing.enqueue_encoding([image.pk])
        result.created = True
        return image
    except IntegrityError:
        # The same content was stored concurrently: use that row (it shares our files).
        existing = Image.objects.filter(sha256=sha256).first()
        if existing is None:
            remove(written)
            raise
        return existing
    except BaseException:
        remove(written)
        raise


def _merge_into_existing(image: Image, tag_names, caption: str) -> None:
    image.tags.add(*tags_named(tag_names))
    if caption and not image.caption:
        image.caption = caption
        image.save(update_fields=["caption"])


def ingest_uploaded_file(uploaded, **options) -> IngestResult:
    """`ingest_image` for a Django UploadedFile: refuses an oversized file before reading it."""
    if uploaded.size > settings.MAX_UPLOAD_BYTES:
        return IngestResult(filename=uploaded.name, error=size_message(uploaded.size))
    return ingest_image(data=uploaded.read(), filename=uploaded.name, **options)


def oversized_result(filename: str) -> IngestResult:
    return IngestResult(filename=filename, error=size_message(None))


def ingest_uploads(*, files, oversized_names=(), **options) -> list[IngestResult]:
    """One result per submitted file, in order; a rejected file never stops the others."""
    results = [oversized_result(name) for name in oversized_names]
    results += [ingest_uploaded_file(uploaded, **options) for uploaded in files]
    return results


def find_image_files(root, *, recursive: bool = False) -> list:
    """Image-looking files under `root` (by extension), sorted; hidden files skipped."""
    from pathlib import Path

    root = Path(root)
    if root.is_file():
        return [root]
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        path
        for path in candidates
        if path.is_file()
        and path.suffix.lower() in IMAGE_FILE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def import_files(paths, *, tag_names=(), caption: str = "", enqueue: bool = True):
    """Ingest files from disk, yielding each result; new images are queued in full batches."""
    waiting: list[int] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as error:
            yield IngestResult(filename=str(path), error=f"Could not read the file: {error}")
            continue
        result = ingest_image(
            data=data, filename=path.name, tag_names=tag_names, caption=caption, enqueue=False
        )
        result.filename = str(path)
        if result.created and enqueue:
            waiting.append(result.image.pk)
            if len(waiting) >= settings.ENCODE_BATCH_SIZE:
                queueing.enqueue_now(waiting)
                waiting = []
        yield result
    if waiting:
        queueing.enqueue_now(waiting)

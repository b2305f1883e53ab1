"""Getting images into the library: validate, de-duplicate, store by content hash, thumbnail.

Every write path (web upload, folder import, evaluation datasets) goes through `ingest_image`.
A rejected file leaves no row and no file behind; identical content is stored once.
"""

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from gallery import indexing
from gallery.models import Image, Tag

logger = logging.getLogger(__name__)

# Pillow format name -> stored file extension.
ACCEPTED_FORMATS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
}
IMAGE_FILE_EXTENSIONS = {
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".svg",
    ".heic",
}
EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 36867
EXIF_OFFSET_TIME_ORIGINAL = 36881
MAX_TAG_LENGTH = Tag._meta.get_field("name").max_length


class RejectedImage(Exception):
    """A file that cannot become an image; the message is shown to the user as is."""


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


@dataclass
class ValidatedImage:
    format: str
    width: int
    height: int
    taken_at: datetime | None
    thumbnail: bytes


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
            validated = validate_image(data, filename, result.notes)
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
    except RejectedImage as rejection:
        result.error = str(rejection)
    return result


def check_upload_size(size: int) -> None:
    if size == 0:
        raise RejectedImage("The file is empty (0 bytes).")
    if size > settings.MAX_UPLOAD_BYTES:
        raise RejectedImage(_size_message(size))


def _size_message(size: int | None) -> str:
    limit = f"the limit is {settings.MAX_UPLOAD_BYTES / 1e6:g} MB"
    if size is None:
        return f"The file is too large: {limit}."
    return f"The file is too large ({size / 1e6:.1f} MB); {limit}."


def validate_image(data: bytes, filename: str, notes: list[str]) -> ValidatedImage:
    """Decode the whole image once: proves it is complete and gives size, date and thumbnail."""
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        raise RejectedImage(
            "SVG is a vector drawing format and is not supported; export it as PNG or JPEG."
        )
    try:
        # The pixel limit is checked below with a clearer message than Pillow's warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as probe:
                image_format = probe.format or ""
                width, height = probe.size
    except UnidentifiedImageError:
        raise RejectedImage(
            "This is not an image file (its content is not a recognised image format)."
        ) from None
    except PILImage.DecompressionBombError:
        raise _too_many_pixels(None, None) from None
    except OSError as error:
        raise RejectedImage(f"The image is corrupt: {error}.") from None
    if image_format not in ACCEPTED_FORMATS:
        raise RejectedImage(
            f"{image_format or 'This'} images are not supported; accepted formats are JPEG, "
            "PNG, WebP, GIF, BMP and TIFF."
        )
    if width * height > settings.MAX_IMAGE_PIXELS:
        raise _too_many_pixels(width, height)
    claimed = EXTENSION_FORMATS.get(_extension(filename))
    if claimed and claimed != image_format and {claimed, image_format} != {"JPEG", "MPO"}:
        notes.append(
            f"The file name says {claimed} but the content is {image_format}; "
            f"stored as {image_format}."
        )
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            # Reduced-scale JPEG decoding still reads the whole stream, so truncation is caught.
            image.draft("RGB", (settings.THUMBNAIL_SIZE, settings.THUMBNAIL_SIZE))
            image.load()
            taken_at = _exif_taken_at(image)
            upright = ImageOps.exif_transpose(image)
            if upright.size != image.size:
                width, height = height, width  # rotated by EXIF orientation
            thumbnail = _thumbnail(upright)
    except PILImage.DecompressionBombError:
        raise _too_many_pixels(width, height) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise RejectedImage(
            f"The image is corrupt or truncated and cannot be decoded ({error})."
        ) from None
    return ValidatedImage(image_format, width, height, taken_at, thumbnail)


def _too_many_pixels(width, height) -> RejectedImage:
    size = f"{width} x {height} = {width * height / 1e6:.0f} megapixels" if width else "too many"
    return RejectedImage(
        f"The image has too many pixels ({size}); the limit is "
        f"{settings.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels."
    )


def _extension(filename: str) -> str:
    dot = filename.rfind(".")
    return filename[dot:].lower() if dot >= 0 else ""


def _thumbnail(image: PILImage.Image) -> bytes:
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert(
            "RGBA" if "transparency" in image.info or "A" in image.mode else "RGB"
        )
    image = image.copy()
    image.thumbnail((settings.THUMBNAIL_SIZE, settings.THUMBNAIL_SIZE), PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=80, method=4)
    return buffer.getvalue()


def _exif_taken_at(image: PILImage.Image) -> datetime | None:
    try:
        exif = image.getexif().get_ifd(EXIF_IFD)
        raw = exif.get(EXIF_DATETIME_ORIGINAL)
        if not raw:
            return None
        taken = datetime.strptime(str(raw).strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
        offset = exif.get(EXIF_OFFSET_TIME_ORIGINAL)
        if offset:
            return datetime.fromisoformat(taken.isoformat() + str(offset).strip("\x00 "))
        return timezone.make_aware(taken)
    except (ValueError, TypeError, KeyError, OverflowError):
        return None  # an unreadable date is not a reason to refuse the image


def _store_new_image(
    *, data, sha256, validated, filename, uploaded_by, tag_names, caption, enqueue, result
) -> Image:
    extension = ACCEPTED_FORMATS[validated.format]
    original_name = f"originals/{sha256[:2]}/{sha256}.{extension}"
    thumbnail_name = f"thumbnails/{sha256[:2]}/{sha256}.webp"
    written = [
        _write_once(original_name, data),
        _write_once(thumbnail_name, validated.thumbnail),
    ]
    try:
        with transaction.atomic():
            image = Image.objects.create(
                file=original_name,
                thumbnail=thumbnail_name,
                sha256=sha256,
                original_filename=filename[:255],
                width=validated.width,
                height=validated.height,
                format=validated.format,
                byte_size=len(data),
                caption=caption,
                uploaded_by=uploaded_by,
                taken_at=validated.taken_at or timezone.now(),
            )
            image.tags.set(tags_named(tag_names))
            if enqueue:
                indexing.enqueue_encoding([image.pk])
        result.created = True
        return image
    except IntegrityError:
        # The same content was stored concurrently: use that row (it shares our files).
        existing = Image.objects.filter(sha256=sha256).first()
        if existing is None:
            _remove(written)
            raise
        return existing
    except BaseException:
        _remove(written)
        raise


def _write_once(name: str, content: bytes) -> str | None:
    """Write a content-addressed file; returns its name if this call created it."""
    if default_storage.exists(name):
        return None
    saved = default_storage.save(name, ContentFile(content))
    return saved


def _remove(names) -> None:
    for name in names:
        if name:
            default_storage.delete(name)


def _merge_into_existing(image: Image, tag_names, caption: str) -> None:
    image.tags.add(*tags_named(tag_names))
    if caption and not image.caption:
        image.caption = caption
        image.save(update_fields=["caption"])


def parse_tag_names(text: str) -> list[str]:
    """Split a comma-separated tag field; whitespace trimmed, duplicates dropped."""
    seen, names = set(), []
    for part in text.split(","):
        name = " ".join(part.split())
        if name and name.lower() not in seen:
            if len(name) > MAX_TAG_LENGTH:
                raise RejectedImage(f"The tag {name[:20]!r}... is longer than {MAX_TAG_LENGTH}.")
            seen.add(name.lower())
            names.append(name)
    return names


def tags_named(names) -> list[Tag]:
    """The Tag rows for these names (case-insensitive), creating missing ones."""
    tags = []
    for name in names:
        tag = Tag.objects.filter(name__iexact=name).first()
        if tag is None:
            try:
                with transaction.atomic():
                    tag = Tag.objects.create(name=name)
            except IntegrityError:
                tag = Tag.objects.get(name__iexact=name)
        tags.append(tag)
    return tags


def ingest_uploaded_file(uploaded, **options) -> IngestResult:
    """`ingest_image` for a Django UploadedFile: refuses an oversized file before reading it."""
    if uploaded.size > settings.MAX_UPLOAD_BYTES:
        return IngestResult(filename=uploaded.name, error=_size_message(uploaded.size))
    return ingest_image(data=uploaded.read(), filename=uploaded.name, **options)


def oversized_result(filename: str) -> IngestResult:
    return IngestResult(filename=filename, error=_size_message(None))


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
                indexing.enqueue_now(waiting)
                waiting = []
        yield result
    if waiting:
        indexing.enqueue_now(waiting)

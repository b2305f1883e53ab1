"""Deciding whether bytes are an image we accept: format, size, pixels, EXIF date, thumbnail
and, for the library, the preview workers encode (made from the same decoded pixels).

Used by every write path (uploads, folder import) and by query images in search.
"""

import io
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from gallery import pixels, previews
from gallery.errors import InvalidInput

# Pillow format name -> stored file extension.
ACCEPTED_FORMATS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
    "HEIF": "heic",  # HEIC (HEVC in HEIF), as phones write it; pillow-heif opens it
    "AVIF": "avif",
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
    ".heif",
    ".hif",
    ".avif",
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
    ".heic": "HEIF",
    ".heif": "HEIF",
    ".hif": "HEIF",
    ".avif": "AVIF",
}
EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 36867
EXIF_OFFSET_TIME_ORIGINAL = 36881


class RejectedImage(InvalidInput):
    """A file that cannot become an image; the message is shown to the user as is."""


@dataclass
class ValidatedImage:
    format: str
    width: int
    height: int
    taken_at: datetime | None
    thumbnail: bytes
    # JPEG with shortest side PREVIEW_SIZE; None when the original is not larger than that.
    preview: bytes | None = None

    @property
    def taken_on(self):
        """The day the camera wrote (its local date), or None without an EXIF date."""
        return self.taken_at.date() if self.taken_at else None


def check_upload_size(size: int) -> None:
    if size == 0:
        raise RejectedImage("The file is empty (0 bytes).")
    if size > settings.MAX_UPLOAD_BYTES:
        raise RejectedImage(size_message(size))


def human_size(size: int) -> str:
    """Bytes for people, in binary units as everywhere in the product: 25 MiB, 26.3 MiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{round(size / scale, 1):g} {unit}"
    return f"{size} bytes"


def size_message(size: int | None) -> str:
    limit = f"the limit is {human_size(settings.MAX_UPLOAD_BYTES)}"
    if size is None:
        return f"The file is too large: {limit}."
    return f"The file is too large ({human_size(size)}); {limit}."


def validate_image(
    data: bytes,
    filename: str,
    notes: list[str],
    *,
    with_preview: bool = False,
    max_pixels: int | None = None,
) -> ValidatedImage:
    """Decode the whole image once: proves it is complete and gives size, date, thumbnail and
    (`with_preview`) the preview, so nothing decodes it again at ingest.

    More than `max_pixels` (default MAX_IMAGE_PIXELS) is refused from the header, before
    anything is decoded."""
    max_pixels = max_pixels or settings.MAX_IMAGE_PIXELS
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        raise RejectedImage(
            "SVG is a vector drawing format and is not supported; export it as PNG or JPEG."
        )
    image_format, width, height = _header(data, max_pixels)
    if image_format not in ACCEPTED_FORMATS:
        raise RejectedImage(
            f"{image_format or 'This'} images are not supported; accepted formats are JPEG, "
            "PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF and AVIF."
        )
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    claimed = EXTENSION_FORMATS.get(_extension(filename))
    if claimed and claimed != image_format and {claimed, image_format} != {"JPEG", "MPO"}:
        notes.append(
            f"The file name says {claimed} but the content is {image_format}; "
            f"stored as {image_format}."
        )
    preview_side = settings.PREVIEW_SIZE
    with_preview = with_preview and previews.wants_preview(width, height, preview_side)
    # Both sides at least this large after draft decoding, so the preview's shortest side is.
    decoded_side = max(settings.THUMBNAIL_SIZE, preview_side if with_preview else 0)
    try:
        with pixels.decoded_upright(data, decoded_side) as (image, upright):
            taken_at = _exif_taken_at(image)
            if upright.size != image.size:
                width, height = height, width  # rotated by EXIF orientation
            thumbnail = _thumbnail(upright)
            preview = previews.preview_jpeg(upright, preview_side) if with_preview else None
    except PILImage.DecompressionBombError:
        raise _too_many_pixels(width, height, max_pixels) from None
    except (OSError, SyntaxError, ValueError) as error:
        # libheif's messages end with a newline.
        raise RejectedImage(
            f"The image is corrupt or truncated and cannot be decoded ({str(error).strip()})."
        ) from None
    return ValidatedImage(image_format, width, height, taken_at, thumbnail, preview)


def _header(data: bytes, max_pixels: int) -> pixels.Header:
    """The format and size from the header, or why the bytes are no image we can read."""
    try:
        return pixels.read_header(data)
    except UnidentifiedImageError:
        if kind := pixels.heif_container_kind(data):
            raise RejectedImage(
                f"The image is corrupt or truncated: it starts as {kind} but cannot be read."
            ) from None
        raise RejectedImage(
            "This is not an image file (its content is not a recognised image format)."
        ) from None
    except PILImage.DecompressionBombError:
        raise _too_many_pixels(None, None, max_pixels) from None
    except OSError as error:
        raise RejectedImage(f"The image is corrupt: {error}.") from None


def _too_many_pixels(width, height, limit: int) -> RejectedImage:
    size = f"{width} x {height} = {width * height / 1e6:.0f} megapixels" if width else "too many"
    return RejectedImage(
        f"The image has too many pixels ({size}); the limit is {limit / 1e6:.0f} megapixels."
    )


def _extension(filename: str) -> str:
    dot = filename.rfind(".")
    return filename[dot:].lower() if dot >= 0 else ""


def _thumbnail(image: PILImage.Image) -> bytes:
    image = pixels.displayable(image, keep_alpha=True).copy()
    image.thumbnail((settings.THUMBNAIL_SIZE, settings.THUMBNAIL_SIZE), PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=80, method=4)
    return buffer.getvalue()


def _exif_taken_at(image: PILImage.Image) -> datetime | None:
    try:
        main = image.getexif()
        exif = main.get_ifd(EXIF_IFD)
        # Some phone apps and editors write the date into IFD0 instead of the Exif sub-IFD.
        raw = exif.get(EXIF_DATETIME_ORIGINAL) or main.get(EXIF_DATETIME_ORIGINAL)
        if not raw:
            return None
        taken = datetime.strptime(str(raw).strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
        offset = exif.get(EXIF_OFFSET_TIME_ORIGINAL) or main.get(EXIF_OFFSET_TIME_ORIGINAL)
        if offset:
            return datetime.fromisoformat(taken.isoformat() + str(offset).strip("\x00 "))
        # No offset: the camera's clock is read in TIME_ZONE (its day stays the camera's).
        return timezone.make_aware(taken)
    except (ValueError, TypeError, KeyError, OverflowError):
        return None  # an unreadable date is not a reason to refuse the image

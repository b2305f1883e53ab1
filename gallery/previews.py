"""Previews: the small upright copy of a large original that workers encode instead of it.

Decoding a 12 MP JPEG costs about as much as encoding it, and ingest already decodes every
upload (validation, thumbnail). From those pixels it keeps a preview, as Immich encodes its
preview and not the original: upright (EXIF orientation applied), 8-bit RGB, shortest side
PREVIEW_SIZE (at least twice the model's input), JPEG. Previews only ever reduce: an original
whose shortest side is not larger has none and is encoded as is, being small enough to decode.
"""

import io

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from gallery import pixels

JPEG_QUALITY = 90


def side_for_model(image_size: int) -> int:
    """The preview's shortest side for a model with this input: twice its input, at least."""
    return max(settings.PREVIEW_SIZE, 2 * image_size)


def wants_preview(width: int, height: int, side: int) -> bool:
    """Whether an original this size gets a preview of this side (never an enlarged one)."""
    return min(width, height) > side


def preview_jpeg(image: PILImage.Image, side: int) -> bytes:
    """The JPEG of a decoded, upright image reduced so its shortest side is `side`."""
    image = pixels.displayable(image)
    width, height = image.size
    if min(width, height) > side:
        scale = side / min(width, height)
        size = (max(side, round(width * scale)), max(side, round(height * scale)))
        # reducing_gap 3: a fast box reduction first for large factors, then Lanczos.
        image = image.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def preview_name(sha256: str, side: int) -> str:
    # The side is in the name: a model with a larger input gets a new file, not a rewrite of
    # one that another worker may be reading.
    return f"previews/{sha256[:2]}/{sha256}-{side}.jpg"


def save_preview(sha256: str, jpeg: bytes, side: int) -> str:
    """Store a preview a worker made; returns its name. A file already under that name is
    replaced: a worker makes a preview only when the image has no usable one, so such a file
    is unrecorded or damaged (a worker killed while writing leaves a truncated file)."""
    name = preview_name(sha256, side)
    default_storage.delete(name)
    return default_storage.save(name, ContentFile(jpeg))


def stored_preview_side(image) -> int | None:
    """The shortest side of an image's stored preview (read from its header), or None when it
    has none or the file cannot be read."""
    if not image.preview:
        return None
    try:
        header = pixels.read_header(image.preview.path)
    except (OSError, SyntaxError, ValueError):
        return None
    return min(header.width, header.height)

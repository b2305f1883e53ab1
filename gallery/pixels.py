"""Image decoding, below ingest (validation, thumbnails, previews), the encoder and OCR: opening
bytes and files with Pillow (HEIC/HEIF through pillow-heif), EXIF orientation, conversion to
8-bit RGB, and the thread pool that decodes a batch on every core.
"""

import io
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import pillow_heif
from PIL import Image as PILImage
from PIL import ImageOps

# Integer modes of more than 8 bits per sample: Pillow's own conversion to RGB clips them at
# 255, which turned a 16-bit scan into a white square.
WIDE_INTEGER_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def register_heif_opener() -> None:
    """Let Pillow open HEIC/HEIF in this process (AVIF it opens itself, since 11.3).

    The app's ready() calls this, so web processes, workers and commands all decode iPhone
    photos. libheif applies the HEIF rotation and pillow-heif resets EXIF orientation to 1,
    so `ImageOps.exif_transpose` does not turn the picture a second time. Embedded thumbnails
    are off: otherwise draft() may decode one instead of the image, and ingest would accept a
    file whose image it never decoded.
    """
    pillow_heif.register_heif_opener(thumbnails=False)


def heif_container_kind(data: bytes) -> str:
    """What HEIF container the bytes start as ("HEIC", "HEIF" or "AVIF"), read from the file
    type box alone, else "". Pillow calls a damaged one not an image at all."""
    mimetype = pillow_heif.get_file_mimetype(data[:16])
    return mimetype.removeprefix("image/").removesuffix("-sequence").upper()


class Header(NamedTuple):
    format: str
    width: int
    height: int


def read_header(source: bytes | str | os.PathLike) -> Header:
    """The format and size of image bytes (or a file), read from the header: no pixel is
    decoded. Pillow's errors are raised as they are, for the caller to word.

    Pillow's warning about many pixels is silenced: callers check their own limit, with a
    clearer message.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        with PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source) as probe:
            return Header(probe.format or "", *probe.size)


@contextmanager
def decoded_upright(data: bytes, min_side: int) -> Iterator[tuple[PILImage.Image, PILImage.Image]]:
    """Decode the whole image once: (as stored, with its EXIF; upright, orientation applied).

    JPEGs decode at the smallest reduced scale whose sides are still at least `min_side`;
    that still reads the whole stream, so a truncated file raises here.
    """
    with PILImage.open(io.BytesIO(data)) as image:
        image.draft("RGB", (min_side, min_side))
        image.load()
        yield image, ImageOps.exif_transpose(image)


def open_upright(source, target_size: int | None = None) -> PILImage.Image:
    """Open an image file small and upright: JPEG draft decoding, then EXIF orientation, as
    8-bit RGB.

    Real photos are 12+ megapixels; decoding them at 1/2..1/8 scale is faster and the model
    only sees a few hundred pixels anyway.
    """
    size = target_size or 256
    image = PILImage.open(source)
    # draft() picks the smallest JPEG scale (1/2..1/8) still at least this size.
    image.draft("RGB", (size, size))
    image = ImageOps.exif_transpose(image)
    return displayable(image)


def displayable(image: PILImage.Image, *, keep_alpha: bool = False) -> PILImage.Image:
    """The image as 8-bit RGB (or RGBA when it has transparency and `keep_alpha`)."""
    if image.mode in WIDE_INTEGER_MODES or image.mode == "F":
        image = _to_8_bit_gray(image)
    if keep_alpha and ("transparency" in image.info or "A" in image.mode):
        return image if image.mode == "RGBA" else image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8_bit_gray(image: PILImage.Image) -> PILImage.Image:
    """Scale 16-bit (0-65535) samples linearly to 0-255; 8-bit data in a wide mode stays."""
    samples = np.asarray(image, dtype=np.float64)
    top = 65535.0 if samples.max(initial=0) > 255 else 255.0
    scaled = np.clip(np.rint(samples * (255.0 / top)), 0, 255).astype(np.uint8)
    return PILImage.fromarray(scaled, mode="L")


_pool: ThreadPoolExecutor | None = None


def decoding_pool() -> ThreadPoolExecutor:
    """Threads for decoding and resizing images: Pillow releases the GIL while it works, so
    a batch of large JPEGs uses every core."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="decode")
    return _pool

"""Decoding shared by ingest (thumbnails, previews) and the encoder, below both: the formats
Pillow opens beyond its own (HEIC/HEIF) and pixel conversions.
"""

import numpy as np
import pillow_heif
from PIL import Image as PILImage

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

"""Perceptual hashes (pHash) of images, kept in `Image.phash`: what decides that two images
are copies of one picture (gallery/library/duplicates.py, and search pages' folding).

The hash is imagehash's 64-bit DCT pHash of the 320 px thumbnail (pHash itself looks at
32 x 32 pixels, so the original would only cost more to decode). Ingest stores it with the
row; images stored before the column get it from their thumbnail file the first time a scan
or a search page needs it. PostgreSQL has no unsigned 64-bit integer, so it is stored as the
signed bigint with the same bits.
"""

import io

import imagehash
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from gallery.models import Image

BITS = 64
_MASK = (1 << BITS) - 1


def as_stored(value: int) -> int:
    """An unsigned 64-bit hash as the signed bigint with the same bits."""
    return value - (1 << BITS) if value >= 1 << (BITS - 1) else value


def hash_of_pixels(pixels: PILImage.Image) -> int:
    return as_stored(int(str(imagehash.phash(pixels.convert("RGB"))), 16))


def hash_of_thumbnail(data: bytes) -> int | None:
    """The stored form of the pHash of a thumbnail's bytes; None when they cannot be read."""
    try:
        with PILImage.open(io.BytesIO(data)) as pixels:
            return hash_of_pixels(pixels)
    except (OSError, SyntaxError, ValueError):
        return None


def distance(a: int, b: int) -> int:
    """How many of the 64 bits differ (Hamming distance)."""
    return ((a ^ b) & _MASK).bit_count()


def hash_of_files(image: Image) -> int | None:
    """The pHash read from the image's thumbnail (its preview, or the original, without one);
    None when no file can be read."""
    for stored in (image.thumbnail, image.preview, image.file):
        if not stored:
            continue
        try:
            with default_storage.open(stored.name) as handle, PILImage.open(handle) as pixels:
                return hash_of_pixels(pixels)
        except (OSError, SyntaxError, ValueError):
            continue
    return None


def perceptual_hash(image: Image) -> int | None:
    """The image's pHash: the stored one, else read from its files and stored."""
    if image.phash is None:
        image.phash = hash_of_files(image)
        if image.phash is not None:
            Image.objects.filter(pk=image.pk).update(phash=image.phash)
    return image.phash


def fill_missing_hashes(images, *, batch_size: int = 500) -> int:
    """Store the pHash of each of these images (a queryset) that has none yet, in batches
    (a library indexed before the column takes about 10 ms an image, once); returns how many
    were stored."""
    stored = 0
    missing = images.filter(phash__isnull=True).order_by("pk")
    last = 0
    while True:
        batch = list(
            missing.filter(pk__gt=last).only("pk", "file", "thumbnail", "preview")[:batch_size]
        )
        if not batch:
            return stored
        last = batch[-1].pk
        for image in batch:
            image.phash = hash_of_files(image)
        readable = [image for image in batch if image.phash is not None]
        Image.objects.bulk_update(readable, ["phash"])
        stored += len(readable)

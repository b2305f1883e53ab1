"""Test images made with Pillow on the fly (no committed blobs)."""

import io

from PIL import Image


def image_bytes(
    color=(200, 30, 30), size=(96, 64), fmt="PNG", exif=None, pattern: int = 0, **save
) -> bytes:
    image = Image.new("RGB", size, color)
    if pattern:
        # A seeded pattern makes each image's content (and hash) distinct.
        for x in range(0, size[0], 8):
            for y in range(0, size[1], 8):
                if (x * 7 + y * 13 + pattern * 31) % 5 == 0:
                    image.paste((pattern * 37 % 256, x % 256, y % 256), (x, y, x + 8, y + 8))
    buffer = io.BytesIO()
    if exif is not None:
        save["exif"] = exif
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def distinct_images(count: int, fmt="PNG", size=(96, 64)) -> list[bytes]:
    return [
        image_bytes(
            color=(i * 53 % 256, i * 97 % 256, i * 151 % 256), size=size, fmt=fmt, pattern=i + 1
        )
        for i in range(count)
    ]

"""bench_duplicates' data: distinct photo-like originals (generated, or Debian's Tux Paint
stamps on photo-like backgrounds), the copies a real library gets of them, and the truth."""

import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageEnhance

from gallery.offline.datasets import TUXPAINT_STAMPS

PHOTO_SIZE = (640, 480)
VARIANT_KINDS = ("resized", "jpeg40", "crop5", "brighter15", "darker15", "rotated3")


def photo_like(seed: int, size=PHOTO_SIZE) -> PILImage.Image:
    """A distinct photo-like picture: a smooth colour field, a few shapes, fine noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    picture = PILImage.fromarray(coarse).resize(size, PILImage.Resampling.BICUBIC)
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(3, 8))):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        w, h = rng.integers(size[0] // 10, size[0] // 2), rng.integers(size[1] // 10, size[1] // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x), int(y), int(x + w), int(y + h)], fill=colour)
    noise = rng.integers(-10, 11, size=(size[1], size[0], 3), dtype=np.int16)
    pixels = np.clip(np.asarray(picture, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return PILImage.fromarray(pixels)


def stamp_photo(path: Path, seed: int, size=PHOTO_SIZE) -> PILImage.Image:
    """A Tux Paint stamp over a photo-like background (stamps are cut-outs with alpha)."""
    background = photo_like(seed, size)
    with PILImage.open(path) as stamp:
        stamp = stamp.convert("RGBA")
        stamp.thumbnail((size[0] * 3 // 4, size[1] * 3 // 4))
        offset = ((size[0] - stamp.width) // 2, (size[1] - stamp.height) // 2)
        background.paste(stamp, offset, stamp)
    return background


def originals(count: int, *, source: str = "generated", seed: int = 0) -> list[PILImage.Image]:
    """`count` distinct originals; `source` is "generated", "tuxpaint" or "auto" (Tux Paint's
    stamps when installed)."""
    if source == "auto":
        source = "tuxpaint" if TUXPAINT_STAMPS.is_dir() else "generated"
    if source == "generated":
        return [photo_like(seed * 100_003 + n) for n in range(count)]
    stamps = sorted(TUXPAINT_STAMPS.rglob("*.png"))
    if len(stamps) < count:
        raise ValueError(
            f"Only {len(stamps)} Tux Paint stamps under {TUXPAINT_STAMPS}; "
            "`apt-get install tuxpaint-stamps-default`, or use generated originals."
        )
    picks = np.random.default_rng(seed).choice(len(stamps), size=count, replace=False)
    return [stamp_photo(stamps[pick], seed * 100_003 + n) for n, pick in enumerate(picks)]


def variant(image: PILImage.Image, kind: str) -> PILImage.Image:
    """A copy of `image` as a library gets them: resized, re-saved, cropped, brightened."""
    width, height = image.size
    if kind == "resized":
        return image.resize((width // 2, height // 2), PILImage.Resampling.LANCZOS)
    if kind == "jpeg40":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=40)
        return PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "crop5":  # 5 % of each dimension cut away, off-centre
        dx, dy = round(width * 0.05), round(height * 0.05)
        return image.crop((dx // 3, dy // 3, width - dx + dx // 3, height - dy + dy // 3))
    if kind in ("brighter15", "darker15"):
        return ImageEnhance.Brightness(image).enhance(1.15 if kind == "brighter15" else 0.85)
    if kind == "rotated3":  # straightened: rotated, corners filled with the mean colour
        mean = tuple(int(c) for c in np.asarray(image).reshape(-1, 3).mean(axis=0))
        return image.rotate(3, resample=PILImage.Resampling.BICUBIC, fillcolor=mean)
    raise ValueError(f"Unknown variant {kind!r}")


def encoded(image: PILImage.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def library_with_variants(
    count: int, *, with_variants: float = 0.5, variants_each: int = 3, source="generated", seed=0
) -> tuple[list[tuple[str, bytes]], list[list[str]]]:
    """(file name, bytes) of `count` originals, a share of them with `variants_each` edits,
    and the true groups (lists of file names: each original with its variants)."""
    rng = np.random.default_rng(seed + 1)
    files, truth = [], []
    for number, picture in enumerate(originals(count, source=source, seed=seed)):
        name = f"original-{number:04d}.jpg"
        files.append((name, encoded(picture)))
        if rng.random() >= with_variants:
            continue
        group = [name]
        for kind in rng.choice(VARIANT_KINDS, size=variants_each, replace=False):
            copy_name = f"original-{number:04d}-{kind}.jpg"
            files.append((copy_name, encoded(variant(picture, str(kind)))))
            group.append(copy_name)
        truth.append(group)
    return files, truth

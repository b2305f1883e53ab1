"""Libraries of images with known vectors, bulk-loaded (no files, no encoder), for search tests."""

from collections.abc import Callable
from datetime import datetime

import numpy as np

from gallery.models import Embedding, Image


def bulk_load_images(
    vectors: np.ndarray,
    model,
    *,
    taken_at: Callable[[int], datetime],
    caption: Callable[[int], str] = lambda n: "",
) -> list[Image]:
    """One indexed image per vector (image n has vectors[n] as `model`'s), in order."""
    images = Image.objects.bulk_create(
        Image(
            file=f"originals/{n:064x}.png",
            thumbnail=f"thumbnails/{n:064x}.webp",
            sha256=f"{n:064x}",
            width=64,
            height=64,
            format="PNG",
            byte_size=1,
            caption=caption(n),
            taken_at=taken_at(n),
            status=Image.Status.INDEXED,
        )
        for n in range(len(vectors))
    )
    Embedding.objects.bulk_create(
        Embedding(image=image, model=model, vector=vector)
        for image, vector in zip(images, vectors, strict=True)
    )
    return images

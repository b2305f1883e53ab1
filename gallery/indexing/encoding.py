"""Turning stored images into vectors: batch encoding with per-image failure isolation.

An image's vector and status are written in one transaction after its whole batch is encoded,
so a worker killed mid-batch leaves those images `pending` (and queued long ago), which
`requeue` finds. Encoding is idempotent: an image already indexed by the configured model is
skipped unless a re-index forces it, and a forced run writes the same vector again.
"""

import logging

from django.db import transaction
from django.utils import timezone

from gallery.indexing import encoder
from gallery.models import Image

logger = logging.getLogger(__name__)


def encode_images(image_ids, *, force: bool = False) -> dict[str, int]:
    """Encode these images with the configured model and store their vectors.

    One unreadable image is marked `failed` with its error; the rest of the batch is stored.
    """
    model_id = encoder.configured_model_id()
    images = list(Image.objects.filter(pk__in=image_ids).order_by("pk"))
    todo = [
        image
        for image in images
        if force or image.status != Image.Status.INDEXED or image.embedding_model != model_id
    ]
    failures: dict[int, str] = {}
    vectors = {}
    if todo:
        try:
            clip = encoder.get_encoder()
        except encoder.ModelWeightsUnavailable as error:
            failures = {image.pk: str(error) for image in todo}
        else:
            vectors = _encode_isolating_failures(clip, todo, failures)
    now = timezone.now()
    with transaction.atomic():
        for image_pk, vector in vectors.items():
            Image.objects.filter(pk=image_pk).update(
                embedding=vector,
                embedding_model=model_id,
                status=Image.Status.INDEXED,
                status_error="",
                indexed_at=now,
            )
        for image_pk, message in failures.items():
            Image.objects.filter(pk=image_pk).update(
                status=Image.Status.FAILED, status_error=message[:2000]
            )
    return {"indexed": len(vectors), "failed": len(failures), "skipped": len(images) - len(todo)}


def _encode_isolating_failures(clip, images, failures: dict[int, str]) -> dict:
    """Encode as one batch; if the model fails on it, image by image so only the culprit fails."""
    prepared = []
    for image, pixels in zip(
        images, clip.prepare_image_files([i.file.path for i in images]), strict=True
    ):
        if isinstance(pixels, Exception):
            failures[image.pk] = f"Could not read the image file: {pixels}"
        else:
            prepared.append((image, pixels))
    if not prepared:
        return {}
    try:
        vectors = clip.encode_pixels([pixels for _, pixels in prepared])
        return {image.pk: vector for (image, _), vector in zip(prepared, vectors, strict=True)}
    except Exception:
        logger.exception("Batch encoding failed; retrying image by image")
    vectors = {}
    for image, pixels in prepared:
        try:
            vectors[image.pk] = clip.encode_pixels([pixels])[0]
        except Exception as error:
            failures[image.pk] = f"The model could not encode this image: {error}"
    return vectors

"""Turning stored images into vectors of every model the library needs, in batches.

Each job encodes its images for the active model and, during a switch, for the next model
too. A batch's vectors and statuses are written in one transaction after the whole batch is
encoded, so a worker killed mid-batch leaves those images as they were, queued long ago,
which `requeue` finds. Encoding is idempotent: a vector already stored is not made again
unless a re-index forces it.

An unreadable file fails its image alone. A model that cannot be loaded is a set-up
problem, not the image's: statuses stay as they are, the reason is recorded on the model
(admin, /healthz), and the job raises so RQ keeps it in its failed registry.
"""

import logging

from django.db import transaction
from django.utils import timezone

from gallery.indexing import encoder, registry
from gallery.models import Embedding, Image

logger = logging.getLogger(__name__)


def encode_images(image_ids, *, force: bool = False) -> dict[str, int]:
    """Encode these images for the active (and next) model and store their vectors."""
    models = registry.models_to_fill()
    encoder.release_encoders(keep=[registry.spec_of(model) for model in models])
    images = list(Image.objects.filter(pk__in=image_ids).order_by("pk"))
    failures: dict[int, str] = {}
    vectors: dict[int, dict] = {}  # model pk -> {image pk: vector}
    unavailable: list[encoder.ModelWeightsUnavailable] = []
    for model in models:
        have = set(
            Embedding.objects.filter(model=model, image__in=images).values_list(
                "image_id", flat=True
            )
        )
        todo = [
            image
            for image in images
            if (force or image.pk not in have) and image.pk not in failures
        ]
        if not todo:
            continue
        try:
            clip = registry.load_encoder(model)
        except encoder.ModelWeightsUnavailable as error:
            unavailable.append(error)
            continue
        vectors[model.pk] = _encode_isolating_failures(clip, todo, failures)
    stored = _store([image.pk for image in images], vectors, failures)
    # Every job looks, so a switch cannot stall at 100 % when its last image went away.
    registry.activate_next_if_complete()
    if unavailable:
        # Nothing was marked failed; RQ keeps the job, `requeue` retries the images.
        raise unavailable[0]
    return stored


def _store(batch: list[int], vectors: dict[int, dict], failures: dict[int, str]) -> dict:
    """Write the batch's vectors and statuses in one transaction, against the registry as it
    is at commit: a switch may have happened while the batch was encoding."""
    now = timezone.now()
    with transaction.atomic():
        # Activation takes this lock exclusively: it cannot interleave with these writes.
        registry.hold_registry_shared()
        current = {model.pk: model for model in registry.models_to_fill()}
        active = next(iter(current.values()))
        # Images deleted while the batch was encoding are left out; the rest are kept alive.
        alive = set(
            Image.objects.select_for_update(no_key=True)
            .filter(pk__in=batch)
            .values_list("pk", flat=True)
        )
        written = {}
        for model_pk, by_image in vectors.items():
            rows = [
                Embedding(image_id=image_pk, model_id=model_pk, vector=vector, created_at=now)
                for image_pk, vector in by_image.items()
                if image_pk in alive and image_pk not in failures
            ]
            if model_pk not in current or not rows:
                continue  # a model retired (or pruned) meanwhile needs no vectors
            Embedding.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["model", "image"],
                update_fields=["vector", "created_at"],
            )
            written[model_pk] = [row.image_id for row in rows]
        indexed = written.get(active.pk, [])
        Image.objects.filter(pk__in=indexed).update(
            status=Image.Status.INDEXED, status_error="", indexed_at=now
        )
        # Pending images whose active vector already existed are searchable too.
        Image.objects.filter(pk__in=alive, status=Image.Status.PENDING).with_vector_of(
            active
        ).update(status=Image.Status.INDEXED, indexed_at=now)
        for image_pk, message in failures.items():
            Image.objects.filter(pk=image_pk).update(
                status=Image.Status.FAILED, status_error=message[:2000]
            )
        # A file no model can read is not searchable either, under any model.
        Embedding.objects.filter(image_id__in=list(failures)).delete()
    return {
        "indexed": len(indexed),
        "filled": sum(len(ids) for pk, ids in written.items() if pk != active.pk),
        "failed": len(failures),
        "skipped": len(alive) - len(set(indexed) | set(failures)),
    }


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

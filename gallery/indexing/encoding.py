"""Turning stored images into vectors of every model the library needs, in batches.

Each job encodes its images for the active model and, during a switch, for the next model
too. A batch's vectors and statuses are written in one transaction after the whole batch is
encoded, so a worker killed mid-batch leaves those images as they were, queued long ago,
which `requeue` finds. Encoding is idempotent: a vector already stored is not made again
unless a re-index forces it.

Images are read from their previews (gallery/previews.py) when those are large enough for
the model, so a 12 MP original is not decoded again; an image without one (stored before
previews, or a model with a larger input) gets it here, from one decode of the original.

An unreadable original fails its image alone; a missing or unreadable preview only means the
original is read instead. What the system cannot do right now is not the image's fault and
changes no status: a model that cannot be loaded (the reason is recorded on the model for the
admin and /healthz) or media storage that is away (an unmounted volume, I/O errors). Those
images keep their status, the rest of the batch is stored, and the job raises so RQ retries
it with back-off (queueing.RETRY_INTERVALS); after the last retry `requeue` picks them up.
"""

import logging

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from gallery import previews, storage
from gallery.indexing import encoder, registry, text_reading
from gallery.indexing.encoder_base import ModelWeightsUnavailable
from gallery.indexing.model_loading import load_encoder, spec_of
from gallery.models import Embedding, Image
from gallery.pixels import decoding_pool, open_upright

logger = logging.getLogger(__name__)


def encode_images(image_ids, *, force: bool = False) -> dict[str, int]:
    """Encode these images for the active (and next) model and store their vectors."""
    models = registry.models_to_fill()
    encoder.release_encoders(keep=[spec_of(model) for model in models])
    images = list(Image.objects.filter(pk__in=image_ids).order_by("pk"))
    failures: dict[int, str] = {}
    unreachable: dict[int, str] = {}  # files the storage could not give now: retried later
    vectors: dict[int, dict] = {}  # model pk -> {image pk: vector}
    unavailable: list[ModelWeightsUnavailable] = []
    for model in models:
        have = set(
            Embedding.objects.filter(model=model, image__in=images).values_list(
                "image_id", flat=True
            )
        )
        todo = [
            image
            for image in images
            if (force or image.pk not in have)
            and image.pk not in failures
            and image.pk not in unreachable
        ]
        if not todo:
            continue
        try:
            clip = load_encoder(model)
        except ModelWeightsUnavailable as error:
            unavailable.append(error)
            continue
        vectors[model.pk] = _encode_isolating_failures(clip, todo, failures, unreachable)
    stored = _store([image.pk for image in images], vectors, failures)
    # Every job looks, so a switch cannot stall at 100 % when its last image went away.
    registry.activate_next_if_complete()
    if unavailable:
        # Nothing was marked failed; RQ retries the job, then `requeue` does.
        raise unavailable[0]
    if unreachable:
        first = next(iter(unreachable.values()))
        raise storage.StorageUnavailable(
            f"Media storage unreadable for {len(unreachable)} image(s), kept waiting: {first}"
        )
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
        # The text inside the indexed ones is read by a slower job on its own queue, queued
        # once this commits: OCR never delays a vector, and failing to queue it changes nothing.
        text_reading.queue_reading_after_commit(alive - set(failures))
    return {
        "indexed": len(indexed),
        "filled": sum(len(ids) for pk, ids in written.items() if pk != active.pk),
        "failed": len(failures),
        "skipped": len(alive) - len(set(indexed) | set(failures)),
    }


def _encode_isolating_failures(
    clip, images, failures: dict[int, str], unreachable: dict[int, str]
) -> dict:
    """Encode as one batch; if the model fails on it, image by image so only the culprit fails."""
    prepared = _prepare(clip, images, failures, unreachable)
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


def _prepare(
    clip, images, failures: dict[int, str], unreachable: dict[int, str]
) -> list[tuple[Image, object]]:
    """Model-ready pixels of each image, from its preview or else its original.

    A stored preview that turns out unreadable (a header fine, the rest damaged) is made again
    from the original in a second round; only an unreadable original fails the image.
    """
    prepared = []
    remake = False
    while images:
        sources = _encoding_sources(images, clip.image_size, remake=remake)
        readable = []
        for image, source in zip(images, sources, strict=True):
            if isinstance(source, Exception):
                _unreadable(image, source, failures, unreachable)
            else:
                readable.append((image, source))
        damaged_previews = []
        pixels = clip.prepare_image_files([source for _, source in readable])
        for (image, source), image_pixels in zip(readable, pixels, strict=True):
            if not isinstance(image_pixels, Exception):
                prepared.append((image, image_pixels))
            elif source != image.file.path and not remake:
                logger.warning("Preview of image %s unreadable: %s", image.pk, image_pixels)
                damaged_previews.append(image)
            else:
                _unreadable(image, image_pixels, failures, unreachable)
        images, remake = damaged_previews, True
    return prepared


def _unreadable(image, error, failures: dict[int, str], unreachable: dict[int, str]) -> None:
    """A damaged file fails its image; storage that is away leaves the image as it is."""
    if storage.is_outage(error):
        logger.warning("Media storage unreadable for image %s: %s", image.pk, error)
        unreachable[image.pk] = str(error)
    else:
        failures[image.pk] = f"Could not read the image file: {error}"


def _encoding_sources(images, image_size: int, *, remake: bool = False) -> list:
    """The file each image is encoded from for a model with this input size, or the exception
    its original raised.

    The preview when its shortest side is at least twice the model's input (or the original is
    no larger); the original when it is too small to have a preview of that size; otherwise
    (or with `remake`) a preview made now, kept on the row, and used by every later encoding
    and model switch.
    """
    needed = 2 * image_size
    side = previews.side_for_model(image_size)
    sources: dict[int, object] = {}
    lacking = []
    for image in images:
        stored_side = None if remake else previews.stored_preview_side(image)
        if stored_side is not None and stored_side >= min(needed, image.width, image.height):
            sources[image.pk] = image.preview.path
        elif not previews.wants_preview(image.width, image.height, side):
            sources[image.pk] = image.file.path
        else:
            lacking.append(image)
    made = decoding_pool().map(lambda image: _make_preview(image, side), lacking)
    for image, (source, name) in zip(lacking, made, strict=True):
        sources[image.pk] = source
        if name:
            _record_preview(image, name)
    return [sources[image.pk] for image in images]


def _make_preview(image: Image, side: int) -> tuple[object, str]:
    """Decode the original once at the preview's size and save the preview. Returns the file
    to encode (or the exception of an unreadable original, the image's own failure) and the
    new preview's name ("" when none could be saved)."""
    try:
        picture = open_upright(image.file.path, side)
        picture.load()
    except Exception as error:
        return error, ""
    try:
        name = previews.save_preview(image.sha256, previews.preview_jpeg(picture, side), side)
        return default_storage.path(name), name
    except Exception:
        # A preview only saves work: without one the original is encoded, as before previews.
        logger.exception("Could not save a preview of image %s; encoding its original", image.pk)
        return image.file.path, ""


def _record_preview(image: Image, name: str) -> None:
    """Point the row at its new preview and delete the one it replaces. A failure is logged:
    the image is still encoded from the new file, and its vector still stored."""
    old = image.preview.name  # None (SQL NULL) without one
    if old == name:
        return
    try:
        # Only over the preview this job saw: a concurrent job's newer one is not undone.
        replaced = Image.objects.filter(pk=image.pk, preview=old).update(preview=name)
        image.preview = name
        if replaced and old:
            default_storage.delete(old)
    except Exception:
        logger.exception("Could not record the preview of image %s", image.pk)

"""Reading the text inside indexed images (OCR) on its own queue, and storing it.

An image is read after its vector is stored: the encoding service queues one job per image
once its batch commits (OCR_QUEUE, default "ocr"), and a dedicated worker runs them, so the
model, several times slower per image than the CLIP encoder (0.7 s of CPU per image against
the encoder's 0.17 s on two threads, measured with bench_ocr), never delays a vector. Nothing
here changes an image's status; a failure to queue only leaves the image unread, which
`requeue` (every 30 s under `up`) and `reindex --ocr` catch up on.

A job's id is made from its image (`ocr-<id>`), so an image is never queued twice while its
job waits, runs or waits for a retry. A job whose image was deleted meanwhile does nothing.
"""

import logging
import time

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from gallery import storage
from gallery.breaker import CircuitBreaker
from gallery.indexing import ocr, queueing
from gallery.models import Image

logger = logging.getLogger(__name__)

# By name, so this module sits below its job (tasks -> text_reading).
READ_TEXT_JOB = "gallery.indexing.tasks.read_image_text_job"
# A job raises only when the system failed (storage away, the model would not load).
RETRY_INTERVALS = (60, 300)
# `requeue` tops the OCR queue up to this many jobs per round, so catching up on a large
# library never puts a job per image into Redis at once, and each round stays cheap.
REQUEUE_LIMIT = 500
# Stored text is capped: a poster or a screenshot of a page has a few thousand characters.
MAX_TEXT_LENGTH = 20_000
QUEUE_RETRY_SECONDS = 10
queue_breaker = CircuitBreaker(QUEUE_RETRY_SECONDS)


def reading_job_id(image_id: int) -> str:
    return f"ocr-{image_id}"


def images_to_read(*, reread: bool = False):
    """Indexed images whose text was never read (or, with `reread`, every indexed image)."""
    indexed = Image.objects.filter(status=Image.Status.INDEXED)
    return indexed if reread else indexed.filter(ocr_read_at__isnull=True)


def queue_reading_after_commit(image_ids) -> None:
    """Queue reading these images' text once the surrounding transaction commits (those still
    indexed and unread then). Never raises: OCR must not affect indexing."""
    if not settings.OCR_ENABLED:
        return
    ids = list(image_ids)
    if ids:
        transaction.on_commit(lambda: _queue_unread(ids))


def _queue_unread(ids: list[int]) -> None:
    try:
        queue_reading(images_to_read().filter(pk__in=ids).values_list("pk", flat=True))
    except Exception:
        logger.exception("Could not queue OCR of %d image(s); `requeue` will.", len(ids))


def queue_reading(image_ids) -> int:
    """One OCR job per image, at the back of OCR_QUEUE; returns how many were queued (or
    already waiting). With Redis unreachable, nothing is queued and nothing fails."""
    if queue_breaker.is_open:
        return 0
    queued = 0
    try:
        queue = django_rq.get_queue(settings.OCR_QUEUE)
        for image_id in image_ids:
            queueing.enqueue_once(
                queue,
                READ_TEXT_JOB,
                image_id,
                job_id=reading_job_id(image_id),
                at_front=False,
                retry_intervals=RETRY_INTERVALS,
            )
            queued += 1
    except RedisError as error:
        queue_breaker.trip()
        logger.warning("Queue unreachable (%s): OCR waits for `requeue`.", error)
    return queued


def requeue_unread_images(*, limit: int = REQUEUE_LIMIT) -> int:
    """Queue OCR for indexed images never read that no live job holds (a lost job, Redis was
    down, or images indexed before OCR existed), up to `limit` jobs waiting at once."""
    if not settings.OCR_ENABLED:
        return 0
    try:
        queue = django_rq.get_queue(settings.OCR_QUEUE)
        room = limit - queue.count
        if room <= 0:
            return 0  # the worker has plenty to do; the rest is queued in later rounds
        held = queueing.images_with_live_jobs(queue, READ_TEXT_JOB)
    except RedisError as error:
        logger.warning("Queue unreachable (%s): no OCR re-queued this time.", error)
        return 0
    queue_breaker.reset()
    unread = images_to_read().exclude(pk__in=held).order_by("pk")
    return queue_reading(list(unread.values_list("pk", flat=True)[:room]))


def reading_progress() -> dict:
    """How many indexed images have their text read, and OCR jobs waiting."""
    indexed = images_to_read(reread=True)
    progress = {
        "indexed": indexed.count(),
        "read": indexed.filter(ocr_read_at__isnull=False).count(),
        "with_text": indexed.exclude(ocr_text="").count(),
    }
    try:
        progress["queued_jobs"] = django_rq.get_queue(settings.OCR_QUEUE).count
    except RedisError:
        progress["queued_jobs"] = None
    return progress


# -- the job's service ---------------------------------------------------------------------


def read_image_text(*, image_id: int) -> str | None:
    """Read the text inside this image and store it; returns the text, or None when the image
    no longer exists (deleted since it was queued: nothing to do).

    The preview is read when the image has one (upright, 512 px on its shortest side), else
    the original. A file that cannot be read stores empty text, so the image is not read
    again and again; storage that is away raises, and RQ retries the job.
    """
    image = Image.objects.filter(pk=image_id).first()
    if image is None:
        return None
    reader = ocr.text_reader()  # a model that will not load raises: the job is retried
    started = time.perf_counter()
    reading = None
    for path in reading_sources(image):
        try:
            reading = reader.read(ocr.open_for_reading(path))
            break
        except Exception as error:
            if storage.is_outage(error):
                raise storage.StorageUnavailable(
                    f"Media storage unreadable for image {image_id}: {error}"
                ) from error
            logger.warning("Could not read text in %s of image %s: %s", path, image_id, error)
    text = reading.text[:MAX_TEXT_LENGTH] if reading else ""
    store_image_text(image_id=image_id, text=text)
    logger.info(
        "Read %d line(s) of text in image %s in %.2f s.",
        len(reading.lines) if reading else 0,
        image_id,
        time.perf_counter() - started,
    )
    return text


def reading_sources(image: Image) -> list[str]:
    sources = []
    if image.preview:
        sources.append(image.preview.path)
    sources.append(image.file.path)
    return sources


def store_image_text(*, image_id: int, text: str) -> None:
    """Store what OCR read in an image (a deleted image is left alone)."""
    Image.objects.filter(pk=image_id).update(ocr_text=text, ocr_read_at=timezone.now())

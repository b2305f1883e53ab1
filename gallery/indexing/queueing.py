"""Handing images to the encoding queue: batches, requeue of lost jobs, and re-index.

An image's vectors and status are written in one transaction after its whole batch is
encoded, so a worker killed mid-batch leaves those images `pending` (or without the next
model's vector) with no live job, which `requeue` finds. Encoding is idempotent: a vector
already stored is not made again unless a re-index forces it.

A batch's job id is made from its images, so the same batch is never queued twice while it
waits, runs or is scheduled for a retry. A job that raises (the model cannot load, storage
is away, the database went) is retried by RQ after RETRY_INTERVALS; workers run RQ's
scheduler for that.
"""

import datetime
import hashlib
import logging
import socket

import django_rq
import psutil
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from gallery.breaker import CircuitBreaker
from gallery.models import EmbeddingModel, Image

logger = logging.getLogger(__name__)

# By name, so this module sits below the job (tasks -> encoding -> registry -> queueing).
ENCODE_JOB = "gallery.indexing.tasks.encode_images_job"
# Seconds before each retry of a job that raised: the system, not the images, failed.
RETRY_INTERVALS = (15, 60, 300)
# A retry overdue by this much has no scheduler to run it: its images count as lost.
SCHEDULED_GRACE = datetime.timedelta(minutes=2)
# After Redis fails, enqueueing is skipped this long: with Redis paused, every upload waited
# for its timeouts (5 uploads sent together took up to 15 s).
QUEUE_RETRY_SECONDS = 10
queue_breaker = CircuitBreaker(QUEUE_RETRY_SECONDS)


def enqueue_encoding(image_ids, *, force: bool = False) -> None:
    """Queue encoding of these images once the surrounding transaction commits."""
    ids = list(image_ids)
    transaction.on_commit(lambda: enqueue_now(ids, force=force))


def enqueue_now(image_ids, *, force: bool = False, background: bool = False) -> int:
    """Queue encoding jobs in batches; returns how many images were queued.

    Images waiting to become searchable go to the front of the queue; `background` work
    (filling a next model, re-indexing) goes to the back, so a new upload is not stuck
    behind hours of re-encoding during a model switch.

    When Redis is unreachable nothing is lost: the images stay `pending` with no queue time,
    and `requeue` queues them later.
    """
    ids = list(image_ids)
    queued = 0
    if queue_breaker.is_open:
        return 0  # Redis failed a moment ago: no upload waits for it again; requeue catches up
    try:
        queue = django_rq.get_queue(settings.ENCODING_QUEUE)
        for start in range(0, len(ids), settings.ENCODE_BATCH_SIZE):
            chunk = ids[start : start + settings.ENCODE_BATCH_SIZE]
            _enqueue_batch(queue, chunk, force=force, at_front=not background)
            Image.objects.filter(pk__in=chunk).update(queued_at=timezone.now())
            queued += len(chunk)
    except RedisError as error:
        queue_breaker.trip()
        logger.warning(
            "Queue unreachable (%s): %d images stay pending until `requeue` (`up` runs it "
            "every 30 s); not trying again for %d s.",
            error,
            len(ids) - queued,
            QUEUE_RETRY_SECONDS,
        )
    return queued


def batch_job_id(image_ids, *, force: bool) -> str:
    digest = hashlib.sha256(",".join(map(str, sorted(image_ids))).encode()).hexdigest()
    return f"encode-{'force' if force else 'fill'}-{digest[:24]}"


def _enqueue_batch(queue, chunk: list[int], *, force: bool, at_front: bool) -> None:
    """Queue one batch unless that very batch already has a live job."""
    enqueue_once(
        queue,
        ENCODE_JOB,
        chunk,
        force=force,
        job_id=batch_job_id(chunk, force=force),
        at_front=at_front,
        retry_intervals=RETRY_INTERVALS,
    )


def enqueue_once(
    queue, func: str, *args, job_id: str, at_front: bool, retry_intervals, **kwargs
) -> None:
    """Queue a job under this id unless a job with that id is live (waiting, scheduled for a
    retry, or running on a live worker); one that finished, failed or lost its worker is
    replaced. Used for encoding batches and for OCR (gallery/indexing/text_reading.py)."""
    from rq.exceptions import DuplicateJobError, NoSuchJobError
    from rq.job import Job, Retry

    for _ in range(2):
        try:
            queue.enqueue(
                func,
                *args,
                **kwargs,
                at_front=at_front,
                job_id=job_id,
                unique=True,
                retry=Retry(max=len(retry_intervals), interval=list(retry_intervals)),
            )
            return
        except DuplicateJobError:
            try:
                existing = Job.fetch(job_id, connection=queue.connection)
            except NoSuchJobError:
                continue  # it expired meanwhile
            if _job_is_live(existing, queue):
                return
            existing.delete()  # finished, failed, or its worker died: queue it afresh
    # Another process queued it between our delete and enqueue: that job is live.


def job_is_live(queue, job_id: str) -> bool:
    """Whether the job with this id waits, is scheduled for a retry, or runs on a live worker
    (the job `enqueue_once` would not queue again)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        return False
    return _job_is_live(job, queue)


def _job_is_live(job, queue, workers: dict | None = None) -> bool:
    from rq.job import JobStatus
    from rq.registry import ScheduledJobRegistry

    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.DEFERRED):
        return True
    if status == JobStatus.SCHEDULED:
        try:
            due = ScheduledJobRegistry(queue=queue).get_scheduled_time(job)
        except Exception:  # no longer in the registry: nothing will run it
            return False
        return due > datetime.datetime.now(datetime.UTC) - SCHEDULED_GRACE
    if status == JobStatus.STARTED:
        if workers is None:
            from rq.worker import Worker

            workers = {worker.name: worker for worker in Worker.all(queue=queue)}
        return _worker_alive(workers.get(job.worker_name or ""))
    return False


def model_being_filled() -> EmbeddingModel | None:
    """The next model while a switch runs, otherwise the active one."""
    registered = EmbeddingModel.objects
    return (
        registered.filter(state=EmbeddingModel.State.NEXT).first()
        or registered.filter(state=EmbeddingModel.State.ACTIVE).first()
    )


def images_waiting_for_vectors():
    """Pending images, and images without a vector of the model being filled."""
    waiting = Image.objects.filter(status=Image.Status.PENDING)
    model = model_being_filled()
    if model is not None:
        waiting = waiting | Image.objects.missing_vector_of(model)
    return waiting


def requeue_lost_images() -> int:
    """Queue every image waiting for a vector that no live job will encode, whatever its age:
    never queued (Redis was down), or its job was lost (the worker died, the queue was
    emptied). Images a queued or running job holds are left alone, so running this
    often never queues an image twice."""
    waiting_ids = set(images_waiting_for_vectors().values_list("pk", flat=True))
    if not waiting_ids:
        return 0
    try:
        held = images_with_live_jobs(django_rq.get_queue(settings.ENCODING_QUEUE))
    except RedisError as error:
        logger.warning("Queue unreachable (%s): nothing re-queued this time.", error)
        return 0
    queue_breaker.reset()  # Redis answered: queue again without waiting
    forget_recovered_failures(django_rq.get_queue(settings.ENCODING_QUEUE), waiting_ids)
    lost = Image.objects.filter(pk__in=waiting_ids - held)
    waiting = lost.filter(status=Image.Status.PENDING).order_by("pk")
    filling = lost.exclude(status=Image.Status.PENDING).order_by("pk")
    return enqueue_now(waiting.values_list("pk", flat=True)) + enqueue_now(
        filling.values_list("pk", flat=True), background=True
    )


def forget_recovered_failures(queue, waiting_ids: set[int]) -> int:
    """Delete failed encoding jobs none of whose images still waits for a vector: their
    images were encoded by a later job, so the failure is history (a database outage left
    about 110 of them behind). Failures whose images still wait stay, to be read."""
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    failed = FailedJobRegistry(queue=queue)
    forgotten = 0
    for job in Job.fetch_many(failed.get_job_ids(), connection=queue.connection):
        if job is None or job.func_name != ENCODE_JOB:
            continue
        if not waiting_ids & set(job.args[0]):
            failed.remove(job, delete_job=True)
            forgotten += 1
    return forgotten


def images_with_live_jobs(queue, job_func: str = ENCODE_JOB) -> set[int]:
    """Images that a job waiting in the queue, scheduled for a retry, or running on a live
    worker will encode (or, with another `job_func`, handle: its first argument is an image
    id or a list of them).

    Read from RQ's own queue and its started and scheduled registries. A running job's worker
    counts as dead when it is no longer registered, or when it ran on this host and its
    process is gone (a SIGKILLed worker stays registered until its heartbeat expires, minutes
    later).
    """
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry, StartedJobRegistry
    from rq.worker import Worker

    job_ids = list(queue.get_job_ids())
    job_ids += StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)
    job_ids += ScheduledJobRegistry(queue=queue).get_job_ids(cleanup=False)
    workers = {worker.name: worker for worker in Worker.all(queue=queue)}
    held: set[int] = set()
    for job in Job.fetch_many(list(dict.fromkeys(job_ids)), connection=queue.connection):
        if job is None or job.func_name != job_func:
            continue
        if _job_is_live(job, queue, workers):
            images = job.args[0]
            held.update(images if isinstance(images, list) else [images])
    return held


def _worker_alive(worker) -> bool:
    if worker is None:
        return False
    if worker.hostname == socket.gethostname() and worker.pid:
        return psutil.pid_exists(worker.pid)
    return True


REINDEX_SCOPES = ("all", "failed", "stale")


def images_to_reindex(scope: str):
    if scope == "all":
        return Image.objects.all()
    if scope == "failed":
        return Image.objects.filter(status=Image.Status.FAILED)
    if scope == "stale":
        model = model_being_filled()
        return Image.objects.none() if model is None else Image.objects.missing_vector_of(model)
    raise ValueError(f"Unknown re-index scope {scope!r}; use one of {REINDEX_SCOPES}.")


def reindex_images(images, *, force: bool = True) -> int:
    """Re-encode these images through the queue; existing vectors serve until replaced."""
    ids = list(images.order_by("pk").values_list("pk", flat=True))
    # Failed images show as pending again while they wait; indexed ones keep their vector.
    Image.objects.filter(pk__in=ids, status=Image.Status.FAILED).update(
        status=Image.Status.PENDING, status_error=""
    )
    return enqueue_now(ids, force=force, background=True)

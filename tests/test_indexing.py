"""Encoding on real RQ workers: vectors match the model, failures stay isolated, nothing is lost."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image as PILImage
from rq.registry import StartedJobRegistry

from gallery.indexing import encoder, encoding, queueing, registry
from gallery.library.ingest import ingest_image
from gallery.models import Embedding, Image
from gallery.offline import sandbox
from tests.conftest import active_encoder, active_vector, clean_child_environment
from tests.images import distinct_images, image_bytes

pytestmark = pytest.mark.django_db(transaction=True)


vector_of = active_vector


def add_images(count: int, **options) -> list[Image]:
    return [
        ingest_image(data=data, filename=f"{n}.png", **options).image
        for n, data in enumerate(distinct_images(count))
    ]


def test_uploaded_image_is_encoded_by_the_worker_exactly_as_the_model_encodes_it(
    client, django_user_model, media_root, queue, run_burst_worker
):
    client.force_login(django_user_model.objects.create_user("bo", password="pw-long-enough-1"))
    data = image_bytes(size=(800, 600), fmt="JPEG", pattern=11)
    client.post(reverse("upload"), {"files": [_uploaded("street.jpg", data)]})
    image = Image.objects.get()
    assert image.status == Image.Status.PENDING

    run_burst_worker()

    image.refresh_from_db()
    assert image.status == Image.Status.INDEXED and image.status_error == ""
    assert registry.active_model().model_id == encoder.ModelSpec.from_settings().model_id
    direct = active_encoder().encode_images([PILImage.open(image.file.path)])[0]
    stored = vector_of(image)
    assert float(stored @ direct) >= 0.999
    assert abs(np.linalg.norm(stored) - 1) < 1e-5


def _uploaded(name, data):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data)


def test_one_unreadable_image_fails_alone_and_the_rest_of_the_batch_is_stored(
    media_root, queue, run_burst_worker
):
    images = add_images(4, enqueue=False)
    with open(images[1].file.path, "r+b") as damaged:  # damaged on disk after upload
        damaged.truncate(40)
    queueing.enqueue_now([image.pk for image in images])
    run_burst_worker()
    statuses = {image.pk: Image.objects.get(pk=image.pk) for image in images}
    broken = statuses.pop(images[1].pk)
    assert broken.status == Image.Status.FAILED
    assert "Could not read the image file" in broken.status_error
    assert not broken.embeddings.exists()
    assert all(image.status == Image.Status.INDEXED for image in statuses.values())


def test_running_a_job_twice_changes_nothing(media_root):
    images = add_images(3, enqueue=False)
    ids = [image.pk for image in images]
    assert encoding.encode_images(ids) == {"indexed": 3, "filled": 0, "failed": 0, "skipped": 0}
    before = {
        image.pk: (vector_of(image), Image.objects.get(pk=image.pk).indexed_at) for image in images
    }
    assert encoding.encode_images(ids) == {"indexed": 0, "filled": 0, "failed": 0, "skipped": 3}
    for image in images:
        vector, indexed_at = before[image.pk]
        np.testing.assert_array_equal(vector_of(image), vector)
        assert Image.objects.get(pk=image.pk).indexed_at == indexed_at


def test_upload_while_redis_is_down_stays_pending_until_requeue(
    media_root, queue, run_burst_worker, settings
):
    working_queues = settings.RQ_QUEUES
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:9/0", "DEFAULT_TIMEOUT": 60}}
    result = ingest_image(data=image_bytes(pattern=21), filename="offline.png")
    assert result.ok and result.created
    image = Image.objects.get()
    assert image.status == Image.Status.PENDING and image.queued_at is None

    settings.RQ_QUEUES = working_queues
    call_command("requeue")
    assert queue.count == 1
    run_burst_worker()
    assert Image.objects.get().status == Image.Status.INDEXED


def test_requeue_never_queues_an_image_a_queued_job_holds(media_root, queue):
    add_images(2)
    jobs = queue.count
    assert jobs >= 1
    assert queueing.requeue_lost_images() == 0 and queue.count == jobs
    queue.empty()  # the jobs are lost, however recently they were queued
    assert queueing.requeue_lost_images() == 2
    assert queueing.requeue_lost_images() == 0


def test_worker_killed_mid_batch_loses_nothing_and_requeue_recovers(
    media_root, queue, run_burst_worker, settings
):
    settings.ENCODE_BATCH_SIZE = 64
    # Large PNGs (no reduced-size decoding) make the batch take seconds on the worker.
    images = [
        ingest_image(data=data, filename=f"{n}.png", enqueue=False).image
        for n, data in enumerate(distinct_images(24, size=(2400, 1800)))
    ]
    queueing.enqueue_now([image.pk for image in images])
    database_url = sandbox.database_url()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "searchsite",
            "rqworker",
            "default",
            "--burst",
            "--worker-class",
            "gallery.indexing.worker.EncodingWorker",
        ],
        env=clean_child_environment(
            DATABASE_URL=database_url,
            REDIS_URL=settings.REDIS_URL,
            SECRET_KEY="test",
            MEDIA_ROOT=str(media_root),
            ENCODE_BATCH_SIZE="64",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = StartedJobRegistry(queue=queue)
    deadline = time.monotonic() + 120
    while started.count == 0 and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.count == 1, "the worker never started the job"
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)

    # Nothing half-written: every image is still pending without a vector.
    assert set(Image.objects.values_list("status", flat=True)) == {Image.Status.PENDING}
    assert not Embedding.objects.exists()

    # The batch's job is still "started" in RQ's registry, but its worker process is gone:
    # requeue finds it at once, whatever the images' age, and queues it once.
    assert queueing.requeue_lost_images() == len(images)
    assert queueing.requeue_lost_images() == 0
    run_burst_worker()
    assert Image.objects.filter(status=Image.Status.INDEXED).count() == len(images)


def test_reindex_stale_fills_the_next_model_while_the_old_one_keeps_serving(
    media_root, queue, run_burst_worker, settings
):
    images = add_images(3, enqueue=False)
    encoding.encode_images([image.pk for image in images])
    old_model = registry.active_model()
    old_vectors = {image.pk: vector_of(image) for image in images}

    settings.CLIP_RANDOM_SEED = 7  # a different configured model id
    call_command("reindex", "--stale")
    new_model = registry.next_model()
    assert new_model.model_id == encoder.ModelSpec.from_settings().model_id != old_model.model_id
    assert queue.count == 1
    # Until the worker runs, the old vectors stay, answer searches and the images stay indexed.
    assert registry.active_model() == old_model
    for image in images:
        assert Image.objects.get(pk=image.pk).status == Image.Status.INDEXED
        np.testing.assert_array_equal(vector_of(image), old_vectors[image.pk])

    run_burst_worker()
    # Every image has the new model's vector, so it became active by itself.
    registry.forget_cached_models()
    assert registry.active_model() == new_model
    for image in images:
        assert not np.allclose(vector_of(image), old_vectors[image.pk])
    assert queueing.images_to_reindex("stale").count() == 0
    old_model.refresh_from_db()
    assert old_model.state == "retired" and old_model.embeddings.count() == 3


def test_reindex_failed_retries_failed_images(media_root, queue, run_burst_worker):
    (image,) = add_images(1, enqueue=False)
    Image.objects.filter(pk=image.pk).update(status=Image.Status.FAILED, status_error="boom")
    call_command("reindex", "--failed")
    assert Image.objects.get(pk=image.pk).status == Image.Status.PENDING
    run_burst_worker()
    assert Image.objects.get(pk=image.pk).status == Image.Status.INDEXED


def test_admin_lists_images_with_progress_and_reindexes_selected(
    admin_client, media_root, queue, run_burst_worker
):
    images = add_images(2, enqueue=False)
    encoding.encode_images([images[0].pk])
    page = admin_client.get(reverse("admin:gallery_image_changelist")).content.decode()
    assert "1 indexed · 1 pending · 0 failed" in page
    assert images[0].thumbnail.url in page
    response = admin_client.post(
        reverse("admin:gallery_image_changelist"),
        {"action": "reindex_selected", "_selected_action": [image.pk for image in images]},
        follow=True,
    )
    assert "Queued 2 of 2 image(s) for re-encoding." in response.content.decode()
    run_burst_worker()
    assert Image.objects.filter(status=Image.Status.INDEXED).count() == 2
    assert admin_client.get(reverse("django_rq:home")).status_code == 200


def test_uploads_are_kept_without_waiting_on_a_stalled_queue(media_root, queue, settings):
    """Redis paused (SIGSTOP) accepts connections and never answers: uploads must not wait
    for it each time, and the images are queued once it answers again."""
    import socket

    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(64)
    stalled.setblocking(False)
    working_queues = settings.RQ_QUEUES
    settings.RQ_QUEUES = {
        "default": {
            "URL": f"redis://127.0.0.1:{stalled.getsockname()[1]}/0"
            "?socket_connect_timeout=0.5&socket_timeout=0.5",
            "DEFAULT_TIMEOUT": 60,
        }
    }

    def connections() -> int:
        count = 0
        while True:
            try:
                stalled.accept()[0].close()
            except BlockingIOError:
                return count
            count += 1

    try:
        first = ingest_image(data=image_bytes(pattern=71), filename="first.png")
        assert first.ok and connections() >= 1  # it tried, and gave up after the timeout
        later = [
            ingest_image(data=image_bytes(pattern=72 + n), filename=f"{n}.png") for n in range(3)
        ]
        assert all(result.ok for result in later)
        assert connections() == 0  # the next uploads did not wait for it again
    finally:
        settings.RQ_QUEUES = working_queues
        stalled.close()
    assert set(Image.objects.values_list("status", flat=True)) == {Image.Status.PENDING}
    assert not Image.objects.filter(queued_at__isnull=False).exists()
    assert queueing.requeue_lost_images() == 4  # Redis answers again: all four are queued


def test_requeue_forgets_failed_jobs_whose_images_were_encoded_since(
    media_root, queue, run_burst_worker
):
    from rq.registry import FailedJobRegistry

    images = add_images(3)
    run_burst_worker()  # all three encoded by their own jobs
    failed = FailedJobRegistry(queue=queue)
    stale = queue.enqueue(queueing.ENCODE_JOB, [images[0].pk, images[1].pk])
    still_waiting = queue.enqueue(queueing.ENCODE_JOB, [images[2].pk])
    for job in (stale, still_waiting):  # as a database outage leaves them
        queue.remove(job)
        failed.add(job, exc_string="OperationalError: the database went away")
    # The third image waits for a vector again (say a re-index of it failed).
    Embedding.objects.filter(image_id=images[2].pk).delete()
    Image.objects.filter(pk=images[2].pk).update(status=Image.Status.PENDING)

    assert queueing.requeue_lost_images() == 1
    assert failed.get_job_ids() == [still_waiting.id]  # its image still waits: kept to read


def _run_scheduled_retries_now(queue) -> int:
    """What RQ's scheduler does when a retry falls due, without waiting for its interval."""
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry

    scheduled = ScheduledJobRegistry(queue=queue)
    ids = scheduled.get_job_ids()
    for job in Job.fetch_many(ids, connection=queue.connection):
        scheduled.remove(job)
        queue.enqueue_job(job)
    return len(ids)


def test_storage_away_changes_no_status_and_rq_retries_the_job_with_back_off(
    media_root, queue, run_burst_worker
):
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry

    first, second, *waiting_data = distinct_images(4)
    indexed = [ingest_image(data=data, filename="indexed.png").image for data in (first, second)]
    run_burst_worker()
    waiting = [ingest_image(data=data, filename="new.png").image for data in waiting_data]
    # The volume is unmounted: an empty mount point where the files were.
    away = media_root.with_name("media-away")
    media_root.rename(away)
    media_root.mkdir()
    call_command("reindex", "--all")  # a re-index that cannot read any file
    run_burst_worker()

    statuses = dict(Image.objects.values_list("pk", "status"))
    assert [statuses[image.pk] for image in indexed] == ["indexed", "indexed"]
    assert [statuses[image.pk] for image in waiting] == ["pending", "pending"]
    assert set(Image.objects.values_list("status_error", flat=True)) == {""}
    assert Embedding.objects.filter(image__in=indexed).count() == 2  # still searchable
    scheduled = ScheduledJobRegistry(queue=queue)
    retries = Job.fetch_many(scheduled.get_job_ids(), connection=queue.connection)
    assert retries and {job.retries_left for job in retries} == {len(queueing.RETRY_INTERVALS) - 1}
    assert queueing.requeue_lost_images() == 0  # a scheduled retry holds its images

    media_root.rmdir()
    away.rename(media_root)  # the volume is back
    assert _run_scheduled_retries_now(queue) == len(retries)
    run_burst_worker()
    assert set(Image.objects.values_list("status", flat=True)) == {"indexed"}


def test_a_missing_file_on_reachable_storage_fails_its_image_alone(
    media_root, queue, run_burst_worker
):
    images = add_images(3)
    (media_root / images[1].file.name).unlink()
    if images[1].preview:
        (media_root / images[1].preview.name).unlink()
    run_burst_worker()
    statuses = dict(Image.objects.values_list("pk", "status"))
    assert [statuses[image.pk] for image in images] == ["indexed", "failed", "indexed"]
    assert "Could not read" in Image.objects.get(pk=images[1].pk).status_error


def test_the_same_batch_is_never_queued_twice_while_it_waits(media_root, queue):
    images = add_images(3)
    ids = [image.pk for image in images]
    queue.empty()
    assert queueing.enqueue_now(ids) == 3
    assert queueing.enqueue_now(ids) == 3  # queued: the existing job holds them
    assert queue.count == 1
    assert queueing.enqueue_now(ids, force=True) == 3  # a re-index is another job
    assert queue.count == 2

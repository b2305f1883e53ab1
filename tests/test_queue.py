"""RQ on the real Valkey: a job enqueued from Django runs on a burst worker."""

import pytest
from rq.job import JobStatus

from gallery.indexing import queueing
from gallery.library.ingest import ingest_image
from gallery.models import Image
from tests.images import image_bytes


@pytest.mark.django_db(transaction=True)
def test_job_enqueued_after_commit_runs_on_a_burst_worker(queue, run_burst_worker, media_root):
    result = ingest_image(data=image_bytes(), filename="red.png")
    assert result.ok, result.error
    # Enqueued by transaction.on_commit: the job is in Valkey before any worker runs.
    assert queue.count == 1
    job = queue.jobs[0]
    assert job.func_name == "gallery.indexing.tasks.encode_images_job"
    assert job.args == ([result.image.pk],)

    run_burst_worker()

    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == {"indexed": 1, "filled": 0, "failed": 0, "skipped": 0}
    image = Image.objects.get(pk=result.image.pk)
    assert image.status == Image.Status.INDEXED
    assert image.embeddings.get().model.model_id == "vs-test-tiny:random-seed0"


@pytest.mark.django_db(transaction=True)
def test_enqueue_now_reports_how_many_images_were_queued(queue, media_root, settings):
    settings.ENCODE_BATCH_SIZE = 2
    ids = [
        ingest_image(data=image_bytes(pattern=n), filename=f"{n}.png", enqueue=False).image.pk
        for n in range(1, 6)
    ]
    assert queueing.enqueue_now(ids) == 5
    assert queue.count == 3  # batches of 2, 2 and 1
    assert not Image.objects.filter(pk__in=ids, queued_at__isnull=True).exists()

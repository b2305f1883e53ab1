"""Text inside images (OCR): read by its own job on its own queue after the image is indexed,
stored on the image, shown on its page and in the API, and gone with the image."""

import io

import django_rq
import pytest
from django.core.management import CommandError, call_command
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from gallery.indexing import ocr, text_reading
from gallery.indexing.worker import OcrWorker
from gallery.library import lifecycle
from gallery.library.ingest import ingest_image
from gallery.models import Embedding, Image
from searchsite import supervisor
from tests.images import image_bytes

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def sign_image(text: str = "OPEN SUNDAY", size=(1024, 768)) -> bytes:
    """A shop sign: dark words on a pale board, large enough to have a preview."""
    picture = PILImage.new("RGB", size, (236, 228, 210))
    draw = ImageDraw.Draw(picture)
    draw.text((90, 320), text, font=ImageFont.truetype(FONT, 96), fill=(30, 40, 90))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def textless_image(size=(800, 600)) -> bytes:
    """A smooth sky-like gradient: nothing a detector should take for text."""
    gradient = PILImage.linear_gradient("L").resize(size)
    picture = PILImage.merge("RGB", (gradient.point(lambda v: v // 3), gradient, gradient))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def words(text: str) -> list[str]:
    return text.upper().split()


@pytest.fixture
def ocr_queue(settings):
    """The real OCR queue on the session's Valkey (its own django_rq queue), emptied around."""
    queue = django_rq.get_queue(settings.OCR_QUEUE)
    queue.empty()
    yield queue
    queue.empty()


@pytest.fixture
def run_ocr_worker(ocr_queue):
    """Run the site's OCR worker class in burst mode until the OCR queue is empty."""

    def run() -> None:
        OcrWorker([ocr_queue], connection=ocr_queue.connection).work(burst=True)

    return run


@pytest.mark.django_db(transaction=True)
def test_text_in_an_uploaded_image_is_stored_after_its_vector_by_the_ocr_job(
    queue, run_burst_worker, ocr_queue, run_ocr_worker, media_root
):
    image = ingest_image(data=sign_image(), filename="shop.png").image
    assert image.preview  # read from its 512 px preview, as the encoder is
    assert ocr_queue.count == 0  # nothing is read before the image is indexed

    run_burst_worker()

    assert ocr_queue.job_ids == [f"ocr-{image.pk}"]
    run_ocr_worker()
    image.refresh_from_db()
    assert words(image.ocr_text) == ["OPEN", "SUNDAY"]
    assert image.ocr_read_at is not None
    assert image.status == Image.Status.INDEXED


@pytest.mark.django_db(transaction=True)
def test_the_vector_is_stored_and_searchable_before_ocr_runs(
    queue, run_burst_worker, ocr_queue, media_root
):
    image = ingest_image(data=sign_image("LATE NIGHT"), filename="late.png").image

    run_burst_worker()  # the encoding worker alone; no OCR worker runs

    image.refresh_from_db()
    assert image.status == Image.Status.INDEXED and image.indexed_at is not None
    assert Embedding.objects.filter(image=image).exists()
    assert image.ocr_read_at is None and image.ocr_text == ""
    (job,) = ocr_queue.jobs
    assert job.func_name == text_reading.READ_TEXT_JOB and job.args == (image.pk,)
    assert job.get_status() == "queued"
    # The encoding queue has nothing of OCR: a slow OCR job never waits in front of a vector.
    assert queue.count == 0


@pytest.mark.django_db(transaction=True)
def test_with_ocr_disabled_nothing_is_queued_and_up_runs_no_ocr_worker(
    queue, run_burst_worker, ocr_queue, media_root, settings, monkeypatch
):
    settings.OCR_ENABLED = False
    image = ingest_image(data=sign_image(), filename="shop.png").image

    run_burst_worker()

    image.refresh_from_db()
    assert image.status == Image.Status.INDEXED
    assert ocr_queue.count == 0
    assert text_reading.requeue_unread_images() == 0
    assert ocr_queue.count == 0
    with pytest.raises(CommandError, match="OCR is off"):
        call_command("reindex", "--ocr")
    assert ocr_queue.count == 0
    started = []

    def spawn(command, **_):
        started.append(command)
        return object()

    monkeypatch.setattr(supervisor, "_spawn", spawn)
    site = supervisor.start_site_processes(host="h", port=1, workers=1, web_workers=1)
    assert site.ocr_workers == []
    assert not any("OcrWorker" in " ".join(command) for command in started)


def test_up_runs_one_ocr_worker_on_the_ocr_queue_beside_the_encoding_workers(monkeypatch):
    started = []

    def spawn(command, *, env, output=None):
        started.append((command, env))
        return object()

    monkeypatch.setattr(supervisor, "_spawn", spawn)
    site = supervisor.start_site_processes(host="h", port=1, workers=2, web_workers=1)

    ocr_commands = [c for c, _ in started if "gallery.indexing.worker.OcrWorker" in c]
    encoding = [c for c, _ in started if "gallery.indexing.worker.EncodingWorker" in c]
    assert len(ocr_commands) == 1 and len(encoding) == 2
    (command,) = ocr_commands
    assert command[command.index("rqworker") + 1] == "ocr" and "--with-scheduler" in command
    assert "ocr" not in encoding[0]
    assert len(site.ocr_workers) == 1 and len(site.children) == 4
    # Background work: the OCR worker counts as one more worker in the share of the cores.
    (ocr_env,) = [env for c, env in started if c is command]
    assert ocr_env["ENCODER_THREADS"] == supervisor.thread_budget(3)["ENCODER_THREADS"]


@pytest.mark.django_db(transaction=True)
def test_an_image_without_text_stores_empty_text_from_the_detector_alone(media_root, monkeypatch):
    image = ingest_image(data=textless_image(), filename="sky.jpg", enqueue=False).image
    reader = ocr.text_reader()
    recognised = []  # what the recogniser was asked to read: nothing, on a text-free image
    recognise = reader.engine.text_rec

    def counting_recogniser(crops, *args, **kwargs):
        recognised.extend(crops)
        return recognise(crops, *args, **kwargs)

    monkeypatch.setattr(reader.engine, "text_rec", counting_recogniser)

    assert text_reading.read_image_text(image_id=image.pk) == ""
    image.refresh_from_db()
    assert image.ocr_text == "" and image.ocr_read_at is not None
    reading = ocr.read_text(image.preview.path)
    assert reading.boxes == 0 and reading.recognise_seconds == 0
    assert recognised == []
    assert reading.detect_seconds < 5


@pytest.mark.django_db(transaction=True)
def test_reindex_ocr_queues_indexed_images_not_read_yet(ocr_queue, media_root, capsys):
    from gallery.indexing import encoding

    ids = [
        ingest_image(data=image_bytes(pattern=n), filename=f"{n}.png", enqueue=False).image.pk
        for n in range(1, 5)
    ]
    encoding.encode_images(ids[:3])  # the fourth stays pending
    ocr_queue.empty()  # as if these were indexed before OCR existed
    text_reading.store_image_text(image_id=ids[0], text="already read")

    call_command("reindex", "--ocr")

    assert sorted(ocr_queue.job_ids) == sorted(f"ocr-{pk}" for pk in ids[1:3])
    output = capsys.readouterr().out
    assert "Queued 2 image(s) for reading their text (OCR)." in output
    assert "text read in 1 of 3 indexed images" in output and "2 OCR jobs in the queue" in output

    call_command("reindex", "--ocr", "--all")  # rereads every one; queued ones are not doubled
    assert sorted(ocr_queue.job_ids) == sorted(f"ocr-{pk}" for pk in ids[:3])


@pytest.mark.django_db(transaction=True)
def test_requeue_queues_unread_images_that_no_live_job_holds(ocr_queue, media_root):
    from gallery.indexing import encoding

    ids = [
        ingest_image(data=image_bytes(pattern=n), filename=f"{n}.png", enqueue=False).image.pk
        for n in range(1, 4)
    ]
    encoding.encode_images(ids)
    assert ocr_queue.count == 3  # queued after the batch committed
    assert text_reading.requeue_unread_images() == 0  # each one has its waiting job
    ocr_queue.empty()  # the jobs are lost (Redis emptied)
    assert text_reading.requeue_unread_images() == 3
    assert text_reading.requeue_unread_images() == 0
    assert ocr_queue.count == 3
    # A round tops the queue up to its limit, never a job per image of a large library.
    ocr_queue.empty()
    assert text_reading.requeue_unread_images(limit=2) == 2
    assert text_reading.requeue_unread_images(limit=2) == 0


@pytest.mark.django_db(transaction=True)
def test_deleting_an_image_removes_its_text_and_a_late_ocr_job_does_nothing(
    queue, run_burst_worker, ocr_queue, run_ocr_worker, media_root, admin_user
):
    read = ingest_image(data=sign_image(), filename="shop.png").image
    late = ingest_image(data=sign_image("FRESH BREAD"), filename="bread.png").image
    run_burst_worker()
    ocr_queue.fetch_job(f"ocr-{late.pk}").delete()
    run_ocr_worker()
    read.refresh_from_db()
    assert words(read.ocr_text) == ["OPEN", "SUNDAY"]

    lifecycle.delete_images(images=[read], by=admin_user)
    assert not Image.objects.filter(ocr_text__contains="SUNDAY").exists()

    # OCR of the other image is queued, then the image is deleted before the job runs.
    text_reading.queue_reading([late.pk])
    lifecycle.delete_images(images=[late], by=admin_user)
    (job,) = ocr_queue.jobs
    run_ocr_worker()
    job.refresh()
    assert job.get_status() == "finished" and job.return_value() is None
    assert not Image.objects.exists()


@pytest.mark.django_db
def test_the_image_page_and_the_api_show_the_text_in_the_image(admin_client, media_root):
    image = ingest_image(data=image_bytes(pattern=3), filename="a.png", enqueue=False).image
    text_reading.store_image_text(image_id=image.pk, text="OPEN SUNDAY\n9 to 5")

    page = admin_client.get(f"/images/{image.pk}/").content.decode()
    assert "Text in the image" in page
    assert "OPEN SUNDAY<br>9 to 5" in page

    answer = admin_client.get(f"/api/v1/images/{image.pk}").json()
    assert answer["ocr_text"] == "OPEN SUNDAY\n9 to 5"


@pytest.mark.django_db
def test_the_image_page_says_nothing_of_text_when_none_was_found(admin_client, media_root):
    image = ingest_image(data=image_bytes(pattern=4), filename="b.png", enqueue=False).image
    text_reading.store_image_text(image_id=image.pk, text="")
    assert "Text in the image" not in admin_client.get(f"/images/{image.pk}/").content.decode()


def test_the_ocr_model_is_imported_by_the_ocr_module_alone():
    """Like open_clip in the encoder modules: nothing else imports rapidocr or OpenCV."""
    import pathlib

    gallery = pathlib.Path(ocr.__file__).resolve().parents[1]
    importers = [
        path.relative_to(gallery).as_posix()
        for path in gallery.rglob("*.py")
        if "import rapidocr" in path.read_text() or "import cv2" in path.read_text()
    ]
    assert importers == ["indexing/ocr.py"]


def test_compose_runs_a_dedicated_ocr_worker_on_the_ocr_queue():
    import pathlib

    import yaml

    compose = yaml.safe_load(
        (pathlib.Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text()
    )
    services = compose["services"]
    worker = services["ocr-worker"]
    command = " ".join(worker["command"])
    assert "rqworker ${OCR_QUEUE:-ocr}" in command and "OcrWorker" in command
    assert "OcrWorker" not in " ".join(services["worker"]["command"])
    for name in ("web", "worker", "ocr-worker"):
        assert services[name]["environment"]["OCR_QUEUE"] == "${OCR_QUEUE:-ocr}"
        assert services[name]["environment"]["OCR_ENABLED"] == "${OCR_ENABLED:-1}"
    assert "media:/data/media" in worker["volumes"] and "ports" not in worker

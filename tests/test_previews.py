"""Previews: made at upload from the pixels validation decoded, encoded by the worker instead of
the original, made by the worker for images that lack one, never made by enlarging."""

import io
import os

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageOps

from gallery.indexing import encoding, queueing
from gallery.library.ingest import ingest_image
from gallery.models import Image
from tests.conftest import active_encoder, active_vector
from tests.images import image_bytes
from tests.test_models import LARGE, switch_to

pytestmark = pytest.mark.django_db(transaction=True)

ORIENTATION = 0x0112
ROTATED_90 = 6  # the camera was held upright: viewers turn the stored pixels 90 degrees


def photo_bytes(size=(3000, 2000), *, orientation=None, seed=1) -> bytes:
    """A camera-sized JPEG: red left half, blue right half as stored, green set by the seed."""
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 0, 30)
    pixels[:, width // 2 :] = (30, 0, 220)
    pixels[..., 1] = seed * 40 % 256
    exif = PILImage.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def add(data: bytes, name: str = "photo.jpg") -> Image:
    result = ingest_image(data=data, filename=name, enqueue=False)
    assert result.ok, result.error
    return result.image


def index(run_burst_worker, *images) -> None:
    queueing.enqueue_now([image.pk for image in images])
    run_burst_worker()
    for image in images:
        image.refresh_from_db()


def encoded_from(path) -> np.ndarray:
    """The vector the worker makes when it reads this file."""
    clip = active_encoder()
    return clip.encode_pixels(clip.prepare_image_files([path]))[0]


def upright(data: bytes) -> PILImage.Image:
    return ImageOps.exif_transpose(PILImage.open(io.BytesIO(data))).convert("RGB")


def test_a_large_photo_gets_an_upright_preview_at_upload(media_root):
    data = photo_bytes(orientation=ROTATED_90)
    image = add(data)
    assert (image.width, image.height) == (2000, 3000)
    assert image.preview.name == f"previews/{image.sha256[:2]}/{image.sha256}-512.jpg"
    with PILImage.open(image.preview.path) as preview:
        assert preview.format == "JPEG" and preview.mode == "RGB"
        assert preview.size == (512, 768)  # shortest side PREVIEW_SIZE, turned upright
        # Already upright, so no viewer (nor the worker) turns it a second time.
        assert ORIENTATION not in preview.getexif()
        expected = np.asarray(upright(data).resize(preview.size), dtype=np.int16)
        difference = np.abs(np.asarray(preview, dtype=np.int16) - expected)
    assert difference.mean() < 4


def test_the_worker_encodes_the_preview_not_the_original(media_root, queue, run_burst_worker):
    image = add(photo_bytes(orientation=ROTATED_90))
    os.remove(image.file.path)  # only the preview can still be read

    index(run_burst_worker, image)

    assert image.status == Image.Status.INDEXED, image.status_error
    np.testing.assert_allclose(active_vector(image), encoded_from(image.preview.path), atol=1e-5)


def test_a_model_switch_encodes_the_same_preview(media_root, queue, run_burst_worker, settings):
    image = add(photo_bytes(seed=2))
    index(run_burst_worker, image)
    preview = image.preview.name
    os.remove(image.file.path)

    large = switch_to(LARGE, settings, queue)

    image.refresh_from_db()
    assert image.status == Image.Status.INDEXED and image.embeddings.filter(model=large).exists()
    assert image.preview.name == preview
    np.testing.assert_allclose(active_vector(image), encoded_from(image.preview.path), atol=1e-5)


def test_an_image_stored_before_previews_gets_one_from_the_worker(
    media_root, queue, run_burst_worker
):
    image = add(photo_bytes(orientation=ROTATED_90, seed=3))
    os.remove(image.preview.path)  # as an install from before previews left it
    Image.objects.filter(pk=image.pk).update(preview=None)

    index(run_burst_worker, image)

    assert image.status == Image.Status.INDEXED, image.status_error
    assert image.preview.name == f"previews/{image.sha256[:2]}/{image.sha256}-512.jpg"
    with PILImage.open(image.preview.path) as preview:
        assert preview.size == (512, 768)
    vector = active_vector(image)
    np.testing.assert_allclose(vector, encoded_from(image.preview.path), atol=1e-5)
    # From now on the preview serves every encoding: the original is no longer read.
    os.remove(image.file.path)
    assert encoding.encode_images([image.pk], force=True)["indexed"] == 1
    np.testing.assert_allclose(active_vector(image), vector, atol=1e-5)


def test_a_preview_too_small_for_the_model_is_replaced_by_one_of_twice_its_input(
    media_root, queue, run_burst_worker, settings
):
    settings.PREVIEW_SIZE = 100  # the test model's input is 64 px: it needs 128
    image = add(photo_bytes(seed=4))
    small_preview = image.preview.path
    assert image.preview.name.endswith("-100.jpg")

    index(run_burst_worker, image)

    assert image.status == Image.Status.INDEXED, image.status_error
    assert image.preview.name == f"previews/{image.sha256[:2]}/{image.sha256}-128.jpg"
    with PILImage.open(image.preview.path) as preview:
        assert preview.size == (192, 128)
    assert not os.path.exists(small_preview)
    np.testing.assert_allclose(active_vector(image), encoded_from(image.preview.path), atol=1e-5)


@pytest.mark.parametrize("kept", [40, 0.5], ids=["header-lost", "pixels-lost"])
def test_a_damaged_preview_is_made_again_and_does_not_fail_the_image(
    kept, media_root, queue, run_burst_worker
):
    image = add(photo_bytes(seed=5))
    size = os.path.getsize(image.preview.path)
    with open(image.preview.path, "r+b") as damaged:
        damaged.truncate(kept if kept >= 1 else int(size * kept))

    index(run_burst_worker, image)

    assert image.status == Image.Status.INDEXED, image.status_error
    assert os.path.getsize(image.preview.path) == size
    with PILImage.open(image.preview.path) as preview:
        preview.load()
        assert preview.size == (768, 512)
    np.testing.assert_allclose(active_vector(image), encoded_from(image.preview.path), atol=1e-5)


def test_an_unreadable_original_without_preview_fails_alone(media_root, queue, run_burst_worker):
    broken, fine = add(photo_bytes(seed=6), "a.jpg"), add(photo_bytes(seed=7), "b.jpg")
    for image in (broken, fine):
        os.remove(image.preview.path)
    Image.objects.update(preview=None)
    with open(broken.file.path, "r+b") as damaged:
        damaged.truncate(4000)

    index(run_burst_worker, broken, fine)

    assert broken.status == Image.Status.FAILED
    assert "Could not read the image file" in broken.status_error
    assert not broken.preview and not broken.embeddings.exists()
    assert fine.status == Image.Status.INDEXED and fine.preview


def test_a_photo_smaller_than_the_preview_size_is_encoded_from_its_original(
    media_root, queue, run_burst_worker
):
    image = add(image_bytes(size=(300, 200), pattern=3), "small.png")
    assert not image.preview  # a preview would only be a lossy copy of it

    index(run_burst_worker, image)

    assert image.status == Image.Status.INDEXED, image.status_error
    assert not image.preview
    assert not (media_root / "previews").exists()
    np.testing.assert_allclose(active_vector(image), encoded_from(image.file.path), atol=1e-5)

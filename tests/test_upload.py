"""Uploading through the web page: per-file results, bad input refused cleanly, de-duplication."""

import io
import os
from datetime import UTC, datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from gallery.models import Image, Tag
from tests.images import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def uploader(client, django_user_model):
    user = django_user_model.objects.create_user("ana", password="a-long-password-1")
    client.force_login(user)
    return client


def upload(client, *files, json=True, **fields):
    uploaded = [SimpleUploadedFile(name, data) for name, data in files]
    headers = {"HTTP_ACCEPT": "application/json"} if json else {}
    return client.post(reverse("upload"), {"files": uploaded, **fields}, **headers)


def stored_files(media_root) -> list[str]:
    if not media_root.exists():
        return []
    return sorted(
        os.path.relpath(os.path.join(folder, name), media_root)
        for folder, _, names in os.walk(media_root)
        for name in names
    )


def truncated_jpeg() -> bytes:
    data = image_bytes(size=(640, 480), fmt="JPEG", pattern=3, quality=95)
    return data[: len(data) // 2]


def png_bomb() -> bytes:
    # A 1-bit 12000 x 12000 PNG: a few kilobytes that decode to 144 megapixels.
    buffer = io.BytesIO()
    PILImage.new("1", (12000, 12000)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'


def test_upload_page_requires_login(client):
    response = client.get(reverse("upload"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_mixed_batch_stores_good_files_and_explains_each_rejection(
    uploader, media_root, queue, settings
):
    settings.MAX_UPLOAD_BYTES = 400_000
    settings.MAX_IMAGE_PIXELS = 50_000_000
    huge = image_bytes(size=(1200, 1200), fmt="BMP")  # 4.3 MB, over the 400 kB limit
    files = [
        ("good.png", image_bytes(pattern=1)),
        ("truncated.jpg", truncated_jpeg()),
        ("random.jpg", os.urandom(5000)),
        ("bomb.png", png_bomb()),
        ("drawing.svg", SVG),
        ("empty.jpg", b""),
        ("huge.bmp", huge),
        ("good.jpg", image_bytes(fmt="JPEG", pattern=2)),
    ]
    response = upload(uploader, *files, tags="holiday, Beach")
    assert response.status_code == 200
    results = {result["filename"]: result for result in response.json()["results"]}
    assert results["good.png"]["ok"] and results["good.png"]["created"]
    assert results["good.jpg"]["ok"]
    errors = {name: result["error"] for name, result in results.items() if not result["ok"]}
    assert "corrupt or truncated" in errors["truncated.jpg"]
    assert "not an image file" in errors["random.jpg"]
    assert "too many pixels" in errors["bomb.png"] and "144 megapixels" in errors["bomb.png"]
    assert "SVG is a vector drawing format" in errors["drawing.svg"]
    assert errors["empty.jpg"] == "The file is empty (0 bytes)."
    assert errors["huge.bmp"] == "The file is too large: the limit is 390.6 KiB."
    assert len(errors) == 6
    # Only the two good images left rows and files (an original and a thumbnail each).
    assert Image.objects.count() == 2
    assert len(stored_files(media_root)) == 4
    assert {tag.name for tag in Tag.objects.all()} == {"holiday", "Beach"}
    image = Image.objects.get(original_filename="good.png")
    assert {tag.name for tag in image.tags.all()} == {"holiday", "Beach"}
    assert image.status == Image.Status.PENDING and image.queued_at is not None
    assert queue.count == 2


def test_file_larger_than_the_limit_is_refused_while_streaming(uploader, media_root, settings):
    settings.MAX_UPLOAD_BYTES = 100_000
    response = upload(uploader, ("big.png", b"\x89PNG" + os.urandom(300_000)))
    (result,) = response.json()["results"]
    assert not result["ok"] and "too large" in result["error"]
    assert Image.objects.count() == 0 and stored_files(media_root) == []


def test_original_is_named_by_content_hash_and_thumbnail_is_small_webp(uploader, media_root):
    data = image_bytes(size=(1600, 900), fmt="JPEG", pattern=4)
    upload(uploader, ("../../etc/My Holiday.JPG", data))
    image = Image.objects.get()
    assert image.file.name == f"originals/{image.sha256[:2]}/{image.sha256}.jpg"
    assert image.original_filename == "My Holiday.JPG"
    assert (image.width, image.height, image.format) == (1600, 900, "JPEG")
    assert image.byte_size == len(data)
    with PILImage.open(image.thumbnail.path) as thumbnail:
        assert thumbnail.format == "WEBP" and max(thumbnail.size) == 320


def test_lying_extension_is_stored_by_its_real_format_with_a_note(uploader, media_root):
    response = upload(uploader, ("photo.jpg", image_bytes(fmt="PNG", pattern=5)))
    (result,) = response.json()["results"]
    assert result["ok"]
    assert "file name says JPEG but the content is PNG" in result["notes"][0]
    assert Image.objects.get().file.name.endswith(".png")


def test_same_content_again_returns_the_existing_image_and_merges_tags(uploader, media_root):
    data = image_bytes(pattern=6)
    first = upload(uploader, ("a.png", data), tags="cat").json()["results"][0]
    second = upload(uploader, ("renamed copy.png", data), tags="Cat, sofa").json()["results"][0]
    assert second["ok"] and not second["created"]
    assert second["image"]["id"] == first["image"]["id"]
    assert "Already in the library" in second["notes"][0]
    assert Image.objects.count() == 1 and len(stored_files(media_root)) == 2
    assert sorted(tag.name for tag in Image.objects.get().tags.all()) == ["cat", "sofa"]


def test_exif_date_becomes_taken_at_and_orientation_is_applied(uploader, media_root):
    exif = PILImage.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees
    exif.get_ifd(0x8769)[36867] = "2019:07:14 16:45:10"
    exif.get_ifd(0x8769)[36881] = "+02:00"
    upload(uploader, ("rotated.jpg", image_bytes(size=(400, 200), fmt="JPEG", exif=exif)))
    image = Image.objects.get()
    assert image.taken_at == datetime.fromisoformat("2019-07-14T16:45:10+02:00")
    assert (image.width, image.height) == (200, 400)
    with PILImage.open(image.thumbnail.path) as thumbnail:
        assert thumbnail.height > thumbnail.width


def test_without_exif_date_taken_at_is_the_upload_time(uploader, media_root):
    upload(uploader, ("plain.png", image_bytes(pattern=7)))
    image = Image.objects.get()
    assert abs((image.taken_at - image.uploaded_at).total_seconds()) < 5


def test_page_without_javascript_lists_each_result(uploader, media_root):
    response = upload(
        uploader, ("ok.png", image_bytes(pattern=8)), ("bad.jpg", b"nope"), json=False
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "ok.png" in page and "Uploaded; indexing pending." in page
    assert "bad.jpg" in page and "not an image file" in page


def test_no_files_is_a_form_error(uploader):
    response = upload(uploader)
    assert response.status_code == 400
    assert "Choose at least one image" in str(response.json()["errors"])


def test_gallery_shows_images_with_status_and_tags(uploader, media_root, client):
    upload(uploader, ("shown.png", image_bytes(pattern=9)), tags="mountains", caption="Alps")
    page = client.get(reverse("gallery")).content.decode()
    assert "Alps" in page and "mountains" in page and "Pending" in page


def test_16_bit_grayscale_keeps_its_gradient_in_thumbnail_and_vector(uploader, media_root):
    import numpy as np

    from gallery.pixels import open_upright

    ramp = np.tile(np.linspace(0, 65535, 256), (128, 1)).astype(np.uint16)
    buffer = io.BytesIO()
    PILImage.fromarray(ramp).save(buffer, "PNG")  # mode I;16, as scanners write
    upload(uploader, ("scan.png", buffer.getvalue()))
    image = Image.objects.get()
    with PILImage.open(image.thumbnail.path) as thumbnail:
        pixels = np.asarray(thumbnail.convert("L"), dtype=np.float64)
    # Clipped at 255 it was a white square; scaled, it runs from black to white.
    assert pixels.min() < 20 and pixels.max() > 235 and pixels.std() > 50
    for_model = np.asarray(open_upright(image.file.path, 64))
    assert for_model.std() > 50


def test_exif_date_written_in_ifd0_is_read(uploader, media_root):
    exif = PILImage.Exif()
    exif[36867] = "2018:03:02 10:20:30"  # DateTimeOriginal in IFD0, not the Exif sub-IFD
    upload(uploader, ("edited.jpg", image_bytes(fmt="JPEG", exif=exif)))
    image = Image.objects.get()
    assert image.taken_on.isoformat() == "2018-03-02"
    assert image.taken_at.replace(tzinfo=None) == datetime(2018, 3, 2, 10, 20, 30)


def test_a_photo_after_local_midnight_is_on_its_own_day(
    uploader, client, media_root, queue, run_burst_worker, settings
):
    settings.TIME_ZONE = "UTC"
    exif = PILImage.Exif()
    exif.get_ifd(0x8769)[36867] = "2023:06:05 01:00:00"  # 4 June 23:00 in UTC
    exif.get_ifd(0x8769)[36881] = "+02:00"
    upload(uploader, ("night.jpg", image_bytes(fmt="JPEG", exif=exif, pattern=3)))
    run_burst_worker()
    image = Image.objects.get()
    assert image.taken_at.astimezone(UTC).date().isoformat() == "2023-06-04"
    assert image.taken_on.isoformat() == "2023-06-05"

    def found(**dates) -> list[int]:
        response = client.get(reverse("api_search"), {"q": "night", **dates})
        return [hit["id"] for hit in response.json()["results"]]

    assert found(after="2023-06-05", before="2023-06-05") == [image.pk]
    assert found(before="2023-06-04") == []
    assert found(after="2023-06-06") == []
    hit = client.get(reverse("api_search"), {"q": "night"}).json()["results"][0]
    assert hit["taken_on"] == "2023-06-05"
    assert "2023-06-05" in client.get(reverse("image_detail", args=[image.pk])).content.decode()


def test_sizes_are_worded_in_one_unit_rounded_for_people(settings):
    from gallery.library import validation

    settings.MAX_UPLOAD_BYTES = 25 * 1024 * 1024
    assert validation.size_message(27_600_000) == (
        "The file is too large (26.3 MiB); the limit is 25 MiB."
    )

"""HEIC/HEIF (the iPhone's format) and AVIF come in like JPEG: by upload, folder import and as a
query image, with their EXIF date and orientation, upright thumbnails and previews, a vector."""

import io
import os
import subprocess
import sys
from datetime import datetime

import pillow_heif
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from PIL import Image as PILImage

from gallery.indexing import encoding
from gallery.library.ingest import ingest_image
from gallery.models import Image
from tests.conftest import active_vector
from tests.images import distinct_images
from tests.test_upload import stored_files, upload

pytestmark = pytest.mark.django_db(transaction=True)

RED, BLUE = (255, 0, 0), (0, 0, 255)
EXIF_ORIENTATION, EXIF_IFD, GPS_IFD = 0x0112, 0x8769, 0x8825


@pytest.fixture
def uploader(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("iris", password="a-long-password-2"))
    return client


def corner_marked(size=(1200, 800)) -> PILImage.Image:
    """Blue with a red top-left corner: any rotation or mirroring moves the red."""
    image = PILImage.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 4, size[1] // 4))
    return image


def phone_exif() -> PILImage.Exif:
    """Taken on 14 July 2019 at 16:45:10 in UTC+2, held sideways (orientation 6), with GPS."""
    exif = PILImage.Exif()
    exif[EXIF_ORIENTATION] = 6  # shown turned 90 degrees clockwise
    exif.get_ifd(EXIF_IFD)[36867] = "2019:07:14 16:45:10"  # DateTimeOriginal
    exif.get_ifd(EXIF_IFD)[36881] = "+02:00"  # OffsetTimeOriginal
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 1.0)})
    return exif


def heic_bytes(image: PILImage.Image, exif: PILImage.Exif | None = None) -> bytes:
    # pillow-heif's own API, not Pillow's registry: the site must register the opener itself.
    options = {"exif": exif.tobytes()} if exif is not None else {}
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=90, **options)
    return buffer.getvalue()


def avif_bytes(image: PILImage.Image, exif: PILImage.Exif | None = None) -> bytes:
    # As bytes: Pillow's AVIF writer drops the sub-IFDs (the date) of an Exif object.
    options = {"exif": exif.tobytes()} if exif is not None else {}
    buffer = io.BytesIO()
    image.save(buffer, "AVIF", quality=90, **options)
    return buffer.getvalue()


def is_red(pixel) -> bool:
    return pixel[0] > 200 and pixel[2] < 60


def is_blue(pixel) -> bool:
    return pixel[2] > 200 and pixel[0] < 60


def assert_upright_portrait(path) -> None:
    """The corner-marked landscape turned clockwise: portrait, red in the top-right corner."""
    with PILImage.open(path) as picture:
        picture = picture.convert("RGB")
        width, height = picture.size
        assert height > width
        assert is_red(picture.getpixel((width - 5, 5)))
        assert is_blue(picture.getpixel((5, 5)))
        assert is_blue(picture.getpixel((width - 5, height - 5)))
        assert is_blue(picture.getpixel((5, height - 5)))


def test_heic_upload_keeps_date_and_orientation_and_is_indexed(
    uploader,
    media_root,
    queue,
    run_burst_worker,
):
    data = heic_bytes(corner_marked(), phone_exif())
    response = upload(uploader, ("IMG_0001.HEIC", data))
    (result,) = response.json()["results"]
    assert result["ok"] and result["created"] and result["notes"] == []
    image = Image.objects.get()
    assert image.format == "HEIF"
    assert image.file.name == f"originals/{image.sha256[:2]}/{image.sha256}.heic"
    assert image.taken_at == datetime.fromisoformat("2019-07-14T16:45:10+02:00")
    assert image.taken_on.isoformat() == "2019-07-14"
    assert (image.width, image.height) == (800, 1200)
    assert_upright_portrait(image.thumbnail.path)
    assert_upright_portrait(image.preview.path)
    with PILImage.open(image.preview.path) as preview:
        assert preview.format == "JPEG" and preview.size == (512, 768)
    # The original is the uploaded file, byte for byte: its EXIF, GPS included, is kept.
    with open(image.file.path, "rb") as original:
        assert original.read() == data
    with PILImage.open(image.file.path) as original:
        assert original.getexif().get_ifd(GPS_IFD)[1] == "N"
    for copy in (image.thumbnail.path, image.preview.path):
        with PILImage.open(copy) as small:
            assert not small.getexif()  # no location in what pages show

    run_burst_worker()
    image.refresh_from_db()
    assert image.status == Image.Status.INDEXED, image.status_error
    assert active_vector(image).shape[0] > 0


def test_small_heic_without_preview_is_encoded_from_the_original_by_the_worker(
    uploader,
    media_root,
    queue,
    run_burst_worker,
):
    upload(uploader, ("small.heic", heic_bytes(corner_marked((300, 200)), phone_exif())))
    image = Image.objects.get()
    assert not image.preview  # not larger than PREVIEW_SIZE: the worker decodes the HEIC
    assert (image.width, image.height) == (200, 300)
    assert_upright_portrait(image.thumbnail.path)
    run_burst_worker()
    image.refresh_from_db()
    assert image.status == Image.Status.INDEXED, image.status_error


def test_avif_upload_keeps_date_and_orientation(uploader, media_root):
    data = avif_bytes(corner_marked(), phone_exif())
    (result,) = upload(uploader, ("photo.avif", data)).json()["results"]
    assert result["ok"] and result["notes"] == []
    image = Image.objects.get()
    assert image.format == "AVIF" and image.file.name.endswith(".avif")
    assert image.taken_at == datetime.fromisoformat("2019-07-14T16:45:10+02:00")
    assert (image.width, image.height) == (800, 1200)
    assert_upright_portrait(image.thumbnail.path)
    assert_upright_portrait(image.preview.path)


def test_heic_detail_page_shows_the_preview_and_links_the_original(
    uploader,
    media_root,
):
    upload(uploader, ("IMG_0002.heic", heic_bytes(corner_marked())))
    image = Image.objects.get()
    page = uploader.get(reverse("image_detail", args=[image.pk])).content.decode()
    # Only Safari shows HEIC in an <img>.
    assert f'<img src="{image.preview.url}"' in page
    assert f'<a href="{image.file.url}">' in page


def test_corrupt_heic_is_refused_with_a_reason_and_leaves_nothing(
    uploader,
    media_root,
    queue,
):
    whole = heic_bytes(PILImage.effect_noise((640, 480), 64).convert("RGB"))
    files = [
        ("truncated.heic", whole[: len(whole) // 2]),
        ("damaged.heic", whole[:40] + os.urandom(3000)),
        ("random.heic", os.urandom(5000)),
    ]
    results = {r["filename"]: r for r in upload(uploader, *files).json()["results"]}
    assert not any(result["ok"] for result in results.values())
    assert results["truncated.heic"]["error"].startswith(
        "The image is corrupt or truncated and cannot be decoded ("
    )
    assert results["damaged.heic"]["error"] == (
        "The image is corrupt or truncated: it starts as HEIC but cannot be read."
    )
    assert "not an image file" in results["random.heic"]["error"]
    assert Image.objects.count() == 0 and stored_files(media_root) == []
    assert queue.count == 0


def test_truncated_avif_is_called_corrupt(uploader, media_root):
    whole = avif_bytes(PILImage.effect_noise((640, 480), 64).convert("RGB"))
    (result,) = upload(uploader, ("cut.avif", whole[: len(whole) // 2])).json()["results"]
    assert result["error"] == (
        "The image is corrupt or truncated: it starts as AVIF but cannot be read."
    )
    assert stored_files(media_root) == []


def test_import_images_picks_up_heic_and_avif_files(tmp_path, media_root, queue):
    folder = tmp_path / "phone"
    folder.mkdir()
    (folder / "IMG_0003.HEIC").write_bytes(heic_bytes(corner_marked(), phone_exif()))
    (folder / "IMG_0004.heif").write_bytes(heic_bytes(corner_marked((640, 480))))
    (folder / "IMG_0005.avif").write_bytes(avif_bytes(corner_marked((700, 500))))
    (folder / "broken.heic").write_bytes(b"not a photo at all")
    out = io.StringIO()
    call_command("import_images", str(folder), stdout=out, stderr=io.StringIO())
    assert "Imported 3, duplicates 0, rejected 1 (of 4 image files)." in out.getvalue()
    assert sorted(Image.objects.values_list("format", flat=True)) == ["AVIF", "HEIF", "HEIF"]
    taken = Image.objects.get(original_filename="IMG_0003.HEIC").taken_at
    assert taken == datetime.fromisoformat("2019-07-14T16:45:10+02:00")


def test_heic_query_image_finds_the_same_photo(uploader, media_root):
    for n, data in enumerate(distinct_images(5)):
        ingest_image(data=data, filename=f"other{n}.png", enqueue=False)
    data = heic_bytes(corner_marked((300, 200)))
    target = ingest_image(data=data, filename="target.heic", enqueue=False).image
    encoding.encode_images(list(Image.objects.values_list("pk", flat=True)))
    response = uploader.post(
        reverse("api_search"), {"image": SimpleUploadedFile("query.heic", data)}
    )
    assert response.status_code == 200, response.content
    best = response.json()["results"][0]
    assert best["id"] == target.pk and best["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_process_that_sets_django_up_opens_heic(tmp_path):
    """Web processes, workers and commands all set Django up before they decode anything."""
    photo = tmp_path / "photo.heic"
    photo.write_bytes(heic_bytes(corner_marked((64, 48))))
    script = (
        "import sys, django\n"
        "from django.conf import settings\n"
        "from PIL import Image\n"
        "settings.configure(INSTALLED_APPS=["
        "'django.contrib.auth', 'django.contrib.contenttypes', 'gallery'])\n"
        "django.setup()\n"
        "with Image.open(sys.argv[1]) as image:\n"
        "    image.load()\n"
        "    print(image.format, *image.size)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(photo)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["HEIF", "64", "48"]

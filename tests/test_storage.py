"""Files on disk and rows agree: a full disk refuses an upload cleanly, and identical uploads
at the same moment leave one row and no file without one."""

import io
import os
import subprocess
import threading
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse
from PIL import Image as PILImage

from gallery.library.ingest import ingest_image
from gallery.models import Image
from tests.images import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def referenced_files() -> set[str]:
    names = set()
    for image in Image.objects.all():
        names |= {image.file.name, image.thumbnail.name}
        if image.preview:
            names.add(image.preview.name)
    return names


def noise_png(size: int = 400) -> bytes:
    """A PNG that does not compress: about 3 bytes a pixel."""
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def small_media_volume(settings, tmp_path):
    """MEDIA_ROOT on a real 2 MB filesystem (a tmpfs), as a nearly full volume would be."""
    mount_point = tmp_path / "media"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"this machine cannot mount a tmpfs here: {mounted.stderr.strip()}")
    settings.MEDIA_ROOT = mount_point
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_an_upload_to_a_full_volume_is_refused_leaving_no_row_and_no_file(
    small_media_volume, client, django_user_model
):
    user = django_user_model.objects.create_user("fay", password="long-password-3")
    client.force_login(user)
    filler = small_media_volume / "filler.bin"
    filler.write_bytes(b"\0" * (2 * 1024 * 1024 - 200 * 1024))  # ~200 KB left
    big = noise_png(400)  # ~480 KB: more than is left
    assert len(big) > 300 * 1024
    response = client.post(
        reverse("upload"),
        {"files": [SimpleUploadedFile("big.png", big)], "caption": "too big for the disk"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert not result["ok"] and "storage is full" in result["error"]
    assert not Image.objects.filter(caption="too big for the disk").exists()
    assert files_under(small_media_volume) == ["filler.bin"]  # no partial, no temporary file
    # The site keeps answering searches meanwhile.
    assert client.get(reverse("api_v1:search"), {"q": "photo"}).status_code == 200
    # Once there is room again, the same file is stored.
    filler.unlink()
    again = ingest_image(data=big, filename="big.png", enqueue=False)
    assert again.ok and again.created
    assert set(files_under(small_media_volume)) == referenced_files()


def test_four_identical_uploads_at_once_leave_one_row_and_no_file_without_a_row(media_root):
    for round_number in range(10):
        data = image_bytes(pattern=300 + round_number, size=(300, 300))
        start = threading.Barrier(4)
        results, errors = [], []

        def upload(data=data, start=start, results=results, errors=errors):
            try:
                start.wait()
                results.append(ingest_image(data=data, filename="same.png", enqueue=False))
            except Exception as error:  # reported below, with the round
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=upload) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == [], round_number
        assert len({result.image.pk for result in results}) == 1, round_number
        assert sum(result.created for result in results) == 1, round_number
        assert Image.objects.filter(original_filename="same.png").count() == round_number + 1
        assert set(files_under(Path(media_root))) == referenced_files(), round_number

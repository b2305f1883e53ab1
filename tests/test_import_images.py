"""`import_images`: a folder becomes images once; copies are recognised; the summary is honest."""

import shutil

import pytest
from django.core.management import CommandError, call_command

from gallery.models import Image
from tests.images import distinct_images

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "2021" / "summer").mkdir(parents=True)
    first, second, third = distinct_images(3, fmt="JPEG")
    (folder / "a.jpg").write_bytes(first)
    (folder / "b.png").write_bytes(distinct_images(4)[3])
    (folder / "notes.txt").write_text("not an image, not even looked at")
    (folder / "broken.jpg").write_bytes(b"definitely not a jpeg")
    (folder / "2021" / "c.jpg").write_bytes(second)
    (folder / "2021" / "summer" / "d.jpeg").write_bytes(third)
    # The same photo again under another name: must not be imported twice.
    shutil.copy(folder / "a.jpg", folder / "2021" / "summer" / "copy of a.jpg")
    return folder


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("import_images", *map(str, args), stdout=out, stderr=StringIO())
    return out.getvalue()


def test_recursive_import_skips_copies_reports_rejects_and_queues(photo_folder, media_root, queue):
    output = run(photo_folder, "--recursive", "--tag", "trip", "--tag", "2021")
    assert "Imported 4, duplicates 1, rejected 1 (of 6 image files)." in output
    assert "broken.jpg: This is not an image file" in output
    assert "Queued 4 for encoding." in output
    assert Image.objects.count() == 4
    assert all(
        sorted(tag.name for tag in image.tags.all()) == ["2021", "trip"]
        for image in Image.objects.all()
    )
    assert queue.count == 1  # one batch of four


def test_importing_again_imports_nothing(photo_folder, media_root, queue):
    run(photo_folder, "--recursive")
    output = run(photo_folder, "--recursive")
    assert "Imported 0, duplicates 5, rejected 1" in output
    assert Image.objects.count() == 4


def test_without_recursive_only_the_top_folder_is_read(photo_folder, media_root, queue):
    output = run(photo_folder)
    assert "Imported 2, duplicates 0, rejected 1 (of 3 image files)." in output


def test_sync_encodes_in_the_command(photo_folder, media_root, queue):
    output = run(photo_folder, "--recursive", "--sync")
    assert "Encoded 4, failed 0." in output
    assert queue.count == 0
    assert Image.objects.filter(status=Image.Status.INDEXED).count() == 4


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        run(tmp_path / "nowhere")

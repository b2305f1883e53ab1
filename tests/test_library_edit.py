"""Changing the library: who may edit, tag, retry and delete which image; deleting takes the
vectors and every file with it (even when removing a file fails at first); gallery filters."""

import datetime
import io
import logging
import os
import re
import socket
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.urls import reverse
from PIL import Image as PILImage

from gallery.indexing import encoding
from gallery.library import lifecycle
from gallery.library.ingest import ingest_image
from gallery.library.permissions import can_change_image
from gallery.models import Embedding, Image, Tag
from tests.images import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)

REMOVAL_LOGGER = "gallery.library.lifecycle"


@pytest.fixture
def people(django_user_model):
    make = django_user_model.objects.create_user
    return {
        "alice": make("alice", password="alice-long-password-1"),
        "bob": make("bob", password="bob-long-password-2"),
        "staff": make("staff", password="staff-long-password-3", is_staff=True),
    }


@pytest.fixture
def library(people, media_root):
    """Alice's three images (the first large enough to have a preview) and Bob's one, all
    indexed, so each has Embedding rows and shows in search results."""

    def add(owner, n, tag, size=(96, 64), fmt="PNG"):
        return ingest_image(
            data=image_bytes(size=size, fmt=fmt, pattern=n),
            filename=f"{owner.username}{n}.{fmt.lower()}",
            uploaded_by=owner,
            tag_names=[tag],
            caption=f"{owner.username}'s photo {n}",
            enqueue=False,
        ).image

    images = {
        "alice1": add(people["alice"], 1, "odd", size=(700, 600), fmt="JPEG"),
        "alice2": add(people["alice"], 2, "even"),
        "alice3": add(people["alice"], 3, "odd"),
        "bob1": add(people["bob"], 4, "even"),
    }
    encoding.encode_images([image.pk for image in images.values()])
    for image in images.values():
        image.refresh_from_db()
    return images


def files_of(image) -> list[Path]:
    names = [image.file.name, image.thumbnail.name] + (
        [image.preview.name] if image.preview else []
    )
    return [Path(image.file.storage.path(name)) for name in names]


def as_user(client, user):
    client.force_login(user)
    return client


def listed_ids(page: str) -> list[int]:
    """The images a gallery or search page shows, in order."""
    return [int(pk) for pk in re.findall(r'<li class="card">.*?href="/images/(\d+)/"', page, re.S)]


def snapshot(image) -> tuple:
    image = Image.objects.get(pk=image.pk)
    return image.caption, sorted(tag.name for tag in image.tags.all()), image.status


# -- who may change what ---------------------------------------------------------------------


def test_only_the_uploader_and_staff_may_change_an_image(people, library):
    from django.contrib.auth.models import AnonymousUser

    image = library["alice1"]
    assert can_change_image(people["alice"], image)
    assert can_change_image(people["staff"], image)
    assert not can_change_image(people["bob"], image)
    assert not can_change_image(AnonymousUser(), image)
    assert not can_change_image(None, image)
    people["alice"].is_active = False
    assert not can_change_image(people["alice"], image)


def test_someone_elses_image_cannot_be_edited_deleted_retried_or_tagged(client, people, library):
    target, own = library["alice1"], library["bob1"]
    Image.objects.filter(pk=target.pk).update(status=Image.Status.FAILED, status_error="broken")
    before = snapshot(target)
    as_user(client, people["bob"])

    edit = client.post(
        reverse("image_edit", args=[target.pk]), {"caption": "mine now", "tags": "stolen"}
    )
    delete = client.post(reverse("image_delete", args=[target.pk]))
    retry = client.post(reverse("image_retry", args=[target.pk]))
    # A selection with one image of someone else's changes none of them, not even Bob's own.
    bulk_delete = client.post(
        reverse("gallery_selection"), {"images": [own.pk, target.pk], "action": "delete"}
    )
    bulk_tag = client.post(
        reverse("gallery_selection"),
        {"images": [own.pk, target.pk], "action": "tag", "tags": "stolen"},
    )

    assert [r.status_code for r in (edit, delete, retry, bulk_delete, bulk_tag)] == [403] * 5
    assert "You may change only images you uploaded" in bulk_delete.content.decode()
    assert snapshot(target) == before
    assert Image.objects.filter(pk__in=[target.pk, own.pk]).count() == 2
    assert not Tag.objects.filter(name="stolen").exists()
    assert all(path.exists() for path in files_of(target) + files_of(own))
    detail = client.get(reverse("image_detail", args=[target.pk])).content.decode()
    assert 'id="edit-form"' not in detail and 'id="delete-form"' not in detail
    assert 'id="retry-form"' not in detail
    with pytest.raises(PermissionDenied):
        lifecycle.edit_image(image=target, caption="x", tags=[], by=people["bob"])
    with pytest.raises(PermissionDenied):
        lifecycle.delete_images(images=Image.objects.all(), by=people["bob"])
    assert Image.objects.count() == 4


def test_anonymous_visitors_change_nothing(client, library):
    target = library["alice2"]
    before = snapshot(target)
    for name in ("image_edit", "image_delete", "image_retry"):
        response = client.post(reverse(name, args=[target.pk]), {"caption": "x", "tags": "y"})
        assert response.status_code == 302 and "/login" in response["Location"]
    response = client.post(
        reverse("gallery_selection"), {"images": [target.pk], "action": "delete"}
    )
    assert response.status_code == 302 and "/login" in response["Location"]
    assert snapshot(target) == before
    with pytest.raises(PermissionDenied):
        lifecycle.delete_images(images=[target], by=None)
    assert Image.objects.count() == 4


def test_changing_views_answer_only_posts(client, people, library):
    as_user(client, people["alice"])
    for name in ("image_edit", "image_delete", "image_retry"):
        assert client.get(reverse(name, args=[library["alice1"].pk])).status_code == 405
    assert Image.objects.count() == 4


def test_the_uploader_sees_the_controls_and_the_page_shows_no_controls_to_others(
    client, people, library
):
    image = library["alice3"]
    page = as_user(client, people["alice"]).get(reverse("image_detail", args=[image.pk]))
    text = page.content.decode()
    # The delete form asks first (data-confirm, read by static/gallery/confirm.js: no inline
    # script under the Content-Security-Policy; tests/test_https.py clicks it in Chromium).
    assert 'id="edit-form"' in text and 'id="delete-form"' in text
    assert 'data-confirm="Delete this image?' in text
    assert 'id="retry-form"' not in text  # indexed: nothing to retry
    assert 'name="csrfmiddlewaretoken"' in text
    gallery = client.get(reverse("gallery")).content.decode()
    boxes = set(map(int, re.findall(r'name="images" value="(\d+)"', gallery)))
    assert boxes == {library[name].pk for name in ("alice1", "alice2", "alice3")}
    assert "Delete selected" in gallery and "Add tags to selected" in gallery
    staff_gallery = as_user(client, people["staff"]).get(reverse("gallery")).content.decode()
    assert len(re.findall(r'name="images" value="(\d+)"', staff_gallery)) == 4


# -- editing ---------------------------------------------------------------------------------


def test_editing_replaces_caption_and_tags_and_the_tag_filter_finds_the_image(
    client, people, library
):
    image = library["alice1"]
    as_user(client, people["alice"])
    response = client.post(
        reverse("image_edit", args=[image.pk]),
        {"caption": "  Harbour at dusk ", "tags": "Boats, harbour,  boats , evening light"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("image_detail", args=[image.pk])
    assert "Saved the caption and tags." in response.content.decode()
    assert snapshot(image)[:2] == ("Harbour at dusk", ["Boats", "evening light", "harbour"])

    assert listed_ids(client.get(reverse("gallery"), {"tag": "boats"}).content.decode()) == [
        image.pk
    ]
    odd = listed_ids(client.get(reverse("gallery"), {"tag": "odd"}).content.decode())
    assert odd == [library["alice3"].pk]  # the old tag is gone from the edited image
    found = client.get(reverse("api_search"), {"q": "harbour", "tags_all": "Evening Light"})
    assert [hit["id"] for hit in found.json()["results"]] == [image.pk]


def test_an_invalid_edit_is_shown_on_the_page_and_changes_nothing(client, people, library):
    image = library["alice2"]
    before = snapshot(image)
    as_user(client, people["alice"])
    response = client.post(
        reverse("image_edit", args=[image.pk]), {"caption": "new", "tags": "x" * 65}
    )
    assert response.status_code == 400
    assert "longer than 64" in response.content.decode()
    assert snapshot(image) == before
    with pytest.raises(lifecycle.LibraryError, match="longer than 64"):
        lifecycle.edit_image(image=image, caption="c", tags=["y" * 65], by=people["alice"])
    with pytest.raises(lifecycle.LibraryError, match="comma"):
        lifecycle.edit_image(image=image, caption="c", tags=["a,b"], by=people["alice"])
    assert snapshot(image) == before


def test_staff_can_edit_and_delete_anyones_image(client, people, library):
    image = library["bob1"]
    as_user(client, people["staff"])
    response = client.post(
        reverse("image_edit", args=[image.pk]), {"caption": "checked", "tags": "reviewed"}
    )
    assert response.status_code == 302
    assert snapshot(image)[:2] == ("checked", ["reviewed"])
    assert client.post(reverse("image_delete", args=[image.pk])).status_code == 302
    assert not Image.objects.filter(pk=image.pk).exists()
    assert not any(path.exists() for path in files_of(image))


def test_selected_images_get_the_tags_added_and_keep_theirs(client, people, library):
    chosen = [library["alice2"], library["alice3"]]
    as_user(client, people["alice"])
    response = client.post(
        reverse("gallery_selection"),
        {
            "images": [image.pk for image in chosen],
            "action": "tag",
            "tags": "trip, Trip, 2024",
            "return_to": "tag=odd&page=1&evil=https://example.org",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("gallery") + "?tag=odd&page=1"
    assert snapshot(chosen[0])[1] == ["2024", "even", "trip"]
    assert snapshot(chosen[1])[1] == ["2024", "odd", "trip"]
    assert snapshot(library["alice1"])[1] == ["odd"]
    assert lifecycle.tag_images(images=chosen, tags=["trip"], by=people["alice"]) == 2
    assert Image.objects.get(pk=chosen[0].pk).tags.filter(name="trip").count() == 1
    page = client.get(response["Location"]).content.decode()
    assert "Added trip, 2024 to 2 images." in page
    empty = client.post(reverse("gallery_selection"), {"action": "tag", "tags": "x"}, follow=True)
    assert "Select at least one image first." in empty.content.decode()
    no_tags = client.post(
        reverse("gallery_selection"), {"images": [chosen[0].pk], "action": "tag"}, follow=True
    )
    assert "Type the tags to add" in no_tags.content.decode()


# -- retrying --------------------------------------------------------------------------------


def test_retry_queues_a_failed_image_again(client, people, library, queue, run_burst_worker):
    image = library["alice3"]
    Image.objects.filter(pk=image.pk).update(
        status=Image.Status.FAILED, status_error="Could not read the image file"
    )
    Embedding.objects.filter(image=image).delete()
    as_user(client, people["alice"])
    page = client.get(reverse("image_detail", args=[image.pk])).content.decode()
    assert 'id="retry-form"' in page
    response = client.post(reverse("image_retry", args=[image.pk]), follow=True)
    assert "Queued for indexing again." in response.content.decode()
    image.refresh_from_db()
    assert (image.status, image.status_error) == (Image.Status.PENDING, "")
    (job,) = queue.get_jobs()
    assert job.func_name == "gallery.indexing.tasks.encode_images_job"
    assert job.args[0] == [image.pk]
    run_burst_worker()
    image.refresh_from_db()
    assert image.status == Image.Status.INDEXED and image.embeddings.exists()
    again = client.post(reverse("image_retry", args=[image.pk]), follow=True)
    assert "nothing to retry" in again.content.decode()
    assert queue.count == 0


# -- deleting --------------------------------------------------------------------------------


def test_deleting_removes_the_row_its_vectors_every_file_and_its_search_results(
    client, people, library, media_root
):
    image = library["alice1"]
    assert image.preview  # a large original: original, thumbnail and preview
    paths = files_of(image)
    # A preview made for another model (another side) is the image's too.
    stray = Path(media_root) / "previews" / image.sha256[:2] / f"{image.sha256}-640.jpg"
    stray.write_bytes(b"an older preview")
    assert all(path.exists() for path in paths) and len(paths) == 3
    assert Embedding.objects.filter(image_id=image.pk).exists()
    as_user(client, people["alice"])
    like = client.get(reverse("api_search"), {"like": library["alice2"].pk, "page_size": 10})
    assert image.pk in [hit["id"] for hit in like.json()["results"]]

    response = client.post(reverse("image_delete", args=[image.pk]), follow=True)

    assert response.redirect_chain[-1][0] == reverse("gallery")
    assert "Deleted alice&#x27;s photo 1." in response.content.decode()
    assert not Image.objects.filter(pk=image.pk).exists()
    assert not Embedding.objects.filter(image_id=image.pk).exists()
    assert [path for path in [*paths, stray] if path.exists()] == []
    assert image.pk not in listed_ids(response.content.decode())
    for params in ({"q": "photo"}, {"like": library["alice2"].pk}):
        results = client.get(reverse("api_search"), {**params, "page_size": 10}).json()
        assert image.pk not in [hit["id"] for hit in results["results"]]
        assert len(results["results"]) == 3
    assert client.get(reverse("image_detail", args=[image.pk])).status_code == 404
    assert client.post(reverse("image_delete", args=[image.pk])).status_code == 404
    # Deleting again through the service is no error: nothing is left to delete.
    assert lifecycle.delete_images(images=[image.pk], by=people["alice"]) == 0


def test_selected_images_are_deleted_together(client, people, library):
    chosen = [library["alice1"], library["alice3"]]
    as_user(client, people["alice"])
    response = client.post(
        reverse("gallery_selection"),
        {"images": [image.pk for image in chosen], "action": "delete", "return_to": "tag=odd"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("gallery") + "?tag=odd"
    assert "Deleted 2 images." in response.content.decode()
    assert sorted(Image.objects.values_list("pk", flat=True)) == sorted(
        [library["alice2"].pk, library["bob1"].pk]
    )
    assert not any(path.exists() for image in chosen for path in files_of(image))
    assert all(path.exists() for path in files_of(library["alice2"]) + files_of(library["bob1"]))


def test_files_stay_when_the_delete_rolls_back(people, library):
    image = library["alice2"]
    with pytest.raises(RuntimeError), transaction.atomic():
        lifecycle.delete_images(images=[image], by=people["alice"])
        raise RuntimeError("the surrounding transaction fails")
    assert Image.objects.filter(pk=image.pk).exists()
    assert all(path.exists() for path in files_of(image))


def test_files_the_same_content_uploaded_again_uses_are_kept(people, library):
    """Files are named by content: if the same file is uploaded again before the deleted
    row's files are removed, the new row owns them and they stay."""
    image = library["alice2"]
    data = Path(image.file.path).read_bytes()
    with transaction.atomic():
        lifecycle.delete_images(images=[image], by=people["alice"])
        again = ingest_image(data=data, filename="again.png", uploaded_by=people["bob"])
        assert again.created and again.image.file.name == image.file.name
    assert all(path.exists() for path in files_of(again.image))
    with PILImage.open(again.image.file.path) as reopened:
        reopened.verify()


def block_removal(path: Path) -> None:
    """Make a stored file impossible to remove: a folder that is not empty in its place
    (the tests run as root, so permissions would not stop them)."""
    path.unlink()
    path.mkdir()
    (path / "keep").write_bytes(b"x")


def test_a_file_that_cannot_be_removed_is_logged_and_removed_later_by_a_job(
    client, people, library, queue, run_burst_worker, caplog
):
    image = library["alice2"]
    original, thumbnail = files_of(image)
    block_removal(thumbnail)
    as_user(client, people["alice"])

    with caplog.at_level(logging.WARNING, logger=REMOVAL_LOGGER):
        response = client.post(reverse("image_delete", args=[image.pk]), follow=True)

    assert response.status_code == 200
    assert "Deleted" in response.content.decode()
    assert not Image.objects.filter(pk=image.pk).exists()
    assert f"Could not remove {image.thumbnail.name}" in caplog.text
    assert thumbnail.exists() and not original.exists()
    (job,) = queue.get_jobs()
    assert job.func_name == lifecycle.REMOVE_FILES_JOB

    (thumbnail / "keep").unlink()  # what blocked it is gone (the job removes the folder)
    run_burst_worker()
    assert not thumbnail.exists()
    assert job.get_status(refresh=True) == "finished"


def test_a_removal_job_that_fails_again_is_retried_by_rq(
    people, library, queue, run_burst_worker, caplog
):
    from rq.registry import ScheduledJobRegistry

    from gallery.indexing.worker import EncodingWorker

    image = library["bob1"]
    thumbnail = files_of(image)[1]
    block_removal(thumbnail)
    with caplog.at_level(logging.WARNING, logger=REMOVAL_LOGGER):
        assert lifecycle.delete_images(images=[image], by=people["staff"]) == 1
    run_burst_worker()  # still blocked: the job fails and RQ schedules its retry
    scheduled = [
        queue.fetch_job(job_id) for job_id in ScheduledJobRegistry(queue=queue).get_job_ids()
    ]
    (job,) = [
        job
        for job in scheduled
        if job and job.func_name == lifecycle.REMOVE_FILES_JOB and image.sha256 in job.args[0]
    ]
    assert thumbnail.exists()
    assert caplog.text.count(f"Could not remove {image.thumbnail.name}") == 2

    (thumbnail / "keep").unlink()
    # As if the retry's time had come: RQ's scheduler (workers run it) queues it, a worker runs it.
    due = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    ScheduledJobRegistry(queue=queue).schedule(job, due)
    EncodingWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=True)
    assert not thumbnail.exists()
    assert job.get_status(refresh=True) == "finished"


def test_with_the_queue_unreachable_too_the_leftover_file_is_logged_and_nothing_fails(
    client, people, library, settings, caplog
):
    image = library["alice3"]
    thumbnail = files_of(image)[1]
    block_removal(thumbnail)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connections are refused at once
    settings.RQ_QUEUES = {
        name: {"URL": f"redis://127.0.0.1:{port}/0", "DEFAULT_TIMEOUT": 60}
        for name in settings.RQ_QUEUES
    }
    as_user(client, people["alice"])
    with caplog.at_level(logging.WARNING, logger=REMOVAL_LOGGER):
        response = client.post(reverse("image_delete", args=[image.pk]))
    assert response.status_code == 302
    assert not Image.objects.filter(pk=image.pk).exists()
    assert "Queue unreachable" in caplog.text and image.thumbnail.name in caplog.text


def test_admin_delete_removes_files_too(client, people, library):
    one, *selected = library["alice1"], library["alice2"], library["bob1"]
    as_user(client, people["staff"])
    people["staff"].is_superuser = True
    people["staff"].save()
    url = reverse("admin:gallery_image_delete", args=[one.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    response = client.post(
        reverse("admin:gallery_image_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [image.pk for image in selected],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert list(Image.objects.values_list("pk", flat=True)) == [library["alice3"].pk]
    assert not Embedding.objects.exclude(image_id=library["alice3"].pk).exists()
    assert not any(path.exists() for image in (one, *selected) for path in files_of(image))
    assert all(path.exists() for path in files_of(library["alice3"]))


# -- the gallery's filters -------------------------------------------------------------------


def test_gallery_filters_by_tag_day_taken_and_status(client, people, library):
    days = {"alice1": "2023-06-01", "alice2": "2023-06-15", "alice3": "2023-07-01"}
    for name, day in days.items():
        Image.objects.filter(pk=library[name].pk).update(taken_on=day)
    Image.objects.filter(pk=library["bob1"].pk).update(
        taken_on=None,  # an older row: its day comes from taken_at in TIME_ZONE
        taken_at=datetime.datetime(2023, 6, 20, 12, tzinfo=datetime.UTC),
    )
    Image.objects.filter(pk=library["alice3"].pk).update(status=Image.Status.FAILED)
    as_user(client, people["bob"])

    def shown(**params) -> set[str]:
        page = client.get(reverse("gallery"), params)
        assert page.status_code == 200
        ids = set(listed_ids(page.content.decode()))
        return {name for name, image in library.items() if image.pk in ids}

    assert shown() == set(library)
    assert shown(tag="ODD") == {"alice1", "alice3"}
    assert shown(after="2023-06-10", before="2023-06-30") == {"alice2", "bob1"}
    assert shown(after="2023-06-15") == {"alice2", "alice3", "bob1"}
    assert shown(before="2023-06-15") == {"alice1", "alice2"}
    assert shown(status="failed") == {"alice3"}
    assert shown(tag="odd", status="indexed") == {"alice1"}
    assert shown(tag="even", after="2023-06-16") == {"bob1"}
    assert shown(tag="nosuch") == set()
    assert (
        "No images match these filters."
        in client.get(reverse("gallery"), {"tag": "x"}).content.decode()
    )

    # Status links keep the other filters.
    page = client.get(reverse("gallery"), {"tag": "odd"}).content.decode()
    assert 'href="?tag=odd&amp;status=failed"' in page

    reversed_range = client.get(reverse("gallery"), {"after": "2023-07-01", "before": "2023-06-01"})
    assert reversed_range.status_code == 400
    assert "The date range is reversed" in reversed_range.content.decode()
    bad = client.get(reverse("gallery"), {"after": "yesterday", "tag": "odd"})
    assert bad.status_code == 400 and "Enter a valid date." in bad.content.decode()
    assert len(listed_ids(bad.content.decode())) == 2  # the valid filter still applies


def test_gallery_paging_links_keep_the_filters(client, people, library):
    image = library["alice2"]
    odd = Tag.objects.get(name="odd")
    copies = Image.objects.bulk_create(
        [
            Image(
                file=image.file.name,
                thumbnail=image.thumbnail.name,
                sha256=f"{n:064x}",
                width=96,
                height=64,
                format="PNG",
                byte_size=10,
                taken_at=image.taken_at,
                taken_on=datetime.date(2022, 1, 1),
                uploaded_by=people["alice"],
            )
            for n in range(60)
        ]
    )
    Image.tags.through.objects.bulk_create(
        [Image.tags.through(image_id=copy.pk, tag_id=odd.pk) for copy in copies]
    )
    as_user(client, people["alice"])
    params = {"tag": "odd", "before": "2022-12-31"}
    first = client.get(reverse("gallery"), params).content.decode()
    assert len(listed_ids(first)) == 48
    (next_link,) = re.findall(r'href="\?([^"]+)" rel="next"', first)
    assert next_link.replace("&amp;", "&") == "tag=odd&before=2022-12-31&page=2"
    second = client.get(reverse("gallery") + "?" + next_link.replace("&amp;", "&")).content.decode()
    assert len(listed_ids(second)) == 12
    assert 'name="return_to" value="tag=odd&amp;before=2022-12-31&amp;page=2"' in second


# -- location data ---------------------------------------------------------------------------


def test_pages_never_show_location_data(client, people, media_root):
    exif = PILImage.Exif()
    exif.get_ifd(0x8769)[36867] = "2021:05:04 10:00:00"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0), 5: 0, 6: 35.0})
    data = image_bytes(size=(800, 600), fmt="JPEG", exif=exif, pattern=5)
    with PILImage.open(io.BytesIO(data)) as check:
        assert check.getexif().get_ifd(0x8825)  # the upload does carry a location
    image = ingest_image(data=data, filename="paris.jpg", uploaded_by=people["alice"]).image
    as_user(client, people["alice"])
    pages = [
        client.get(reverse("image_detail", args=[image.pk])).content.decode(),
        client.get(reverse("gallery")).content.decode(),
    ]
    for page in pages:
        assert not re.search(r"GPS|latitude|longitude|48\.8|2\.29|51'|17'", page, re.I)
    # What pages show of the image (thumbnail, preview) carries no location either.
    for field in (image.thumbnail, image.preview):
        with PILImage.open(field.path) as shown:
            assert not shown.getexif().get_ifd(0x8825)
    assert os.path.getsize(image.file.path) == len(data)

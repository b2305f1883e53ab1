"""Changing images already in the library: edit caption and tags, tag many at once, retry
failed ones, and delete them with their vectors and files.

Every service takes the person acting as `by` and raises NotAllowed (a PermissionDenied: 403)
before changing anything when one of the images is not theirs to change (see
permissions.py). Deleting removes the rows in one transaction and the files only after it
commits, so a rolled-back delete never loses a file; a file that cannot be removed then is
logged and removed later by a job on the encoding queue, retried with back-off.
"""

import logging

import django_rq
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, QuerySet
from redis.exceptions import RedisError

from gallery.errors import InvalidInput, NotAllowed
from gallery.indexing import queueing
from gallery.library.permissions import can_change_image
from gallery.library.tags import InvalidTagName, clean_tag_names, parse_tag_names, tags_named
from gallery.models import Image

logger = logging.getLogger(__name__)

# By name, so this module sits below its job (tasks -> lifecycle).
REMOVE_FILES_JOB = "gallery.library.tasks.remove_files_job"
# Seconds before each retry of a removal that failed again (RQ's scheduler runs them).
FILE_REMOVAL_RETRY_INTERVALS = (60, 600, 3600)
MAX_CAPTION_LENGTH = 2000


class LibraryError(InvalidInput):
    """A change the library refuses (a tag too long, no tag given); shown to the user as is."""


class FilesNotRemoved(OSError):
    """Some files of deleted images could not be removed; the job raises it to be retried."""


# -- who may change what ---------------------------------------------------------------------


def _image_ids(images) -> list[int]:
    """Ids from a queryset, or a list of images or ids."""
    if isinstance(images, QuerySet):
        return sorted(set(images.order_by().values_list("pk", flat=True)))
    if isinstance(images, Image | int):
        images = [images]
    return sorted({int(getattr(image, "pk", image)) for image in images})


def _images_to_change(images, by) -> list[Image]:
    """The images (locked until the transaction ends), once `by` may change every one.

    Ids that no longer exist are left out: deleting twice is not an error.
    """
    rows = list(Image.objects.select_for_update().filter(pk__in=_image_ids(images)).order_by("pk"))
    refused = [row.pk for row in rows if not can_change_image(by, row)]
    if refused:
        if by is None or not by.is_authenticated:
            raise NotAllowed("Log in to change images.")
        listed = ", ".join(map(str, refused[:10])) + (" ..." if len(refused) > 10 else "")
        raise NotAllowed(
            f"You may change only images you uploaded; not yours: {listed}. Nothing was changed."
        )
    return rows


def _clean_tags(tags) -> list[str]:
    try:
        return parse_tag_names(tags) if isinstance(tags, str) else clean_tag_names(tags)
    except InvalidTagName as error:
        raise LibraryError(error.message, error.parameter) from None


# -- editing ---------------------------------------------------------------------------------


@transaction.atomic
def edit_image(*, image, caption: str, tags, by) -> Image:
    """Set an image's caption and replace its tags with `tags` (a list of names)."""
    names = _clean_tags(tags)
    caption = (caption or "").strip()
    if len(caption) > MAX_CAPTION_LENGTH:
        raise LibraryError(f"The caption is longer than {MAX_CAPTION_LENGTH:,} characters.")
    rows = _images_to_change([image], by)
    if not rows:
        raise Image.DoesNotExist(f"Image {getattr(image, 'pk', image)} no longer exists.")
    (row,) = rows
    row.caption = caption
    row.save(update_fields=["caption"])
    row.tags.set(tags_named(names))
    return row


@transaction.atomic
def tag_images(*, images, tags, by) -> int:
    """Add these tags to every image (the tags they have stay); returns how many images."""
    names = _clean_tags(tags)
    if not names:
        raise LibraryError("Name at least one tag to add.")
    rows = _images_to_change(images, by)
    tag_rows = tags_named(names)
    links = Image.tags.through
    links.objects.bulk_create(
        [links(image_id=row.pk, tag_id=tag.pk) for row in rows for tag in tag_rows],
        ignore_conflicts=True,  # a tag an image already has stays once
    )
    return len(rows)


def retry_failed_images(*, images, by) -> int:
    """Queue the failed ones among these images for encoding again; returns how many.

    They show as pending at once; when Redis is down they wait for `requeue` like uploads.
    """
    with transaction.atomic():
        failed = [
            row.pk for row in _images_to_change(images, by) if row.status == Image.Status.FAILED
        ]
    if failed:
        queueing.reindex_images(Image.objects.filter(pk__in=failed))
    return len(failed)


# -- deleting --------------------------------------------------------------------------------


@transaction.atomic
def delete_images(*, images, by) -> int:
    """Delete images with their vectors and tags' links; returns how many were deleted.

    Their original, thumbnail and previews are removed once the transaction commits.
    """
    rows = _images_to_change(images, by)
    files = {row.sha256: _stored_names(row) for row in rows}
    Image.objects.filter(pk__in=[row.pk for row in rows]).delete()  # embeddings cascade
    if files:
        transaction.on_commit(lambda: _remove_files_after_commit(files))
    return len(rows)


def _stored_names(image: Image) -> list[str]:
    return [field.name for field in (image.file, image.thumbnail, image.preview) if field]


def _remove_files_after_commit(files: dict[str, list[str]]) -> None:
    # The rows are gone already: whatever happens here, the person deleting sees no error.
    try:
        left = remove_image_files(files)
    except Exception:
        logger.exception("Removing the files of deleted images failed; retrying in a job.")
        left = files
    if left:
        _queue_removal(left)


def _queue_removal(files: dict[str, list[str]]) -> None:
    from rq.job import Retry

    try:
        django_rq.get_queue(settings.ENCODING_QUEUE).enqueue(
            REMOVE_FILES_JOB,
            files,
            retry=Retry(
                max=len(FILE_REMOVAL_RETRY_INTERVALS), interval=list(FILE_REMOVAL_RETRY_INTERVALS)
            ),
        )
    except RedisError as error:
        names = sorted(name for names in files.values() for name in names)
        logger.error(
            "Queue unreachable (%s): the files of deleted images stay in MEDIA_ROOT until "
            "removed by hand: %s",
            error,
            ", ".join(names),
        )


def remove_image_files(files: dict[str, list[str]], *, strict: bool = False) -> dict:
    """Remove the files of deleted images, given as {sha256: [names]}; returns what is left.

    Files are named by their content, so the same content uploaded again since the delete
    owns them: a file is kept while any image has that SHA-256 or names that file. Previews
    of other sizes (made for another model) go too. `strict` raises FilesNotRemoved instead
    of returning leftovers, for the job, so RQ retries it. Removing is idempotent.
    """
    left: dict[str, list[str]] = {}
    for sha256, names in files.items():
        if Image.objects.filter(sha256=sha256).exists():
            continue
        for name in dict.fromkeys([*names, *_other_previews(sha256)]):
            if _still_named(name):
                continue
            try:
                default_storage.delete(name)
            except OSError as error:
                logger.warning("Could not remove %s of a deleted image (%s).", name, error)
                left.setdefault(sha256, []).append(name)
    if left and strict:
        raise FilesNotRemoved(f"{sum(map(len, left.values()))} file(s) left: {left}")
    return left


def _still_named(name: str) -> bool:
    return Image.objects.filter(Q(file=name) | Q(thumbnail=name) | Q(preview=name)).exists()


def _other_previews(sha256: str) -> list[str]:
    """Every stored preview of this content (see previews.preview_name), whatever its side."""
    folder = f"previews/{sha256[:2]}"
    try:
        _, names = default_storage.listdir(folder)
    except OSError:
        return []
    return [f"{folder}/{name}" for name in sorted(names) if name.startswith(f"{sha256}-")]

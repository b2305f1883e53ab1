"""Files named by their content in default storage: originals, thumbnails and previews.

A name holds the content's SHA-256, so a file is written once and shared by identical uploads.
"""

import errno
import os

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from gallery.errors import Unavailable

# Errors that say the disk or its mount is unwell, not that a file's bytes are wrong.
OUTAGE_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EACCES,
        errno.EPERM,
        errno.ENXIO,
        errno.ENODEV,
        errno.ESTALE,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.ETIMEDOUT,
    }
)


class StorageUnavailable(Unavailable):
    """The media storage cannot be read right now: a set-up problem, not the images'."""


def write_once(name: str, content: bytes) -> str | None:
    """Write a content-addressed file; returns its name if this call created it."""
    if default_storage.exists(name):
        return None
    return default_storage.save(name, ContentFile(content))


def remove(names) -> None:
    for name in names:
        if name:
            default_storage.delete(name)


def originals_reachable() -> bool:
    """Whether the originals folder is there and lists at least one file.

    An unmounted volume leaves an empty mount point behind; every stored image has an
    original, so an empty or missing folder means the storage is away, not the files.
    """
    try:
        with os.scandir(default_storage.path("originals")) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def is_outage(error: BaseException) -> bool:
    """Whether reading a stored file failed because the storage is away (retry later) rather
    than because of the file itself (its image fails)."""
    if isinstance(error, FileNotFoundError):
        return not originals_reachable()
    return isinstance(error, OSError) and error.errno in OUTAGE_ERRNOS

"""Files named by their content in default storage: originals, thumbnails and previews.

A name holds the content's SHA-256, so a file is written once and shared by identical uploads.
"""

import contextlib
import errno
import os
import tempfile

from django.conf import settings
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


# A full disk (or quota): the file is not stored, nothing else is wrong.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageFull(Unavailable):
    """The media storage has no room for the file; nothing of it was kept."""

    def __init__(self):
        super().__init__(
            "The library's storage is full: the file was not stored. Free some space (or "
            "give the media volume more) and upload it again.",
            retry_after=60,
        )


def write_once(name: str, content: bytes) -> str | None:
    """Write a content-addressed file; returns its name if this call created it, None when
    the file was there already (the same content: nothing to write).

    Never a partial file under `name`: the bytes go to a temporary file in the same folder,
    which is then linked to `name` (an atomic create that fails if the name exists, so of
    two concurrent writers one creates the file and the other removes its copy). A full disk
    raises StorageFull, with nothing left behind.
    """
    path = default_storage.path(name)
    if os.path.exists(path):
        return None
    temporary = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".incoming-")
        with os.fdopen(handle, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())  # on disk before it has its name: no empty file after a crash
        os.chmod(temporary, settings.FILE_UPLOAD_PERMISSIONS or 0o644)
        _create_from(temporary, path)
    except FileExistsError:
        return None  # another upload of the same content won
    except OSError as error:
        if error.errno in FULL_ERRNOS:
            raise StorageFull() from error
        raise
    finally:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):  # renamed into place (no hard links)
                os.unlink(temporary)
    return name


# Filesystems without hard links (some network and FUSE mounts) refuse os.link with these.
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV})


def _create_from(temporary: str, path: str) -> None:
    """Give `temporary` the name `path` unless `path` exists (FileExistsError)."""
    try:
        os.link(temporary, path)
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        # No atomic create-if-absent: a rename; a name is its content's hash, so whatever a
        # concurrent writer put there holds the same bytes.
        os.replace(temporary, path)
    else:
        folder = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(folder)  # the new name, too, survives a crash
        finally:
            os.close(folder)


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

"""Files named by their content in default storage: originals, thumbnails and previews.

A name holds the content's SHA-256, so a file is written once and shared by identical uploads.
"""

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def write_once(name: str, content: bytes) -> str | None:
    """Write a content-addressed file; returns its name if this call created it."""
    if default_storage.exists(name):
        return None
    return default_storage.save(name, ContentFile(content))


def remove(names) -> None:
    for name in names:
        if name:
            default_storage.delete(name)

"""Reading the library for browsing: the gallery's listing."""

from gallery.models import Image


def browse_images(*, status: str = ""):
    """The gallery: newest first, optionally only one indexing status."""
    images = Image.objects.prefetch_related("tags")
    if status in Image.Status.values:
        images = images.filter(status=status)
    return images

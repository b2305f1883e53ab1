"""Reading the library for browsing: the gallery's listing."""

import datetime
import zoneinfo

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce, TruncDate

from gallery.errors import InvalidInput
from gallery.models import Image

# Images a gallery page shows (the page and GET /api/v1/images by default).
GALLERY_PAGE_SIZE = 48
# Pages are numbered up to this (48 million images at the default size): a bound PostgreSQL's
# OFFSET can take, where any number a client sends could not.
MAX_GALLERY_PAGE = 1_000_000


def browse_images(
    *,
    status: str = "",
    tag: str = "",
    after: datetime.date | None = None,
    before: datetime.date | None = None,
):
    """The gallery: newest first, optionally only one indexing status, one tag (any case)
    and a range of days taken (inclusive, the photo's own day as search compares it)."""
    if after and before and after > before:
        raise InvalidInput(f"The date range is reversed: {after} is after {before}.", "after")
    images = Image.objects.prefetch_related("tags")
    if status in Image.Status.values:
        images = images.filter(status=status)
    if tag:
        images = images.filter(tags__name__iexact=tag)
    if after or before:
        # Rows without `taken_on` (stored before it existed) use their day in TIME_ZONE.
        day = Coalesce(
            F("taken_on"), TruncDate("taken_at", tzinfo=zoneinfo.ZoneInfo(settings.TIME_ZONE))
        )
        images = images.alias(day_taken=day)
        if after:
            images = images.filter(day_taken__gte=after)
        if before:
            images = images.filter(day_taken__lte=before)
    return images

"""Tag names as people type them, and the Tag rows they name (case-insensitive)."""

from django.db import IntegrityError, transaction

from gallery.library.validation import RejectedImage
from gallery.models import Tag

MAX_TAG_LENGTH = Tag._meta.get_field("name").max_length


def parse_tag_names(text: str) -> list[str]:
    """Split a comma-separated tag field; whitespace trimmed, duplicates dropped."""
    seen, names = set(), []
    for part in text.split(","):
        name = " ".join(part.split())
        if name and name.lower() not in seen:
            if len(name) > MAX_TAG_LENGTH:
                raise RejectedImage(f"The tag {name[:20]!r}... is longer than {MAX_TAG_LENGTH}.")
            seen.add(name.lower())
            names.append(name)
    return names


def tags_named(names) -> list[Tag]:
    """The Tag rows for these names (case-insensitive), creating missing ones."""
    tags = []
    for name in names:
        tag = Tag.objects.filter(name__iexact=name).first()
        if tag is None:
            try:
                with transaction.atomic():
                    tag = Tag.objects.create(name=name)
            except IntegrityError:
                tag = Tag.objects.get(name__iexact=name)
        tags.append(tag)
    return tags

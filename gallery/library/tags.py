"""Tag names as people type them, and the Tag rows they name (case-insensitive)."""

import unicodedata

from django.db import IntegrityError, transaction

from gallery.errors import InvalidInput
from gallery.models import Tag

MAX_TAG_LENGTH = Tag._meta.get_field("name").max_length
# A field of comma-separated tag names (a form's, the API's), and the names one change gives.
MAX_TAG_FIELD_LENGTH = 2000
MAX_TAGS_AT_ONCE = 200


class InvalidTagName(InvalidInput):
    """A tag name that cannot be stored or asked for."""

    def __init__(self, message: str):
        super().__init__(message, "tags")


def parse_tag_names(text: str) -> list[str]:
    """Split a comma-separated tag field; whitespace trimmed, duplicates dropped."""
    return clean_tag_names(text.split(","))


def clean_tag_names(names) -> list[str]:
    """Tag names as given in a list: whitespace trimmed, empty and duplicate (case-insensitive)
    names dropped, first spelling kept; a name over the length limit is refused."""
    seen, names_kept = set(), []
    for part in names:
        name = " ".join(str(part).split())
        if name and name.lower() not in seen:
            if any(unicodedata.category(char) == "Cc" for char in name):
                # Every other layer checks too; PostgreSQL cannot store NUL in any case.
                raise InvalidTagName(f"A tag cannot contain control characters: {name[:40]!r}.")
            if "," in name:
                # Filters take comma-separated names: such a tag could never be asked for.
                raise InvalidTagName(f"A tag cannot contain a comma: {name[:40]!r}.")
            if len(name) > MAX_TAG_LENGTH:
                raise InvalidTagName(f"The tag {name[:20]!r}... is longer than {MAX_TAG_LENGTH}.")
            seen.add(name.lower())
            names_kept.append(name)
    return names_kept


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

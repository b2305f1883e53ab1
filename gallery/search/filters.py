"""A search's filters as objects that write their own SQL for the table aliases a statement
uses: the vector side reads the embedding row (its image id) and, for dates, the image row;
the keyword side reads images only. Every statement, and the explanation of an empty page,
adds the same filters in the same order."""

from dataclasses import dataclass, field

from django.conf import settings

from gallery.models import Tag
from gallery.search.request import SearchError, SearchRequest


@dataclass(frozen=True)
class Aliases:
    """Where a statement finds the image's id and the image row."""

    image_id: str
    image: str


# Vectors joined to their images (e, i); images alone (i).
VECTORS = Aliases(image_id="e.image_id", image="i")
IMAGES = Aliases(image_id="i.id", image="i")


@dataclass(frozen=True)
class Filter:
    name: str  # the parameter it comes from
    description: str  # how the explanation of an empty page names it
    condition: str  # SQL with {image_id} and {image} for the aliases
    params: dict = field(default_factory=dict)
    reads_image_row: bool = False  # whether the vector side must join the images

    def sql(self, aliases: Aliases) -> str:
        return self.condition.format(image_id=aliases.image_id, image=aliases.image)


def conditions(filters: list[Filter], aliases: Aliases) -> list[str]:
    return [each.sql(aliases) for each in filters]


def parameters(filters: list[Filter]) -> dict:
    return {name: value for each in filters for name, value in each.params.items()}


def reads_image_rows(filters: list[Filter]) -> bool:
    return any(each.reads_image_row for each in filters)


def _has_tag(parameter: str, exists: str) -> str:
    return (
        f"{exists} (SELECT 1 FROM gallery_image_tags t "
        f"WHERE t.image_id = {{image_id}} AND t.tag_id = ANY(%({parameter})s))"
    )


# The photo's own calendar day (Image.taken_on); rows without one use TIME_ZONE's day.
TAKEN_DAY = "coalesce({image}.taken_on, ({image}.taken_at AT TIME ZONE %(time_zone)s)::date)"


def search_filters(request: SearchRequest) -> list[Filter]:
    """The request's filters, in the order an empty page's explanation tries them."""
    if request.after and request.before and request.after > request.before:
        raise SearchError(
            "after", f"The date range is reversed: {request.after} is after {request.before}."
        )
    filters = []
    if request.tags_any:
        ids = _tag_ids("tags_any", request.tags_any)
        filters.append(
            Filter(
                "tags_any",
                "the tags to include (any of)",
                _has_tag("tags_any", "EXISTS"),
                {"tags_any": ids},
            )
        )
    if request.tags_all:
        ids = sorted(set(_tag_ids("tags_all", request.tags_all)))
        filters.append(
            Filter(
                "tags_all",
                "the tags that must all be present",
                "(SELECT count(*) FROM gallery_image_tags t WHERE t.image_id = {image_id} "
                "AND t.tag_id = ANY(%(tags_all)s)) = %(tags_all_n)s",
                {"tags_all": ids, "tags_all_n": len(ids)},
            )
        )
    excluded = _tag_ids("tags_not", request.tags_not, unknown_ok=True)
    if excluded:
        filters.append(
            Filter(
                "tags_not",
                "the tags to exclude",
                _has_tag("tags_not", "NOT EXISTS"),
                {"tags_not": excluded},
            )
        )
    day = {"time_zone": settings.TIME_ZONE}
    if request.after:
        filters.append(
            Filter(
                "after",
                "the start date",
                f"{TAKEN_DAY} >= %(after)s",
                {**day, "after": request.after},
                reads_image_row=True,
            )
        )
    if request.before:
        filters.append(
            Filter(
                "before",
                "the end date",
                f"{TAKEN_DAY} <= %(before)s",
                {**day, "before": request.before},
                reads_image_row=True,
            )
        )
    return filters


def _tag_ids(parameter: str, names: list[str], *, unknown_ok: bool = False) -> list[int]:
    """Tag ids by name (case-insensitive). An unknown name is an error that explains an
    empty page, except where it cannot matter (excluding a tag nobody has)."""
    if not names:
        return []
    found = {tag.name.lower(): tag.pk for tag in Tag.objects.filter(name__in=names)}
    for name in names:
        if name.lower() not in found:
            match = Tag.objects.filter(name__iexact=name).first()
            if match is not None:
                found[name.lower()] = match.pk
            elif not unknown_ok:
                raise SearchError(parameter, f"There is no tag named {name!r}.")
    return [found[name.lower()] for name in names if name.lower() in found]

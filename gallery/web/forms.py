"""Forms for the pages; each file's own validation happens in gallery/ingest.py."""

from urllib.parse import urlencode

from django import forms
from django.conf import settings

from gallery.library import ingest
from gallery.library.lifecycle import MAX_CAPTION_LENGTH
from gallery.library.tags import MAX_TAG_FIELD_LENGTH, InvalidTagName, parse_tag_names
from gallery.models import Image
from gallery.search.request import marked_image_ids, tag_filter_names


class SiteForm(forms.Form):
    """A form whose errors the API and the messages framework can show."""

    def first_error(self) -> tuple[str, str]:
        """The first error as (field name, or "__all__"; message)."""
        name, errors = next(iter(self.errors.items()))
        return name, " ".join(errors)

    def error_text(self) -> str:
        return " ".join(message for errors in self.errors.values() for message in errors)


class TagNamesField(forms.CharField):
    """Comma-separated tag names, cleaned by the library's own rules (gallery/library/tags.py)."""

    def __init__(self, **kwargs):
        super().__init__(required=False, max_length=MAX_TAG_FIELD_LENGTH, **kwargs)

    def clean(self, value) -> list[str]:
        try:
            return parse_tag_names(super().clean(value))
        except InvalidTagName as error:
            raise forms.ValidationError(error.message) from None


class TagFilterField(forms.CharField):
    """Comma-separated tag names to filter by (names need not exist yet: the search says)."""

    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def clean(self, value) -> list[str]:
        return tag_filter_names(super().clean(value))


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class UploadForm(SiteForm):
    files = forms.FileField(
        # The extensions too: file pickers that know no MIME type for HEIC would hide it.
        widget=MultipleFileInput(attrs={"accept": "image/*,.heic,.heif,.avif", "multiple": True}),
        required=False,
        help_text="JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF or AVIF.",
    )
    tags = TagNamesField(help_text="Comma-separated, applied to every file.")
    caption = forms.CharField(required=False, max_length=MAX_CAPTION_LENGTH, widget=forms.TextInput)

    def __init__(self, *args, uploaded_files=(), oversized=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.uploaded_files = list(uploaded_files)
        self.oversized = list(oversized)

    @classmethod
    def posted(cls, request) -> "UploadForm":
        """The form of an upload request: its fields, its files and the files skipped for
        their size while they arrived (gallery/web/uploads.py)."""
        return cls(
            request.POST,
            uploaded_files=request.FILES.getlist("files"),
            oversized=getattr(request, "oversized_uploads", []),
        )

    def clean(self):
        cleaned = super().clean()
        if not self.uploaded_files and not self.oversized:
            raise forms.ValidationError("Choose at least one image to upload.")
        return cleaned

    def ingest(self, *, uploaded_by) -> list[ingest.IngestResult]:
        """Store the valid form's files (each refused or stored on its own)."""
        return ingest.ingest_uploads(
            files=self.uploaded_files,
            oversized_names=self.oversized,
            uploaded_by=uploaded_by,
            tag_names=self.cleaned_data["tags"],
            caption=self.cleaned_data["caption"],
        )


class MarkedImagesInput(forms.HiddenInput):
    """Image ids as `more=3,5` or repeated (`more=3&more=5`, what checkboxes send): joined."""

    def value_from_datadict(self, data, files, name):
        values = data.getlist(name) if hasattr(data, "getlist") else [data.get(name)]
        return ",".join(value for value in values if value)


class MarkedImagesField(forms.Field):
    """Relevance feedback's marks: comma-separated image ids, each once, in ascending order."""

    widget = MarkedImagesInput

    def to_python(self, value) -> list[int]:
        try:
            return marked_image_ids(value)
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None


class SearchForm(SiteForm):
    """Search parameters, shared by the search page and GET/POST /api/search."""

    q = forms.CharField(required=False, strip=False, label="Search")
    tags_any = TagFilterField(label="Any of these tags")
    tags_all = TagFilterField(label="All of these tags")
    tags_not = TagFilterField(label="None of these tags")
    after = forms.DateField(
        required=False, label="Taken from", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.DateField(
        required=False, label="Taken until", widget=forms.DateInput(attrs={"type": "date"})
    )
    min_score = forms.FloatField(
        required=False,
        min_value=-1,
        max_value=1,
        label="Minimum score",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
    )
    sort = forms.ChoiceField(
        required=False, choices=[("relevance", "Relevance"), ("date", "Newest among the relevant")]
    )
    # Empty: hybrid when there are words, else semantic (gallery/search/keyword.py).
    mode = forms.ChoiceField(
        required=False,
        label="Match",
        choices=[
            ("", "Automatic (hybrid when there are words)"),
            ("hybrid", "Hybrid: meaning and words"),
            ("semantic", "Semantic: meaning only"),
            ("keyword", "Keyword: words only"),
        ],
    )
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    page_size = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.SEARCH_MAX_PAGE_SIZE,
        widget=forms.HiddenInput,
    )
    like = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    image_token = forms.CharField(required=False, widget=forms.HiddenInput, max_length=64)
    image = forms.FileField(required=False, label="Query image")
    # Near-duplicates on a page fold into one tile ("collapse", the default) or all show.
    duplicates = forms.ChoiceField(
        required=False,
        choices=[("collapse", "Collapse near-duplicates"), ("show", "Show near-duplicates")],
        widget=forms.HiddenInput,
    )
    # Relevance feedback: images marked relevant ("more like these") or not ("less").
    more = MarkedImagesField(required=False)
    less = MarkedImagesField(required=False)


# -- the library: editing, selecting and filtering images ------------------------------------


class ImageEditForm(SiteForm):
    caption = forms.CharField(
        required=False, max_length=MAX_CAPTION_LENGTH, widget=forms.Textarea(attrs={"rows": 3})
    )
    tags = TagNamesField(help_text="Comma-separated; replaces the image's tags.")

    @classmethod
    def for_image(cls, image) -> "ImageEditForm":
        tags = ", ".join(tag.name for tag in image.tags.all())
        return cls(initial={"caption": image.caption, "tags": tags})


class ImageIdsField(forms.Field):
    """Checked images of a page: their ids, each at most once."""

    widget = forms.MultipleHiddenInput
    MAX_IMAGES = 1000

    def to_python(self, value) -> list[int]:
        try:
            ids = sorted({int(item) for item in value or []})
        except (TypeError, ValueError):
            raise forms.ValidationError(
                "The selection names an image that does not exist."
            ) from None
        if len(ids) > self.MAX_IMAGES:
            raise forms.ValidationError(f"Select at most {self.MAX_IMAGES} images at once.")
        return ids


class ImageSelectionForm(SiteForm):
    """What to do with the images checked in the gallery."""

    images = ImageIdsField(error_messages={"required": "Select at least one image first."})
    action = forms.ChoiceField(choices=[("delete", "Delete"), ("tag", "Add tags")])
    tags = TagNamesField()
    # The gallery's query string (filters and page), to return to the same listing.
    return_to = forms.CharField(required=False, max_length=2000)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("action") == "tag" and not cleaned.get("tags"):
            self.add_error("tags", "Type the tags to add to the selected images.")
        return cleaned


class GalleryFilterForm(SiteForm):
    """The gallery's filters; also what paging links and the selection's return carry."""

    tag = forms.CharField(required=False, max_length=64, label="Tag")
    after = forms.DateField(
        required=False, label="Taken from", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.DateField(
        required=False, label="Taken until", widget=forms.DateInput(attrs={"type": "date"})
    )
    status = forms.ChoiceField(
        required=False,
        label="Indexing",
        choices=[("", "Any"), *Image.Status.choices],
    )
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    FILTERS = ("tag", "after", "before", "status")

    def clean_tag(self) -> str:
        return " ".join(self.cleaned_data["tag"].split())

    def clean(self):
        cleaned = super().clean()
        after, before = cleaned.get("after"), cleaned.get("before")
        if after and before and after > before:
            self.add_error("after", f"The date range is reversed: {after} is after {before}.")
        return cleaned

    def filters(self) -> dict:
        """The valid filters, as `selectors.browse_images` takes them (invalid ones left out)."""
        data = getattr(self, "cleaned_data", {})
        return {name: data[name] for name in self.FILTERS if data.get(name)}

    def query(self, **changes) -> str:
        """A query string of the valid filters (no page unless given), with `changes`."""
        values = {**self.filters(), **changes}
        return urlencode(
            {
                name: value.isoformat() if hasattr(value, "isoformat") else value
                for name, value in values.items()
                if value
            }
        )

    @property
    def active(self) -> bool:
        return bool(self.filters())


class DuplicateKeepForm(SiteForm):
    """Keep this one, delete the others: the action on a group of near-duplicates."""

    keep = forms.IntegerField(min_value=1)
    images = ImageIdsField(error_messages={"required": "The group names no images."})

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("keep") and cleaned.get("images") is not None:
            if cleaned["keep"] not in cleaned["images"]:
                raise forms.ValidationError("The image to keep is not one of the group.")
        return cleaned

"""Forms for the pages; each file's own validation happens in gallery/ingest.py."""

from django import forms

from gallery.library.tags import parse_tag_names
from gallery.library.validation import RejectedImage


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class UploadForm(forms.Form):
    files = forms.FileField(
        widget=MultipleFileInput(attrs={"accept": "image/*", "multiple": True}),
        required=False,
        help_text="JPEG, PNG, WebP, GIF, BMP or TIFF.",
    )
    tags = forms.CharField(
        required=False, max_length=2000, help_text="Comma-separated, applied to every file."
    )
    caption = forms.CharField(required=False, max_length=2000, widget=forms.TextInput)

    def __init__(self, *args, uploaded_files=(), oversized=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.uploaded_files = list(uploaded_files)
        self.oversized = list(oversized)

    def clean_tags(self) -> list[str]:
        try:
            return parse_tag_names(self.cleaned_data["tags"])
        except RejectedImage as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self):
        cleaned = super().clean()
        if not self.uploaded_files and not self.oversized:
            raise forms.ValidationError("Choose at least one image to upload.")
        return cleaned


def _names(text: str) -> list[str]:
    return [" ".join(part.split()) for part in text.split(",") if part.strip()]


class SearchForm(forms.Form):
    """Search parameters, shared by the search page and GET/POST /api/search."""

    q = forms.CharField(required=False, strip=False, label="Search")
    tags_any = forms.CharField(required=False, label="Any of these tags")
    tags_all = forms.CharField(required=False, label="All of these tags")
    tags_not = forms.CharField(required=False, label="None of these tags")
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
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    page_size = forms.IntegerField(
        required=False, min_value=1, max_value=100, widget=forms.HiddenInput
    )
    like = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    image_token = forms.CharField(required=False, widget=forms.HiddenInput, max_length=64)
    image = forms.FileField(required=False, label="Query image")

    def search_request(self, **extra):
        from django.conf import settings

        from gallery.search.request import SearchRequest

        data = self.cleaned_data
        return SearchRequest(
            text=data["q"] or "",
            like_image_id=data["like"],
            tags_any=_names(data["tags_any"]),
            tags_all=_names(data["tags_all"]),
            tags_not=_names(data["tags_not"]),
            after=data["after"],
            before=data["before"],
            min_score=data["min_score"],
            sort=data["sort"] or "relevance",
            page=data["page"] or 1,
            page_size=data["page_size"] or settings.SEARCH_PAGE_SIZE,
            **extra,
        )

    def is_blank(self) -> bool:
        data = self.cleaned_data
        return not (
            (data["q"] or "").strip() or data["like"] or data["image_token"] or data["image"]
        )

    def first_error(self) -> tuple[str, str]:
        name, errors = next(iter(self.errors.items()))
        return name, " ".join(errors)

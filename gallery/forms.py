"""Forms for the pages; each file's own validation happens in gallery/ingest.py."""

from django import forms

from gallery.ingest import MAX_TAG_LENGTH, RejectedImage, parse_tag_names


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


__all__ = ["UploadForm", "MAX_TAG_LENGTH"]

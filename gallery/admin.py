from django.contrib import admin
from django.utils.html import format_html

from gallery.models import Image, Tag


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail_preview", "__str__", "status", "taken_at", "uploaded_at"]
    list_filter = ["status", "tags", "taken_at", "uploaded_at", "embedding_model"]
    search_fields = ["caption", "original_filename", "tags__name", "sha256"]
    readonly_fields = [
        "sha256",
        "file",
        "thumbnail",
        "width",
        "height",
        "format",
        "byte_size",
        "uploaded_at",
        "status",
        "status_error",
        "queued_at",
        "embedding_model",
        "indexed_at",
    ]
    exclude = ["embedding"]
    filter_horizontal = ["tags"]
    date_hierarchy = "uploaded_at"

    @admin.display(description="Thumbnail")
    def thumbnail_preview(self, image):
        if not image.thumbnail:
            return "—"
        return format_html('<img src="{}" style="height:48px" alt="">', image.thumbnail.url)

from django.contrib import admin, messages
from django.utils.html import format_html

from gallery.indexing import progress, queueing
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
    actions = ["reindex_selected"]

    @admin.display(description="Thumbnail")
    def thumbnail_preview(self, image):
        if not image.thumbnail:
            return "—"
        return format_html('<img src="{}" style="height:48px" alt="">', image.thumbnail.url)

    @admin.action(description="Re-index selected images")
    def reindex_selected(self, request, queryset):
        queued = queueing.reindex_images(queryset)
        level = messages.SUCCESS if queued == queryset.count() else messages.WARNING
        self.message_user(
            request, f"Queued {queued} of {queryset.count()} image(s) for re-encoding.", level
        )

    def changelist_view(self, request, extra_context=None):
        # Indexing progress above the list: counts per status and the queue's length.
        extra_context = {**(extra_context or {}), "progress": progress.indexing_progress()}
        return super().changelist_view(request, extra_context=extra_context)

from django.contrib import admin, messages
from django.utils.html import format_html

from gallery.indexing import progress, queueing, registry
from gallery.models import EmbeddingModel, Image, Tag


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail_preview", "__str__", "status", "taken_at", "uploaded_at"]
    list_filter = ["status", "tags", "taken_at", "uploaded_at"]
    search_fields = ["caption", "original_filename", "tags__name", "sha256"]
    readonly_fields = [
        "sha256",
        "file",
        "thumbnail",
        "preview",
        "width",
        "height",
        "format",
        "byte_size",
        "uploaded_at",
        "status",
        "status_error",
        "queued_at",
        "indexed_at",
    ]
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
        # Indexing progress above the list: counts per status, models and the queue's length.
        extra_context = {**(extra_context or {}), "progress": progress.indexing_progress()}
        return super().changelist_view(request, extra_context=extra_context)


@admin.register(EmbeddingModel)
class EmbeddingModelAdmin(admin.ModelAdmin):
    """Models come from the configuration (CLIP_MODEL ...); here they are watched and switched."""

    list_display = [
        "model_id",
        "state",
        "dimensions",
        "coverage",
        "added_at",
        "activated_at",
        "load_problem",
    ]
    list_filter = ["state"]
    readonly_fields = [field.name for field in EmbeddingModel._meta.fields]
    actions = ["fill_selected", "activate_selected", "retire_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # retire, then `manage.py prune_models`, which also drops the index

    @admin.display(description="Vectors / images")
    def coverage(self, model):
        figures = registry.coverage(model)
        return f"{figures['covered']:,} / {figures['indexable']:,} ({figures['percent']:g} %)"

    @admin.display(description="Cannot load")
    def load_problem(self, model):
        return model.load_error[:200] or "—"

    @admin.action(description="Encode every image missing a vector of this model")
    def fill_selected(self, request, queryset):
        for model in queryset:
            if model.state == EmbeddingModel.State.RETIRED:
                self.message_user(
                    request,
                    f"{model.model_id} is retired: workers fill only the active and next "
                    "models. Configure it (CLIP_MODEL ...) to switch back to it.",
                    messages.ERROR,
                )
                continue
            queued = registry.fill_model(model)
            self.message_user(request, f"Queued {queued} image(s) for {model.model_id}.")

    @admin.action(description="Activate (searches use this model)")
    def activate_selected(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one model to activate.", messages.ERROR)
            return
        try:
            model = registry.activate_model(queryset.get())
        except registry.ModelSwitchError as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        self.message_user(request, f"{model.model_id} now answers every search.")

    @admin.action(description="Retire (stop filling; vectors kept until prune_models)")
    def retire_selected(self, request, queryset):
        for model in queryset:
            try:
                registry.retire_model(model)
            except registry.ModelSwitchError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"Retired {model.model_id}.")

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse
from django.utils.html import format_html

from gallery.accounts import tokens
from gallery.indexing import progress, queueing, registry
from gallery.library import lifecycle
from gallery.models import ApiToken, EmbeddingModel, Image, Tag


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

    def has_add_permission(self, request):
        # Images come in through the site's upload page (or import_images), which stores the
        # file and fills the fields this page shows read-only.
        return False

    @admin.display(description="Thumbnail")
    def thumbnail_preview(self, image):
        if not image.thumbnail:
            return "—"
        return format_html('<img src="{}" height="48" alt="">', image.thumbnail.url)

    @admin.action(description="Re-index selected images", permissions=["change"])
    def reindex_selected(self, request, queryset):
        queued = queueing.reindex_images(queryset)
        level = messages.SUCCESS if queued == queryset.count() else messages.WARNING
        self.message_user(
            request, f"Queued {queued} of {queryset.count()} image(s) for re-encoding.", level
        )

    # Deleting goes through the library's service, so vectors and files go too (files after
    # the admin's transaction commits), the same as deleting from the site.
    def delete_model(self, request, obj):
        lifecycle.delete_images(images=[obj], by=request.user)

    def delete_queryset(self, request, queryset):
        lifecycle.delete_images(images=queryset, by=request.user)

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

    @admin.action(
        description="Encode every image missing a vector of this model", permissions=["change"]
    )
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

    @admin.action(description="Activate (searches use this model)", permissions=["change"])
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

    @admin.action(
        description="Retire (stop filling; vectors kept until prune_models)", permissions=["change"]
    )
    def retire_selected(self, request, queryset):
        for model in queryset:
            try:
                registry.retire_model(model)
            except registry.ModelSwitchError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"Retired {model.model_id}.")


class ApiTokenAddForm(forms.ModelForm):
    user = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True))

    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens of every user: created here (the secret is shown once), listed and revoked."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "user__username"]
    actions = ["revoke_selected"]
    shown_fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["user", "name"] if obj is None else self.shown_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.shown_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing of a token changes but its revocation (the action)
        token, secret = tokens.create_api_token(user=obj.user, name=obj.name)
        for field in ApiToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(token, field.attname))
        obj._state = token._state
        request.new_api_token_secret = secret

    def response_add(self, request, obj, post_url_continue=None):
        # The only time the secret exists outside its user's hands: shown here, not stored,
        # not put in a message (message cookies are signed, not encrypted).
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "API token created",
            "token": obj,
            "secret": request.new_api_token_secret,
        }
        response = TemplateResponse(request, "admin/gallery/apitoken/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_selected(self, request, queryset):
        revoked = tokens.revoke_api_tokens(tokens=queryset)
        self.message_user(request, f"Revoked {revoked} token(s).")

"""Images, their tags, the CLIP models the library knows and one vector per image and model.

Vectors live in PostgreSQL beside the images, so similarity and every filter share one
statement. Each model's vectors have their own partial HNSW index (see gallery/indexing/
registry.py), so models of different sizes share the table and never mix in a search.
"""

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Lower
from django.utils import timezone
from pgvector.django import VectorField

# Stored formats that only Safari shows in an <img>: pages show their preview instead.
FORMATS_BROWSERS_CANNOT_SHOW = {"HEIF", "TIFF"}


class Tag(models.Model):
    name = models.CharField(max_length=64)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="tag_name_unique_case_insensitive"),
        ]

    def __str__(self) -> str:
        return self.name


class ImageQuerySet(models.QuerySet):
    def indexable(self):
        """Images a model can encode: all but those whose file could not be read."""
        return self.exclude(status=Image.Status.FAILED)

    def with_vector_of(self, model):
        return self.filter(_has_vector_of(model))

    def missing_vector_of(self, model):
        """Indexable images that have no vector of this model yet."""
        return self.indexable().exclude(_has_vector_of(model))


def _has_vector_of(model) -> Exists:
    return Exists(Embedding.objects.filter(image=OuterRef("pk"), model=model))


class Image(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        INDEXED = "indexed", "Indexed"
        FAILED = "failed", "Failed"

    # Stored under its content hash, never under the uploader's file name.
    file = models.FileField(upload_to="originals/", max_length=255)
    thumbnail = models.FileField(upload_to="thumbnails/", max_length=255, blank=True)
    # Upright 8-bit RGB JPEG, shortest side PREVIEW_SIZE (or twice a larger model's input),
    # that workers encode instead of the original. Null when the original is that small, or
    # (images stored before previews) until a worker makes it.
    preview = models.FileField(upload_to="previews/", max_length=255, null=True, blank=True)
    sha256 = models.CharField(max_length=64, unique=True)
    original_filename = models.CharField(max_length=255, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=16)
    byte_size = models.PositiveBigIntegerField()
    caption = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    uploaded_at = models.DateTimeField(auto_now_add=True, db_index=True)
    taken_at = models.DateTimeField(db_index=True)
    # The calendar day where the photo was taken: the EXIF date as the camera wrote it, else
    # the day of `taken_at` in TIME_ZONE. Date filters and pages use this day, so a photo
    # taken at 01:00 on 5 June in UTC+2 is on 5 June, not on 4 June (its UTC day).
    taken_on = models.DateField(null=True, blank=True, db_index=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="images")

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    status_error = models.TextField(blank=True)
    # When the image was last handed to the queue; a pending image queued long ago is stuck.
    queued_at = models.DateTimeField(null=True, blank=True)
    # When the active model's vector was stored (`indexed` means the active model has one).
    indexed_at = models.DateTimeField(null=True, blank=True)
    # Text read inside the image (OCR), searchable by keyword; when reading it last finished.
    # db_default: rows inserted by raw SQL (bench_search loads with COPY) get it too.
    ocr_text = models.TextField(blank=True, default="", db_default="")
    ocr_read_at = models.DateTimeField(null=True, blank=True)
    # The thumbnail's 64-bit perceptual hash (gallery/library/perceptual_hash.py), as a signed
    # bigint; null for images stored before it, until a scan or a search page needs it.
    # No index: near-duplicate scans read every hash and bucket them in Python.
    phash = models.BigIntegerField(null=True, blank=True, editable=False)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-uploaded_at", "-id"]

    def __str__(self) -> str:
        return self.caption or self.original_filename or self.sha256[:12]

    @property
    def taken_day(self):
        """`taken_on`, or for rows without it (older ones) `taken_at`'s day in TIME_ZONE."""
        return self.taken_on or timezone.localtime(self.taken_at).date()

    @property
    def shown_file(self):
        """The file a page shows: the original, or for a HEIC or TIFF its preview (the
        thumbnail when the original is too small to have one)."""
        if self.format in FORMATS_BROWSERS_CANNOT_SHOW:
            return self.preview or self.thumbnail
        return self.file


class EmbeddingModel(models.Model):
    """A CLIP model with its exact weights: how to load it, its vector size and its state.

    One model is active (every search uses it); at most one is next (workers fill its
    vectors while the active one keeps answering); the others are retired (their vectors
    stay until `prune_models`).
    """

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        NEXT = "next", "Next (being filled)"
        RETIRED = "retired", "Retired"

    # Architecture plus the weights' identity: a pretrained tag, a seed, or a file's SHA-256.
    model_id = models.CharField(max_length=255, unique=True)
    architecture = models.CharField(max_length=128)
    pretrained = models.CharField(max_length=128, blank=True)
    weights_file = models.CharField(max_length=1024, blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    random_seed = models.IntegerField(default=0)
    dimensions = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State.choices)
    added_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    # Why the last attempt to load the weights failed; empty once they load.
    load_error = models.TextField(blank=True)
    load_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-added_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["state"], condition=Q(state="active"), name="one_active_embedding_model"
            ),
            models.UniqueConstraint(
                fields=["state"], condition=Q(state="next"), name="one_next_embedding_model"
            ),
        ]

    def __str__(self) -> str:
        return self.model_id

    @property
    def index_name(self) -> str:
        return f"gallery_embedding_hnsw_{self.pk}"


class Embedding(models.Model):
    """One image's vector from one model; the column takes any size, each index casts it."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="embeddings")
    # Covered by the (model, image) unique index, so no index of its own.
    model = models.ForeignKey(
        EmbeddingModel, on_delete=models.CASCADE, related_name="embeddings", db_index=False
    )
    vector = VectorField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model", "image"], name="one_embedding_per_model_and_image"
            ),
        ]

    def __str__(self) -> str:
        return f"image {self.image_id}, model {self.model_id}"


class ApiToken(models.Model):
    """A secret a script sends as `Authorization: Bearer <token>` to act as its user.

    Only the SHA-256 of the secret is stored: the token is shown once, when it is created,
    and a copy of this table cannot be used to log in. `prefix` (the secret's first
    characters) tells a person's tokens apart in lists.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=16, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

"""Images, their tags and their CLIP vectors: one table, so similarity and filters share a query."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from pgvector.django import HnswIndex, VectorField

# HNSW build parameters, chosen with bench_search at 100k vectors (see README): with
# ef_construction 128 instead of 64 the build takes 33 s instead of 24 s, and ef_search 200
# reaches recall@10 1.0 instead of 0.98-0.99.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128


class Tag(models.Model):
    name = models.CharField(max_length=64)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="tag_name_unique_case_insensitive"),
        ]

    def __str__(self) -> str:
        return self.name


class Image(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        INDEXED = "indexed", "Indexed"
        FAILED = "failed", "Failed"

    # Stored under its content hash, never under the uploader's file name.
    file = models.FileField(upload_to="originals/", max_length=255)
    thumbnail = models.FileField(upload_to="thumbnails/", max_length=255, blank=True)
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
    tags = models.ManyToManyField(Tag, blank=True, related_name="images")

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    status_error = models.TextField(blank=True)
    # When the image was last handed to the queue; a pending image queued long ago is stuck.
    queued_at = models.DateTimeField(null=True, blank=True)
    embedding = VectorField(dimensions=512, null=True, blank=True)
    # Which model (and weights) produced `embedding`, so a model change can be detected.
    embedding_model = models.CharField(max_length=255, blank=True, db_index=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        indexes = [
            HnswIndex(
                name="image_embedding_hnsw_cosine",
                fields=["embedding"],
                m=HNSW_M,
                ef_construction=HNSW_EF_CONSTRUCTION,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return self.caption or self.original_filename or self.sha256[:12]

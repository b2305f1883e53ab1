"""The schema on real PostgreSQL + pgvector: extension, HNSW index, vectors through the ORM."""

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from pgvector.django import CosineDistance

from gallery.indexing import registry
from gallery.models import Embedding, Image


def make_image(index: int, vector=None, **fields) -> Image:
    image = Image.objects.create(
        file=f"originals/{index:064x}.png",
        sha256=f"{index:064x}",
        width=1,
        height=1,
        format="PNG",
        byte_size=1,
        taken_at=timezone.now(),
        **fields,
    )
    if vector is not None:
        Embedding.objects.create(image=image, model=registry.active_model(), vector=vector)
    return image


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, 512)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.django_db
def test_migrations_create_vector_extension_and_a_partial_hnsw_index_for_the_model():
    model = registry.active_model()
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert cursor.fetchone() is not None
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'gallery_embedding' "
            "AND indexname = %s",
            [model.index_name],
        )
        (definition,) = cursor.fetchone()
    assert "USING hnsw (((vector)::vector(512)) vector_cosine_ops)" in definition
    assert "m='16'" in definition and "ef_construction='128'" in definition
    assert f"WHERE (model_id = {model.pk})" in definition


@pytest.mark.django_db
def test_vector_round_trips_through_the_orm():
    vector = unit_vectors(1)[0]
    image = make_image(1, vector)
    stored = np.asarray(Embedding.objects.get(image=image).vector)
    assert stored.shape == (512,)
    np.testing.assert_allclose(stored, vector, rtol=1e-6)


@pytest.mark.django_db
def test_nearest_neighbour_query_returns_the_exact_nearest_image():
    vectors = unit_vectors(300, seed=1)
    for index, vector in enumerate(vectors):
        make_image(index, vector)
    query = unit_vectors(1, seed=2)[0]
    expected_order = np.argsort(-(vectors @ query))[:5]
    nearest = list(
        Embedding.objects.order_by(CosineDistance("vector", query)).values_list(
            "image__sha256", flat=True
        )[:5]
    )
    assert nearest[0] == f"{expected_order[0]:064x}"
    assert nearest == [f"{index:064x}" for index in expected_order]

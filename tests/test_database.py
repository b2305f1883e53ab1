"""The schema on real PostgreSQL + pgvector: extension, HNSW index, vectors through the ORM."""

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from pgvector.django import CosineDistance

from gallery.indexing import registry, vector_index
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
    assert "USING hnsw (((vector)::halfvec(512)) halfvec_cosine_ops)" in definition
    assert "m='32'" in definition and "ef_construction='200'" in definition
    assert f"WHERE (model_id = {model.pk})" in definition


def search_plan(model, query) -> str:
    from gallery.search import statements

    with connection.cursor() as cursor:
        # At 400 rows a sequential scan is cheaper: ask whether the index can answer at all.
        cursor.execute(
            "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off"
        )
        cursor.execute(
            f"EXPLAIN SELECT e.image_id FROM gallery_embedding e WHERE e.model_id = {model.pk} "
            f"ORDER BY {statements.distance_sql(model)} LIMIT 10",
            {"query": statements.vector_literal(query)},
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan; RESET enable_bitmapscan; RESET enable_sort")
    return plan


@pytest.mark.django_db(transaction=True)
def test_rebuild_vector_index_moves_to_the_configured_storage_while_searches_go_on(settings):
    """A library indexed as `vector` m 16 is rebuilt as halfvec m 32: every search during the
    rebuild answers, the statement follows the index it finds, and the ranking is kept."""
    import threading

    from django.core.management import call_command
    from django.db import connections

    from gallery.search.request import SearchRequest
    from gallery.search.selector import search_images

    settings.MODEL_REFRESH_SECONDS = 1
    settings.SEARCH_EXACT_MAX_ROWS = 0
    model = registry.active_model()
    vectors = unit_vectors(400, seed=3)
    for index, vector in enumerate(vectors):
        make_image(index, vector)
    with connection.cursor() as cursor:  # the index an older release built
        cursor.execute(f"DROP INDEX {model.index_name}")
        cursor.execute(vector_index.vector_index_sql(model, storage="vector", m=16))
        cursor.execute("ANALYZE gallery_embedding")
    settings.SEARCH_INDEX_STORAGE = "vector"
    query = unit_vectors(1, seed=4)[0]
    before = [hit.image.pk for hit in search_images(SearchRequest(image_vector=query)).hits]
    assert model.index_name in search_plan(model, query)
    assert "::vector(512)" in search_plan(model, query)

    settings.SEARCH_INDEX_STORAGE = "halfvec"
    answered, failures, done = [], [], threading.Event()

    def search_until_done():
        try:
            while not done.is_set():
                results = search_images(SearchRequest(image_vector=query))
                answered.append([hit.image.pk for hit in results.hits])
        except Exception as error:  # noqa: BLE001 - the test reports any failure
            failures.append(error)
        finally:
            connections.close_all()

    searcher = threading.Thread(target=search_until_done)
    searcher.start()
    try:
        call_command("rebuild_vector_index")
    finally:
        done.set()
        searcher.join(timeout=60)
    assert not failures
    assert len(answered) > 1
    registry.forget_cached_models()
    plan = search_plan(model, query)
    assert model.index_name in plan and "::halfvec(512)" in plan
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [model.index_name])
        (definition,) = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname = %s",
            [vector_index.rebuilt_index_name(model)],
        )
        assert cursor.fetchone()[0] == 0
    assert "halfvec_cosine_ops" in definition and "m='32'" in definition
    after = [hit.image.pk for hit in search_images(SearchRequest(image_vector=query)).hits]
    assert after == before


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

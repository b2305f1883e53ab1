"""Paging through search results: pages through the HNSW index continue exactly where the
previous page ended (the exact ranking, no repeats, no gaps), hybrid pages are slices of one
fused ranking, and sorting by date orders every result it says it orders."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.db import connection, transaction
from django.urls import reverse

from gallery.indexing import registry, vector_index
from gallery.models import Image
from gallery.search.request import SearchRequest
from gallery.search.selector import search_images
from tests.vector_library import bulk_load_images

COUNT = 3000  # past SEARCH_EXACT_MAX_ROWS (2,500): searches go through the HNSW index
FIRST_DAY = datetime(2021, 1, 1, tzinfo=UTC)
CAPTIONED_EVERY = 7  # these images' captions have the word "harbour"

pytestmark = pytest.mark.django_db


def random_unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, 512))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors(django_db_setup, django_db_blocker):
    """COUNT images with random unit vectors, taken on days in a scrambled order."""
    vectors = random_unit_vectors(COUNT, seed=21)
    with django_db_blocker.unblock():
        registry.forget_cached_models()
        model = registry.active_model()
        # Building the index once over every vector is much faster than inserting into it.
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {model.index_name}")
        bulk_load_images(
            vectors,
            model,
            taken_at=lambda n: FIRST_DAY + timedelta(hours=(n * 7919) % COUNT),
            caption=lambda n: f"the harbour {n}" if n % CAPTIONED_EVERY == 0 else f"photo {n}",
        )
        vector_index.create_vector_index(model)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE gallery_image")
            cursor.execute("ANALYZE gallery_embedding")
    yield vectors
    with django_db_blocker.unblock():
        Image.objects.all().delete()


@pytest.fixture
def through_the_index(settings):
    """At 3,000 rows the planner finds an exact sort cheaper than the HNSW index; without
    sorting (for this test's transaction) the index is the only way to order by distance,
    as it is in a large library. On the old code (one growing pool per page) pages through
    the index repeated rows and skipped others this way.

    Random 512-d vectors are the hardest case for HNSW: a search as wide as 400 finds every
    one of the first block's rows, so any difference from the exact ranking is paging's."""
    settings.SEARCH_EF_SEARCH = 400
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")


def exact_ranking(query: np.ndarray) -> list[tuple[int, float]]:
    """(image id, distance) of every vector, by an exact scan in the index's own expression
    (the stored vectors as the index reads them), best first, ties by id."""
    model = registry.active_model()
    storage = vector_index.index_storage(model)
    expression = vector_index.vector_expression(model, storage)
    distance = f"{expression} <=> %s::{storage}({model.dimensions})"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_indexscan = off")  # until the rollback below
        cursor.execute(
            f"SELECT e.image_id, {distance} AS distance FROM gallery_embedding e "
            f"WHERE e.model_id = %s ORDER BY distance, e.image_id",
            [_literal(query), model.pk],
        )
        ranking = [(pk, float(value)) for pk, value in cursor.fetchall()]
        transaction.set_rollback(True)
    return ranking


def _literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{value:.7g}" for value in vector.tolist()) + "]"


def every_page(request: SearchRequest, **options) -> list:
    """Every page of the search, first to last, as search_images answers them."""
    pages, page = [], 1
    while True:
        request.page = page
        results = search_images(request, **options)
        pages.append(results)
        if not results.has_next:
            return pages
        page += 1


def ids(results) -> list[int]:
    return [hit.image.pk for hit in results.hits]


def test_hnsw_pages_concatenate_to_the_exact_ranking_without_repeats_or_gaps(
    vectors, through_the_index
):
    for seed in (31, 32):
        query = random_unit_vectors(1, seed=seed)[0]
        # 50 a page, past ef_search: every block boundary of the ranking is crossed.
        pages = every_page(SearchRequest(image_vector=query, page_size=50), exact=False)
        # Through the index; the ranking's tail may be read exactly, where the index's scan
        # stops before returning every vector.
        assert pages[0].strategy == pages[20].strategy == "hnsw"
        expected = [pk for pk, _ in exact_ranking(query)]
        for number, results in enumerate(pages):
            assert ids(results) == expected[number * 50 : (number + 1) * 50], number
        seen = [pk for results in pages for pk in ids(results)]
        assert len(seen) == len(set(seen)) == COUNT
        # A page asked for on its own, with another page size, cuts the same ranking.
        alone = search_images(SearchRequest(image_vector=query, page=9, page_size=70))
        assert ids(alone) == expected[560:630]


def test_a_deep_page_is_the_same_with_or_without_the_cache(vectors, settings, through_the_index):
    query = random_unit_vectors(1, seed=33)[0]
    request = SearchRequest(image_vector=query, page=30, page_size=80)
    cached = ids(search_images(request, exact=False))  # fills the cache
    assert ids(search_images(request, exact=False)) == cached
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    assert ids(search_images(request, exact=False)) == cached
    assert cached == [pk for pk, _ in exact_ranking(query)][2320:2400]


def test_date_sort_with_a_minimum_score_orders_every_match(vectors, settings):
    settings.SEARCH_DATE_SORT_POOL = 50  # the old pool: far fewer than the matches
    query = random_unit_vectors(1, seed=34)[0]
    ranking = exact_ranking(query)
    min_score = 0.05
    matching = {pk for pk, distance in ranking if distance <= 1 - min_score}
    assert 300 < len(matching) < COUNT
    taken = dict(Image.objects.filter(pk__in=matching).values_list("pk", "taken_at"))
    expected = sorted(matching, key=lambda pk: (taken[pk], pk), reverse=True)
    request = SearchRequest(image_vector=query, min_score=min_score, sort="date", page_size=100)
    pages = every_page(request, exact=False)
    assert [pk for results in pages for pk in ids(results)] == expected
    assert {results.sorted_among for results in pages} == {len(matching)}
    assert f"all {len(matching):,} results" in pages[0].sorted_note


def test_date_sort_without_a_minimum_score_says_how_many_best_matches_it_orders(
    vectors, settings, through_the_index
):
    settings.SEARCH_DATE_SORT_POOL = 120
    query = random_unit_vectors(1, seed=35)[0]
    best = [pk for pk, _ in exact_ranking(query)[:120]]
    taken = dict(Image.objects.filter(pk__in=best).values_list("pk", "taken_at"))
    pages = every_page(SearchRequest(image_vector=query, sort="date", page_size=50), exact=False)
    assert [pk for results in pages for pk in ids(results)] == sorted(
        best, key=lambda pk: (taken[pk], pk), reverse=True
    )
    assert pages[0].sorted_among == 120
    assert "the 120 best matches" in pages[0].sorted_note


def test_hybrid_pages_are_slices_of_one_fused_ranking(vectors, settings, through_the_index):
    settings.SEARCH_HYBRID_DEPTH = 150
    request = SearchRequest(text="harbour", mode="hybrid", page_size=100)
    whole = [pk for results in every_page(request, exact=False) for pk in ids(results)]
    # 150 semantic and 150 keyword rows, fused: at most 300, each once.
    assert 150 < len(whole) <= 300 and len(whole) == len(set(whole))
    small = every_page(SearchRequest(text="harbour", mode="hybrid", page_size=17), exact=False)
    assert [pk for results in small for pk in ids(results)] == whole


def test_api_next_links_continue_exactly_and_say_what_a_date_sort_orders(
    vectors, client, django_user_model, settings
):
    settings.SEARCH_DATE_SORT_POOL = 60
    client.force_login(django_user_model.objects.create_user("pager", password="pw-long-9x"))
    like = Image.objects.order_by("pk")[5].pk
    url = reverse("api_v1:search") + f"?like={like}&page_size=40&sort=date"
    seen = []
    while url:
        answer = client.get(url).json()
        assert answer["sorted_among"] == 60
        seen += [hit["id"] for hit in answer["results"]]
        url = answer["next"]
    assert len(seen) == len(set(seen)) == 60
    page = client.get(reverse("search") + f"?like={like}&sort=date")
    assert "Newest first among the 60 best matches" in page.content.decode()
    relevance = client.get(reverse("api_search") + f"?like={like}&page_size=10").json()
    assert relevance["sorted_among"] is None

"""Search on real PostgreSQL + pgvector with known vectors, checked against exact numpy ranking."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from django.core.cache import cache

from gallery.indexing import registry
from gallery.models import Embedding, EmbeddingModel, Image, Tag
from gallery.search import query_vectors
from gallery.search.request import SearchError, SearchRequest
from gallery.search.selector import search_images
from tests.conftest import active_encoder
from tests.vector_library import bulk_load_images

COUNT = 2000
RARE_EVERY = 100  # 1 % of images carry the tag "rare"
COMMON_EVERY = 10  # 10 % carry "common"
FIRST_DAY = datetime(2020, 1, 1, tzinfo=UTC)


def clustered_unit_vectors(count: int, seed: int, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, 512))
    vectors = centres[rng.integers(0, clusters, count)] + rng.normal(scale=0.8, size=(count, 512))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


class Library:
    def __init__(self, ids, vectors, taken, rare, common):
        self.ids, self.vectors, self.taken = np.array(ids), vectors, np.array(taken)
        self.rare, self.common = np.array(rare), np.array(common)

    def exact(self, query, mask=None, k=None) -> list[int]:
        scores = self.vectors @ query
        order = np.argsort(-scores, kind="stable")
        if mask is not None:
            order = order[mask[order]]
        return [int(i) for i in self.ids[order[:k]]]


@pytest.fixture(scope="module")
def library(django_db_setup, django_db_blocker):
    vectors = clustered_unit_vectors(COUNT, seed=3)
    with django_db_blocker.unblock():
        registry.forget_cached_models()
        model = registry.active_model()
        rare, common = Tag.objects.create(name="rare"), Tag.objects.create(name="Common")
        images = bulk_load_images(
            vectors, model, taken_at=lambda n: FIRST_DAY + timedelta(days=n % 1500, minutes=n)
        )
        through = Image.tags.through
        through.objects.bulk_create(
            [
                through(image_id=image.pk, tag_id=rare.pk)
                for n, image in enumerate(images)
                if n % RARE_EVERY == 0
            ]
            + [
                through(image_id=image.pk, tag_id=common.pk)
                for n, image in enumerate(images)
                if n % COMMON_EVERY == 0
            ]
        )
        with __import__("django").db.connection.cursor() as cursor:
            cursor.execute("ANALYZE gallery_image")
            cursor.execute("ANALYZE gallery_embedding")
    yield Library(
        [image.pk for image in images],
        vectors,
        [image.taken_at for image in images],
        [n % RARE_EVERY == 0 for n in range(COUNT)],
        [n % COMMON_EVERY == 0 for n in range(COUNT)],
    )
    with django_db_blocker.unblock():
        Image.objects.all().delete()
        Tag.objects.all().delete()


def queries(count: int, seed: int = 11) -> np.ndarray:
    return clustered_unit_vectors(count, seed=seed)


def ids_of(results) -> list[int]:
    return [hit.image.pk for hit in results.hits]


def recall(found: list[int], expected: list[int]) -> float:
    return len(set(found) & set(expected)) / len(expected)


pytestmark = pytest.mark.django_db


def test_small_library_is_searched_exactly_and_matches_numpy(library):
    for query in queries(5):
        results = search_images(SearchRequest(image_vector=query, page_size=10))
        assert results.strategy == "exact"
        assert ids_of(results) == library.exact(query, k=10)
        expected_scores = np.sort(library.vectors @ query)[::-1][:10]
        np.testing.assert_allclose([hit.score for hit in results.hits], expected_scores, atol=1e-5)


def test_hnsw_results_match_exact_ranking(library):
    recalls = []
    for query in queries(20):
        results = search_images(SearchRequest(image_vector=query, page_size=10), exact=False)
        assert results.strategy == "hnsw" and len(results.hits) == 10
        recalls.append(recall(ids_of(results), library.exact(query, k=10)))
    assert np.mean(recalls) >= 0.95


def test_a_first_page_through_the_index_is_one_statement_with_its_images(library):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    query = queries(1, seed=21)[0]
    request = SearchRequest(image_vector=query, page_size=10)
    search_images(request, exact=False)  # the counts and the index kept per process
    with CaptureQueriesContext(connection) as captured:
        results = search_images(request, exact=False)
    # The index settings, the ranked block and the page's images and tags: one round trip.
    assert len(captured.captured_queries) == 1, captured.captured_queries
    assert "hnsw.ef_search" in captured.captured_queries[0]["sql"]
    # (halfvec distances may swap near-ties: compared as sets)
    assert recall(ids_of(results), library.exact(query, k=10)) >= 0.9
    assert [hit.semantic_rank for hit in results.hits] == list(range(1, 11))
    # Each hit carries its tags, as a page read by id does.
    assert [hit.tag_names for hit in results.hits] == [
        sorted(hit.image.tags.values_list("name", flat=True), key=str.lower) for hit in results.hits
    ]
    # Page 2 lies in the same first block: again one statement, continuing page 1 exactly.
    with CaptureQueriesContext(connection) as captured:
        second = search_images(SearchRequest(image_vector=query, page=2, page_size=10), exact=False)
    assert len(captured.captured_queries) == 1
    both = search_images(SearchRequest(image_vector=query, page_size=20), exact=False)
    assert ids_of(results) + ids_of(second) == ids_of(both)


def test_a_large_library_is_sized_by_the_index_estimate_not_counted(library, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from gallery.search import statements

    model = registry.active_model()
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [model.index_name])
        estimate = int(cursor.fetchone()[0])
    assert abs(estimate - COUNT) <= COUNT * 0.1  # ANALYZE's estimate of the partial index
    # Large against the exact-scan limit: the estimate, with no count of the rows.
    settings.SEARCH_EXACT_MAX_ROWS = 10
    statements.vector_counts.clear()
    with CaptureQueriesContext(connection) as captured:
        assert statements.searchable_count(model) == estimate
    assert not any("count(" in query["sql"].lower() for query in captured.captured_queries)
    # Near the limit, the rows are counted: whether to scan exactly depends on it.
    settings.SEARCH_EXACT_MAX_ROWS = 2500
    statements.vector_counts.clear()
    assert statements.searchable_count(model) == COUNT


def test_one_percent_filter_returns_full_k_and_the_exact_filtered_ranking(library):
    recalls = []
    for query in queries(20, seed=12):
        results = search_images(
            SearchRequest(image_vector=query, tags_any=["rare"], page_size=10), exact=False
        )
        assert len(results.hits) == 10  # 20 images match, so a full page is owed
        assert all("rare" in hit.tag_names for hit in results.hits)
        recalls.append(recall(ids_of(results), library.exact(query, library.rare, k=10)))
    assert np.mean(recalls) >= 0.95


def test_concatenated_pages_equal_one_long_exact_ranking_past_1000_results(library):
    query = queries(1, seed=13)[0]
    seen = []
    page = 1
    while True:
        results = search_images(SearchRequest(image_vector=query, page=page, page_size=100))
        seen += ids_of(results)
        if not results.has_next:
            break
        page += 1
    assert page == 20 and len(seen) == COUNT
    assert len(set(seen)) == len(seen)
    assert seen == library.exact(query)
    # Deep pages through the index keep going too (peers stop at 40-1000 results).
    deep = search_images(SearchRequest(image_vector=query, page=15, page_size=80), exact=False)
    assert len(deep.hits) == 80 and deep.has_next


def test_tag_filters_any_all_and_exclude(library):
    query = queries(1, seed=14)[0]
    both = library.rare & library.common
    results = search_images(
        SearchRequest(image_vector=query, tags_all=["RARE", "common"], page_size=100)
    )
    assert ids_of(results) == library.exact(query, both)
    excluded = search_images(SearchRequest(image_vector=query, tags_not=["common"], page_size=50))
    assert ids_of(excluded) == library.exact(query, ~library.common, k=50)
    either = search_images(
        SearchRequest(image_vector=query, tags_any=["rare", "common"], page_size=50)
    )
    assert ids_of(either) == library.exact(query, library.rare | library.common, k=50)


def test_date_range_is_inclusive_of_both_days(library):
    query = queries(1, seed=15)[0]
    after, before = date(2021, 3, 1), date(2021, 3, 31)
    in_range = np.array([after <= taken.date() <= before for taken in library.taken])
    results = search_images(
        SearchRequest(image_vector=query, after=after, before=before, page_size=100)
    )
    assert ids_of(results) == library.exact(query, in_range, k=100)


def test_min_score_cuts_off_weaker_matches(library):
    query = library.vectors[7]
    results = search_images(SearchRequest(image_vector=query, min_score=0.5, page_size=100))
    expected = [
        pk for pk, score in zip(library.ids, library.vectors @ query, strict=True) if score >= 0.5
    ]
    assert sorted(ids_of(results)) == sorted(int(pk) for pk in expected)
    assert all(hit.score >= 0.5 for hit in results.hits)


def test_sort_by_date_orders_the_relevant_hits_newest_first(library, settings):
    settings.SEARCH_DATE_SORT_POOL = 100
    query = queries(1, seed=16)[0]
    results = search_images(SearchRequest(image_vector=query, sort="date", page_size=100))
    relevant = set(library.exact(query, k=100))
    assert set(ids_of(results)) == relevant
    dates = [hit.image.taken_at for hit in results.hits]
    assert dates == sorted(dates, reverse=True)


def test_empty_results_name_the_filter_that_removed_everything(library):
    query = queries(1, seed=17)[0]
    Tag.objects.create(name="unused")
    results = search_images(SearchRequest(image_vector=query, tags_all=["rare", "unused"]))
    assert results.hits == []
    assert results.empty_reason == (
        "No image passes the tags that must all be present together with the filters before it."
    )
    results = search_images(
        SearchRequest(image_vector=query, tags_any=["rare"], after=date(2030, 1, 1))
    )
    assert "the start date" in results.empty_reason
    results = search_images(SearchRequest(image_vector=query, min_score=0.99))
    best = float(np.max(library.vectors @ query))
    assert results.empty_reason == (
        f"No image reaches the minimum score 0.99 (the best match scores {best:.3f})."
    )


def test_weak_best_match_is_reported_as_not_confident(library, settings):
    query = queries(1, seed=18)[0]
    best = float(np.max(library.vectors @ query))
    settings.SEARCH_IMAGE_CONFIDENCE = best + 0.01
    assert not search_images(SearchRequest(image_vector=query)).confident
    settings.SEARCH_IMAGE_CONFIDENCE = best - 0.01
    assert search_images(SearchRequest(image_vector=query)).confident


@pytest.mark.parametrize(
    ("request_fields", "parameter", "message"),
    [
        ({"tags_any": ["nosuchtag"]}, "tags_any", "There is no tag named 'nosuchtag'."),
        ({"after": date(2022, 5, 1), "before": date(2022, 1, 1)}, "after", "reversed"),
        ({"sort": "random"}, "sort", "sort must be one of"),
        ({"page": 0}, "page", "page must be 1 or more"),
        ({"page_size": 1000}, "page_size", "between 1 and 100"),
        ({"min_score": 3.0}, "min_score", "between -1 and 1"),
        ({"text": "+ + -"}, "q", "must be followed by words"),
        ({"text": "3:"}, "q", "The weight 3 has no words after it."),
        ({"text": "x" * 10_000}, "q", "the limit is 1,000"),
        ({"text": "- people"}, "q", "not only '-' terms"),
        ({"text": "dog - dog"}, "q", "cancel each other out"),
        ({"like_image_id": 10**9}, "like", "There is no image"),
    ],
)
def test_bad_requests_get_a_clear_message_naming_the_parameter(
    library, request_fields, parameter, message
):
    with pytest.raises(SearchError) as failure:
        search_images(SearchRequest(**request_fields))
    assert failure.value.parameter == parameter
    assert message in str(failure.value)


def test_sql_metacharacters_are_just_words(library):
    results = search_images(SearchRequest(text="'; DROP TABLE gallery_image; --", page_size=5))
    assert len(results.hits) == 5
    assert Image.objects.count() == COUNT


def test_compositional_query_weights_and_negates_text_vectors(library):
    vector, has_image = query_vectors.query_vector(SearchRequest(text="beach + 2:sunset - people"))
    parts = active_encoder().encode_texts(["beach", "sunset", "people"])
    expected = parts[0] + 2 * parts[1] - parts[2]
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)
    assert not has_image


def test_text_and_image_combine_and_more_like_this_uses_the_stored_vector(library):
    stored = library.vectors[42]
    vector, has_image = query_vectors.query_vector(
        SearchRequest(text="red", like_image_id=int(library.ids[42]))
    )
    expected = active_encoder().encode_texts(["red"])[0] + stored
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)
    assert has_image
    alone = search_images(SearchRequest(like_image_id=int(library.ids[42]), page_size=1))
    assert ids_of(alone) == [int(library.ids[42])]


def test_text_vectors_are_cached_in_process_and_in_redis(library, settings):
    settings.TEXT_VECTOR_CACHE_SIZE = 3
    query_vectors.clear_text_vector_cache()
    for text in ["one", "two", "three", "four", "five"]:
        query_vectors.text_vector(text)
    assert len(query_vectors._text_vectors) == 3  # bounded LRU
    key, cached = next(reversed(query_vectors._text_vectors.items()))
    stored = np.frombuffer(cache.get(key), dtype=np.float32)
    np.testing.assert_array_equal(stored, cached)
    np.testing.assert_allclose(cached, active_encoder().encode_texts(["five"])[0], atol=1e-6)
    query_vectors.clear_text_vector_cache()
    np.testing.assert_array_equal(query_vectors.text_vector("five"), cached)  # served from Redis


def test_only_vectors_of_the_configured_model_are_searched(library):
    other = Image.objects.get(pk=library.ids[0])
    query = library.vectors[0]
    assert ids_of(search_images(SearchRequest(image_vector=query, page_size=1))) == [other.pk]
    active = registry.active_model()
    retired = EmbeddingModel.objects.create(
        model_id="another-model", architecture="vs-test-tiny", dimensions=512, state="retired"
    )
    Embedding.objects.filter(image=other, model=active).update(model=retired)
    try:
        top = ids_of(search_images(SearchRequest(image_vector=query, page_size=5)))
        assert other.pk not in top
    finally:
        Embedding.objects.filter(image=other, model=retired).update(model=active)
        retired.delete()


def test_excluding_a_tag_nobody_has_excludes_nothing(library):
    query = queries(1, seed=31)[0]
    plain = search_images(SearchRequest(image_vector=query, page_size=20))
    excluded = search_images(
        SearchRequest(image_vector=query, tags_not=["no-such-tag", "common"], page_size=20)
    )
    assert ids_of(excluded) == library.exact(query, ~library.common, k=20)
    assert ids_of(
        search_images(SearchRequest(image_vector=query, tags_not=["nope"], page_size=20))
    ) == ids_of(plain)
    with pytest.raises(SearchError, match="There is no tag named 'nope'"):
        search_images(SearchRequest(image_vector=query, tags_any=["nope"]))

"""Keyword and hybrid search: the stored document, its upkeep on every change, reciprocal rank
fusion with the vector ranking, and the `mode` parameter of the page and both APIs."""

from datetime import date

import pytest
from django.urls import reverse

from gallery.indexing.text_reading import store_image_text
from gallery.library import lifecycle
from gallery.library.ingest import ingest_image
from gallery.models import Image, Tag
from gallery.search.keyword import RRF_K
from gallery.search.request import SearchError, SearchRequest
from gallery.search.selector import search_images
from tests.images import distinct_images, image_bytes

pytestmark = pytest.mark.django_db


def ids(results) -> list[int]:
    return [hit.image.pk for hit in results.hits]


def ranking(text: str, mode: str, **filters) -> list[int]:
    return ids(search_images(SearchRequest(text=text, mode=mode, page_size=100, **filters)))


def caption(image: Image, text: str) -> None:
    Image.objects.filter(pk=image.pk).update(caption=text)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "editor", password="pw-long-enough-9", is_staff=True
    )


def test_hybrid_ranking_is_the_reciprocal_rank_fusion_of_both_rankings(indexed_images):
    # Three documents with the word, at different densities: a keyword ranking of three.
    caption(indexed_images[3], "lighthouse lighthouse lighthouse")
    caption(indexed_images[7], "a lighthouse on a rock by the sea at dusk, far away")
    caption(indexed_images[12], "the lighthouse keeper")
    semantic = ranking("lighthouse", "semantic")
    keyword = ranking("lighthouse", "keyword")
    assert len(semantic) == 30 and len(keyword) == 3
    assert keyword[0] == indexed_images[3].pk

    fused: dict[int, float] = {}
    for order in (semantic, keyword):
        for rank, pk in enumerate(order, start=1):
            fused[pk] = fused.get(pk, 0.0) + 1 / (RRF_K + rank)
    expected = sorted(fused, key=lambda pk: (-fused[pk], pk))

    results = search_images(SearchRequest(text="lighthouse", mode="hybrid", page_size=100))
    assert ids(results) == expected
    for hit in results.hits:
        assert hit.score == pytest.approx(fused[hit.image.pk], abs=1e-9)
        assert hit.semantic_rank == semantic.index(hit.image.pk) + 1
        in_keyword = hit.image.pk in keyword
        assert hit.keyword_rank == (keyword.index(hit.image.pk) + 1 if in_keyword else None)
        assert hit.matched_by == (["semantic", "keyword"] if in_keyword else ["semantic"])
    # Pages of the fused ranking put together are the same ranking.
    paged = []
    for page in range(1, 6):
        request = SearchRequest(text="lighthouse", mode="hybrid", page=page, page_size=7)
        paged += ids(search_images(request))
    assert paged == expected


def test_a_caption_word_is_found_by_keyword_and_hybrid_but_not_by_random_vectors(indexed_images):
    semantic = ranking("zebra", "semantic")
    target = Image.objects.get(pk=semantic[-1])  # the vectors' last choice (random weights)
    caption(target, "A zebra, crossing the street!")
    assert ranking("zebra", "semantic")[0] != target.pk
    assert ranking("zebra", "keyword") == [target.pk]
    results = search_images(SearchRequest(text="zebra"))  # words: hybrid by default
    assert results.mode == "hybrid" and results.confident
    assert ids(results)[0] == target.pk
    assert results.hits[0].matched_by == ["semantic", "keyword"]
    # Any word of the query may match; the others do not have to.
    assert ranking("a striped zebra", "keyword") == [target.pk]


@pytest.mark.parametrize("typed", ["zeb", "ZEBR", "crossi", "stree", "bicy", "a red bicy"])
def test_the_last_word_is_a_prefix(indexed_images, typed):
    caption(indexed_images[5], "A zebra crossing the street on a bicycle")
    assert ranking(typed, "keyword") == [indexed_images[5].pk]
    assert ranking(typed, "hybrid")[0] == indexed_images[5].pk


def test_stop_words_are_no_prefixes(indexed_images):
    caption(indexed_images[5], "then there was a theme")
    assert ranking("the", "keyword") == []


@pytest.mark.parametrize(
    "typed",
    [
        "!!!",
        "'",
        "a & | b",
        "zebra:*",
        "(((",
        "\\",
        "zebra) | (!",
        "' OR 1=1 --",
        "<-> !! &&",
        "naïve café ß 東京",
        "2:zebra - 'quoted'",
        "NULL",
        "x² ½ ⅓ ™ 𝟙",
    ],
)
def test_punctuation_and_tsquery_syntax_are_just_separators(indexed_images, typed):
    caption(indexed_images[5], "zebra")
    for mode in ("keyword", "hybrid"):
        results = search_images(SearchRequest(text=typed, mode=mode))
        assert results.mode == mode
        if "zebra" in typed and "-" not in typed:
            assert ids(results)[0] == indexed_images[5].pk
    punctuation = search_images(SearchRequest(text="!!!", mode="keyword"))
    assert punctuation.hits == [] and "no words" in punctuation.empty_reason


def test_minus_terms_exclude_their_words(indexed_images):
    caption(indexed_images[1], "zebra on grass")
    caption(indexed_images[2], "zebra in a zoo")
    assert ranking("zebra - zoo", "keyword") == [indexed_images[1].pk]


def test_filters_apply_to_both_rankings(indexed_images):
    odd, even = indexed_images[5], indexed_images[6]
    caption(odd, "zebra")
    caption(even, "zebra")
    for mode in ("keyword", "hybrid"):
        found = search_images(SearchRequest(text="zebra", mode=mode, tags_any=["odd"]))
        assert all(hit.tag_names == ["odd"] for hit in found.hits)
        assert odd.pk in ids(found) and even.pk not in ids(found)
        assert even.pk not in ranking("zebra", mode, tags_not=["even"])
    Image.objects.filter(pk=even.pk).update(taken_on=date(2001, 5, 5))
    Image.objects.exclude(pk=even.pk).update(taken_on=date(2020, 1, 1))
    for mode in ("keyword", "hybrid"):
        old = ranking("zebra", mode, before=date(2010, 1, 1))
        assert old == [even.pk]
        assert even.pk not in ranking("zebra", mode, after=date(2010, 1, 1))
    filtered = search_images(SearchRequest(text="zebra", mode="keyword", tags_all=["odd", "even"]))
    assert filtered.hits == [] and "tags that must all be present" in filtered.empty_reason


def test_editing_caption_and_tags_updates_the_document(indexed_images, staff):
    image = indexed_images[9]
    caption(image, "zebra")
    lifecycle.edit_image(image=image, caption="a lighthouse at night", tags=["harbour"], by=staff)
    assert ranking("zebra", "keyword") == []
    assert ranking("lighthouse", "keyword") == [image.pk]
    assert ranking("harbour", "keyword") == [image.pk]
    assert image.pk not in ranking("odd", "keyword")  # the tag it lost
    lifecycle.tag_images(images=[image, indexed_images[10]], tags=["seagull"], by=staff)
    assert set(ranking("seagull", "keyword")) == {image.pk, indexed_images[10].pk}
    Tag.objects.filter(name="harbour").update(name="marina")  # a rename, as the admin does
    assert ranking("harbour", "keyword") == []
    assert ranking("marina", "hybrid")[0] == image.pk
    Tag.objects.get(name="seagull").delete()
    assert ranking("seagull", "keyword") == []


def test_uploading_the_same_content_again_merges_tags_into_the_document(indexed_images):
    data = distinct_images(30)[4]
    result = ingest_image(data=data, filename="again.png", tag_names=["kestrel"], enqueue=False)
    assert not result.created and result.image.pk == indexed_images[4].pk
    assert ranking("kestrel", "keyword") == [indexed_images[4].pk]


def test_file_name_words_and_text_read_in_the_image_are_searchable(indexed_images):
    assert ranking("photo17", "keyword")[0] == indexed_images[17].pk
    store_image_text(image_id=indexed_images[20].pk, text="PLATFORM 9\nMind the gap")
    assert ranking("platform", "keyword") == [indexed_images[20].pk]
    assert ranking("mind the gap", "hybrid")[0] == indexed_images[20].pk


def test_an_image_without_a_vector_yet_is_found_by_its_words(indexed_images):
    pending = ingest_image(
        data=image_bytes(size=(80, 80), pattern=99),
        filename="new.png",
        caption="giraffe",
        enqueue=False,
    ).image
    assert pending.status == Image.Status.PENDING
    assert ranking("giraffe", "keyword") == [pending.pk]
    # Keyword rank 1 only: level with the semantic first (1 / 61 each), after it by id.
    hybrid = search_images(SearchRequest(text="giraffe")).hits
    (found,) = [hit for hit in hybrid[:2] if hit.image.pk == pending.pk]
    assert found.matched_by == ["keyword"] and found.similarity is None


def test_min_score_trims_the_semantic_ranking_only(indexed_images):
    caption(indexed_images[8], "zebra")
    hybrid = search_images(SearchRequest(text="zebra", mode="hybrid", min_score=1.0))
    assert ids(hybrid) == [indexed_images[8].pk]
    assert hybrid.hits[0].matched_by == ["keyword"]
    with pytest.raises(SearchError) as refused:
        search_images(SearchRequest(text="zebra", mode="keyword", min_score=0.2))
    assert refused.value.parameter == "min_score"


def test_modes_without_words(indexed_images):
    like = search_images(SearchRequest(like_image_id=indexed_images[0].pk))
    assert like.mode == "semantic" and like.hits[0].matched_by == ["semantic"]
    with pytest.raises(SearchError) as refused:
        search_images(SearchRequest(like_image_id=indexed_images[0].pk, mode="keyword"))
    assert refused.value.parameter == "mode"


def test_sort_by_date_keeps_the_fused_hits(indexed_images):
    for n in (2, 4, 6):
        caption(indexed_images[n], "zebra")
    by_date = search_images(SearchRequest(text="zebra", mode="keyword", sort="date"))
    taken = [hit.image.taken_at for hit in by_date.hits]
    assert taken == sorted(taken, reverse=True) and len(taken) == 3


@pytest.fixture
def member(client, django_user_model):
    """The library is private by default (SITE_ACCESS): these searches come from a member."""
    user = django_user_model.objects.create_user("member", password="pw-long-enough-9")
    client.force_login(user)
    return user


@pytest.mark.parametrize("url", ["api_search", "api_v1:search"])
def test_both_apis_take_a_mode_and_say_where_each_hit_came_from(
    client, member, indexed_images, url
):
    caption(indexed_images[11], "zebra")
    body = client.get(reverse(url), {"q": "zeb", "mode": "keyword"}).json()
    assert body["mode"] == "keyword"
    (hit,) = body["results"]
    assert hit["id"] == indexed_images[11].pk
    assert hit["matched_by"] == ["keyword"] and hit["keyword_rank"] == 1
    assert hit["semantic_rank"] is None
    body = client.get(reverse(url), {"q": "zebra"}).json()
    assert body["mode"] == "hybrid" and body["results"][0]["matched_by"] == ["semantic", "keyword"]
    assert body["results"][0]["score"] == pytest.approx(
        1 / (RRF_K + 1) + 1 / (RRF_K + body["results"][0]["semantic_rank"]), abs=1e-6
    )
    assert client.get(reverse(url), {"like": indexed_images[0].pk}).json()["mode"] == "semantic"
    bad = client.get(reverse(url), {"q": "zebra", "mode": "fuzzy"})
    assert bad.status_code == 400 and bad.json()["error"]["parameter"] == "mode"
    refused = client.get(reverse(url), {"like": indexed_images[0].pk, "mode": "keyword"})
    assert refused.status_code == 400 and refused.json()["error"]["parameter"] == "mode"


def test_the_search_page_shows_where_each_hit_came_from(client, member, indexed_images):
    caption(indexed_images[11], "zebra")
    page = client.get(reverse("search"), {"q": "zebra"}).content.decode()
    assert "semantic #" in page and "keyword #1" in page
    bad = client.get(reverse("search"), {"q": "zebra", "mode": "fuzzy"})
    assert bad.status_code == 400

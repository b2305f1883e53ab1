"""The search page and GET/POST /api/search over HTTP, end to end from upload to results."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from gallery.indexing import registry
from gallery.models import EmbeddingModel, Image
from tests.conftest import active_encoder, active_vector, database_gone
from tests.images import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def member(client, django_user_model):
    """The library is private by default (SITE_ACCESS): these searches come from a member."""
    user = django_user_model.objects.create_user("member", password="pw-long-enough-9")
    client.force_login(user)
    return user


stored_vector = active_vector


def test_upload_then_worker_then_text_search_finds_the_image(
    client, django_user_model, media_root, queue, run_burst_worker
):
    client.force_login(django_user_model.objects.create_user("di", password="pw-long-enough-3"))
    data = image_bytes(size=(500, 400), fmt="JPEG", pattern=41)
    client.post(reverse("upload"), {"files": [SimpleUploadedFile("bike.jpg", data)]})
    run_burst_worker()
    response = client.get(reverse("api_search"), {"q": "a red bicycle leaning on a wall"})
    assert response.status_code == 200
    (hit,) = response.json()["results"]
    image = Image.objects.get()
    assert hit["id"] == image.pk
    expected = float(
        active_encoder().encode_texts(["a red bicycle leaning on a wall"])[0] @ stored_vector(image)
    )
    # No caption word matches: hybrid (the default) found it by its vector alone.
    assert hit["matched_by"] == ["semantic"]
    assert hit["similarity"] == pytest.approx(expected, abs=1e-4)
    assert hit["original_url"].endswith(image.file.url)
    assert client.get(hit["thumbnail_url"]).status_code == 200


def test_api_returns_scored_results_with_tags_dates_and_working_paging_links(
    client, indexed_images
):
    response = client.get(
        reverse("api_search"), {"q": "photo", "tags_any": "even", "page_size": 10}
    )
    body = response.json()
    assert response.status_code == 200
    assert len(body["results"]) == 10 and body["has_next"] and body["previous"] is None
    assert all(result["tags"] == ["even"] for result in body["results"])
    scores = [result["score"] for result in body["results"]]
    assert scores == sorted(scores, reverse=True)
    second = client.get(body["next"]).json()
    assert len(second["results"]) == 5 and not second["has_next"]
    assert {r["id"] for r in body["results"]}.isdisjoint(r["id"] for r in second["results"])
    assert second["previous"] and "page=1" in second["previous"]
    assert body["results"][0]["taken_at"]


def test_api_post_with_an_image_file_searches_by_that_image(client, indexed_images):
    target = indexed_images[7]
    with open(target.file.path, "rb") as original:
        response = client.post(
            reverse("api_search"),
            {"image": SimpleUploadedFile("query.png", original.read()), "page_size": 3},
        )
    body = response.json()
    assert response.status_code == 200
    assert body["results"][0]["id"] == target.pk
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    token = body["image_token"]
    # The paging link carries the image token, so later pages need no upload.
    follow = client.get(body["next"]).json()
    assert follow["page"] == 2 and token in body["next"]
    assert len(follow["results"]) == 3


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"q": "dog", "min_score": "high"}, "min_score", "Enter a number."),
        ({"q": "dog", "min_score": "2"}, "min_score", "less than or equal to 1"),
        ({"q": "dog", "after": "yesterday"}, "after", "Enter a valid date."),
        ({"q": "dog", "after": "2024-05-01", "before": "2024-01-01"}, "after", "reversed"),
        ({"q": "dog", "sort": "random"}, "sort", "Select a valid choice."),
        ({"q": "dog", "page": "0"}, "page", "greater than or equal to 1"),
        ({"q": "dog", "page_size": "500"}, "page_size", "less than or equal to 100"),
        ({"q": "dog", "tags_all": "nosuch"}, "tags_all", "There is no tag named 'nosuch'."),
        ({"q": "+ + -"}, "q", "must be followed by words"),
        ({"q": "x" * 10_000}, "q", "the limit is 1,000"),
        ({}, "q", "Give q (text), like (an image id) or an image file."),
        ({"like": "999999"}, "like", "There is no image 999999."),
        ({"image_token": "expired0token"}, "image", "has expired"),
    ],
)
def test_api_rejects_bad_parameters_with_400_naming_the_parameter(
    client, indexed_images, params, parameter, message
):
    response = client.get(reverse("api_search"), params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["parameter"] == parameter
    assert message in error["message"]


def test_api_rejects_a_query_image_that_is_not_an_image(client, indexed_images):
    response = client.post(
        reverse("api_search"), {"image": SimpleUploadedFile("x.jpg", b"not an image")}
    )
    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == "image"
    assert "not an image file" in response.json()["error"]["message"]


def test_search_page_shows_results_with_scores_and_more_like_this(client, indexed_images):
    page = client.get(reverse("search"), {"q": "photo", "tags_any": "odd"}).content.decode()
    assert page.count('class="card"') == 15
    assert f"?like={indexed_images[1].pk}" in page
    assert 'class="score"' in page
    detail = client.get(reverse("image_detail", args=[indexed_images[1].pk])).content.decode()
    assert "More like this" in detail and "photo 1" in detail


def test_search_page_explains_empty_results_and_weak_matches(client, indexed_images, settings):
    page = client.get(reverse("search"), {"q": "photo", "tags_all": "odd, even"}).content.decode()
    assert "No image passes the tags that must all be present" in page
    settings.SEARCH_TEXT_CONFIDENCE = 1.0
    # Words that no caption has: only the vectors, too weak, found something.
    page = client.get(reverse("search"), {"q": "a zebra"}).content.decode()
    assert "No confident match" in page
    bad = client.get(reverse("search"), {"q": "3:"})
    assert bad.status_code == 400 and "The weight 3 has no words after it." in bad.content.decode()


def test_search_page_image_upload_redirects_to_a_pageable_address(client, indexed_images):
    with open(indexed_images[3].file.path, "rb") as original:
        response = client.post(
            reverse("search"),
            {"image": SimpleUploadedFile("q.png", original.read()), "page_size": "5"},
        )
    assert response.status_code == 302 and "image_token=" in response["Location"]
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert page.content.decode().count('class="card"') == 5
    assert "the uploaded image" in page.content.decode()


def test_a_posted_search_encodes_and_searches_once(client, indexed_images, monkeypatch):
    from gallery.search import query_vectors, selector

    calls = {"encode": 0, "search": 0}

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(
        query_vectors, "query_image_vector", counted("encode", query_vectors.query_image_vector)
    )
    monkeypatch.setattr(selector, "search_images", counted("search", selector.search_images))
    with open(indexed_images[3].file.path, "rb") as original:
        response = client.post(
            reverse("search"),
            {"image": SimpleUploadedFile("q.png", original.read()), "q": "photo"},
            follow=True,
        )
    assert response.status_code == 200 and response.redirect_chain
    assert response.content.decode().count('class="card"') > 0
    assert calls == {"encode": 1, "search": 1}


def test_gallery_links_to_more_like_this_for_indexed_images(client, indexed_images):
    page = client.get(reverse("gallery")).content.decode()
    assert f"/search/?like={indexed_images[0].pk}" in page


def test_a_new_configured_model_does_not_change_what_answers_searches(
    client, settings, indexed_images
):
    before = client.get(reverse("api_search"), {"q": "photo"}).json()["results"]
    settings.CLIP_MODEL = "ViT-B-32"  # weights that cannot be loaded here
    settings.CLIP_PRETRAINED = "laion2b_s34b_b79k"
    after = client.get(reverse("api_search"), {"q": "photo"}).json()["results"]
    assert [hit["id"] for hit in after] == [hit["id"] for hit in before]


@pytest.fixture
def new_library_with_unloadable_weights(settings):
    """A new library configured with weights that cannot load here, its first model registered
    as `migrate` registers it."""
    settings.CLIP_MODEL = "ViT-B-32"
    settings.CLIP_PRETRAINED = "laion2b_s34b_b79k"
    EmbeddingModel.objects.all().delete()
    registry.sync_configured_model()


def test_active_model_weights_missing_make_search_unavailable_with_instructions(
    client, settings, new_library_with_unloadable_weights
):
    settings.CLIP_MODEL = "ViT-B-32"  # a new library whose configured weights cannot load
    settings.CLIP_PRETRAINED = "laion2b_s34b_b79k"
    response = client.get(reverse("api_search"), {"q": "a new query no cache has seen"})
    assert response.status_code == 503
    assert "CLIP_WEIGHTS_FILE" in response.json()["error"]["message"]
    page = client.get(reverse("search"), {"q": "another unseen query"})
    assert page.status_code == 503 and "Search is unavailable" in page.content.decode()
    health = client.get(reverse("healthz")).json()
    assert health["models"]["active"] == "ViT-B-32:laion2b_s34b_b79k"
    assert "CLIP_WEIGHTS_FILE" in health["models"]["load_errors"]["ViT-B-32:laion2b_s34b_b79k"]


def test_search_addresses_carry_only_search_parameters(client, indexed_images):
    page = client.get(reverse("search"), {"q": "photo", "page_size": 5}).content.decode()
    # Only the header's log-out form (a POST) carries a CSRF token, never the search form.
    search_form = page.split('id="search-form"', 1)[1].split("</form>", 1)[0]
    assert "csrfmiddlewaretoken" not in search_form and "csrfmiddlewaretoken=" not in page
    assert "?q=photo&amp;page_size=5&amp;page=2" in page


def test_gallery_filters_by_indexing_status_and_shows_why_an_image_failed(client, indexed_images):
    Image.objects.filter(pk=indexed_images[0].pk).update(
        status=Image.Status.FAILED, status_error="Could not read the image file: truncated"
    )
    page = client.get(reverse("gallery"), {"status": "failed"}).content.decode()
    assert page.count('class="card"') == 1
    assert "Could not read the image file: truncated" in page
    assert "failed (1)" in page and "indexed (29)" in page
    assert client.get(reverse("gallery")).content.decode().count('class="card"') == 30


def test_search_answers_with_redis_stalled_and_then_leaves_it_alone(
    client, indexed_images, stalled_redis_cache
):
    first = client.get(reverse("api_search"), {"q": "photo one"})
    assert first.status_code == 200 and first.json()["results"]
    assert stalled_redis_cache() >= 1  # it tried the cache once, and gave up
    again = client.get(reverse("api_search"), {"q": "another new text"})
    assert again.status_code == 200 and again.json()["results"]
    assert stalled_redis_cache() == 0  # within CACHE_RETRY_SECONDS the cache is skipped

    # A query image cannot be kept for paging: the page answers at once instead.
    with open(indexed_images[3].file.path, "rb") as original:
        page = client.post(
            reverse("search"),
            {"image": SimpleUploadedFile("q.png", original.read()), "page_size": "5"},
        )
    html = page.content.decode()
    assert page.status_code == 200 and html.count('class="card"') == 5
    # Other pages would search without the image: none are offered.
    assert "could not be kept for other pages" in html and "page=2" not in html


def test_pages_and_the_api_answer_503_while_the_database_is_gone(client, caplog):
    with database_gone():
        answers = [
            client.get(reverse("api_search"), {"q": "a red bicycle"}),
            client.get(reverse("gallery")),
            client.get(reverse("search"), {"q": "a red bicycle"}),
            client.get(reverse("api_search"), {"q": "a blue bicycle"}),
        ]
    api, gallery, page, api_again = answers
    assert api.status_code == 503 and api_again.status_code == 503
    assert "database is unavailable" in api.json()["error"]["message"]
    assert gallery.status_code == 503 and page.status_code == 503
    assert "Temporarily unavailable" in gallery.content.decode()
    assert gallery["Retry-After"] == "10"
    logged = [r for r in caplog.records if r.name == "gallery.web.middleware"]
    assert len(logged) == 1  # once per interval, not once per request
    assert not [r for r in caplog.records if r.name == "django.request"]

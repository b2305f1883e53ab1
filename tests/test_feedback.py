"""Relevance feedback ("more like these / less like these"): Rocchio's moved query, checked
against vectors read from the database, on the search page, both APIs and in a browser."""

import re
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from django.conf import settings
from django.urls import reverse

from gallery.indexing import registry
from gallery.library.ingest import ingest_image
from gallery.models import Embedding
from gallery.search import query_vectors
from gallery.search.request import SearchRequest
from gallery.search.selector import search_images
from tests.conftest import active_vector
from tests.images import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)

CLUSTERS = 6  # of 5 images each


@pytest.fixture
def member(client, django_user_model):
    user = django_user_model.objects.create_user("member", password="pw-long-enough-9")
    client.force_login(user)
    return user


@pytest.fixture
def clustered(indexed_images):
    """The 30 indexed images with known vectors: 6 clusters of 5 (cosine ~0.7 within a
    cluster, ~0 across, below the near-duplicate threshold); index i is in cluster i // 5."""
    model = registry.active_model()
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(CLUSTERS, model.dimensions))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for n, image in enumerate(indexed_images):
        noise = rng.normal(size=model.dimensions)
        vector = centres[n // 5] + 0.6 * noise / np.linalg.norm(noise)
        vector /= np.linalg.norm(vector)
        Embedding.objects.filter(image=image, model=model).update(
            vector=vector.astype(np.float32).tolist()
        )
    return indexed_images


def cluster_of(images, image) -> list:
    start = images.index(image) // 5 * 5
    return [other for other in images[start : start + 5] if other != image]


def ranking(request: SearchRequest) -> list[int]:
    request.page_size = 100
    return [hit.image.pk for hit in search_images(request, exact=True).hits]


def rocchio(query, relevant, irrelevant) -> np.ndarray:
    """The README's formula, written out independently of gallery/search/feedback.py."""
    moved = settings.FEEDBACK_ALPHA * query
    if relevant:
        moved = moved + settings.FEEDBACK_BETA * np.mean(relevant, axis=0)
    if irrelevant:
        moved = moved - settings.FEEDBACK_GAMMA * np.mean(irrelevant, axis=0)
    return moved / np.linalg.norm(moved)


def test_moved_query_is_the_documented_rocchio_formula_of_the_stored_vectors(clustered):
    assert (settings.FEEDBACK_ALPHA, settings.FEEDBACK_BETA, settings.FEEDBACK_GAMMA) == (
        1.0,
        0.75,
        0.25,
    )
    more, less = [clustered[3], clustered[17]], [clustered[25]]
    text = query_vectors.text_vector("photo")
    expected = rocchio(
        text / np.linalg.norm(text),
        [active_vector(image) for image in more],
        [active_vector(image) for image in less],
    )
    request = SearchRequest(
        text="photo",
        mode="semantic",  # the vectors alone, not fused with the keyword ranking
        more_ids=[image.pk for image in more],
        less_ids=[less[0].pk],
    )
    moved, _ = query_vectors.query_vector(request)
    assert np.allclose(moved, expected, atol=1e-6)
    assert np.linalg.norm(moved) == pytest.approx(1.0, abs=1e-6)

    # The search orders and scores by that vector.
    results = search_images(SearchRequest(**{**request.__dict__, "page_size": 30}), exact=True)
    vectors = {image.pk: active_vector(image) for image in clustered}
    by_numpy = sorted(vectors, key=lambda pk: -float(vectors[pk] @ expected))
    assert [hit.image.pk for hit in results.hits] == by_numpy
    for hit in results.hits:
        assert hit.score == pytest.approx(float(vectors[hit.image.pk] @ expected), abs=1e-4)


def test_marks_alone_search_for_the_mean_of_the_relevant_images(clustered):
    relevant = [clustered[0], clustered[6]]
    expected = rocchio(
        np.mean([active_vector(image) for image in relevant], axis=0)
        / np.linalg.norm(np.mean([active_vector(image) for image in relevant], axis=0)),
        [],
        [],
    )
    request = SearchRequest(more_ids=[image.pk for image in relevant])
    moved, has_image = query_vectors.query_vector(request)
    assert np.allclose(moved, expected, atol=1e-6)
    assert has_image  # scored on the image-to-image confidence scale
    top = ranking(request)[:10]
    assert set(top) == {image.pk for image in clustered[0:5] + clustered[5:10]}


def test_more_ranks_the_marked_images_near_neighbours_higher(clustered):
    before = ranking(SearchRequest(text="photo", mode="semantic"))
    marked = next(image for image in clustered if before.index(image.pk) >= 15)
    neighbours = [image.pk for image in cluster_of(clustered, marked)]
    after = ranking(SearchRequest(text="photo", mode="semantic", more_ids=[marked.pk]))
    assert after[0] == marked.pk
    assert set(after[1:5]) == set(neighbours)
    assert sum(after.index(pk) for pk in neighbours) < sum(before.index(pk) for pk in neighbours)


def test_less_pushes_the_marked_image_down(clustered):
    query = clustered[12]
    before = ranking(SearchRequest(like_image_id=query.pk))
    pushed = before[1]  # the query image's closest neighbour
    after = ranking(SearchRequest(like_image_id=query.pk, less_ids=[pushed]))
    assert after.index(pushed) > before.index(pushed)
    assert after[0] == query.pk
    # Marks accumulate: another round adds to them.
    again = ranking(SearchRequest(like_image_id=query.pk, less_ids=[pushed, before[2]]))
    assert again.index(before[2]) > after.index(before[2])


def test_marks_stay_in_paging_links_and_show_on_the_page(client, member, clustered):
    more, less = clustered[2], clustered[20]
    response = client.get(
        reverse("search") + "?"
        f"like={clustered[10].pk}&page_size=8&more={more.pk}&more={clustered[4].pk}&less={less.pk}",
    )
    assert response.status_code == 200
    page = response.content.decode()
    next_link = re.search(r'href="\?([^"]+)" rel="next"', page).group(1).replace("&amp;", "&")
    carried = parse_qs(next_link)
    assert carried["more"] == [f"{more.pk},{clustered[4].pk}"]
    assert carried["less"] == [str(less.pk)] and carried["page"] == ["2"]
    assert "Refined by 2 images marked relevant and 1 marked not relevant" in page
    # The relevant images lead; their + boxes are checked and their cards marked.
    assert f'name="more" value="{more.pk}" checked' in page
    assert re.search(rf'class="card marked-more" data-image="{more.pk}"', page)
    # A mark on an image this page does not show is kept as a hidden field.
    assert f'<input type="hidden" name="less" value="{less.pk}">' in page

    second = client.get(reverse("search") + "?" + next_link)
    assert second.status_code == 200
    assert f'<input type="hidden" name="more" value="{more.pk}">' in second.content.decode()


def test_api_search_takes_more_and_less_and_its_links_carry_them(client, member, clustered):
    for url_name in ("api_search", "api_v1:search"):
        body = client.get(
            reverse(url_name),
            {
                "more": f"{clustered[8].pk}",
                "less": f"{clustered[0].pk}",
                "page_size": 5,
            },
        ).json()
        assert body["results"][0]["id"] == clustered[8].pk
        link = parse_qs(urlparse(body["next"]).query)
        assert link["more"] == [str(clustered[8].pk)] and link["less"] == [str(clustered[0].pk)]
        assert client.get(body["next"]).status_code == 200
    schema = client.get(reverse("api_v1:openapi-json")).json()
    parameters = schema["paths"]["/api/v1/search"]["get"]["parameters"]
    assert {"more", "less"} <= {parameter["name"] for parameter in parameters}


@pytest.mark.parametrize("url_name", ["api_search", "api_v1:search"])
@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"q": "photo", "more": "abc"}, "more", "image ids separated by commas"),
        ({"q": "photo", "less": "1,x"}, "less", "image ids separated by commas"),
        ({"q": "photo", "more": "-3"}, "more", "image ids separated by commas"),
        ({"q": "photo", "more": "999999"}, "more", "There is no image 999999"),
        ({"q": "photo", "less": "999999"}, "less", "There is no image 999999"),
        ({"less": "FIRST"}, "q", "Give q"),
        ({"q": "photo", "more": "FIRST", "less": "FIRST"}, "less", "marked both"),
        ({"q": "photo", "more": ",".join(str(n) for n in range(1, 203))}, "more", "at most"),
    ],
)
def test_api_refuses_bad_marks_naming_the_parameter(
    client, member, indexed_images, url_name, params, parameter, message
):
    params = {
        name: value.replace("FIRST", str(indexed_images[0].pk)) for name, value in params.items()
    }
    response = client.get(reverse(url_name), params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["parameter"] == parameter
    assert message in error["message"]


def test_an_image_without_a_vector_cannot_be_marked(client, member, indexed_images):
    waiting = ingest_image(data=image_bytes(pattern=90), filename="new.png", enqueue=False).image
    like = indexed_images[0].pk
    response = client.get(reverse("api_search"), {"like": like, "more": str(waiting.pk)})
    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == "more"
    assert "not indexed yet" in response.json()["error"]["message"]
    page = client.get(reverse("search"), {"like": like, "less": str(waiting.pk)})
    assert page.status_code == 400 and "not indexed yet" in page.content.decode()


@pytest.mark.parametrize("parameter", ["more", "less"])
def test_a_keyword_search_refuses_marks_naming_them_instead_of_ignoring_them(
    client, member, indexed_images, parameter
):
    marked = {"q": "photo", "mode": "keyword", parameter: str(indexed_images[0].pk)}
    for url_name in ("api_search", "api_v1:search"):
        response = client.get(reverse(url_name), marked)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["parameter"] == parameter
        assert "keyword search" in error["message"] and "mode=hybrid" in error["message"]
    page = client.get(reverse("search"), marked)
    assert page.status_code == 400
    assert "keyword search does not use" in page.content.decode()
    # Without marks the same keyword search answers.
    del marked[parameter]
    assert client.get(reverse("api_search"), marked).status_code == 200


# -- in a browser --------------------------------------------------------------------------


@pytest.fixture
def browser(live_server, client, member):
    from tests.browser import log_in, require_chromium, start_browser

    require_chromium()
    driver = start_browser()
    log_in(driver, live_server, client, member)
    yield driver
    driver.quit()


def test_marking_results_and_refining_reranks_the_page_and_shows_the_marks(
    browser, live_server, clustered
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown() -> list[int]:
        cards = browser.find_elements(By.CSS_SELECTOR, "ol.results li.card")
        return [int(card.get_attribute("data-image")) for card in cards]

    def box(name: str, pk: int):
        return browser.find_element(
            By.CSS_SELECTOR, f"#feedback-form input[name={name}][value='{pk}']"
        )

    query = clustered[0]
    browser.get(live_server.url + f"/search/?like={query.pk}&page_size=12")
    before = shown()
    # Two results far down marked relevant, the query image's closest neighbour not.
    relevant, irrelevant = before[8:10], before[1]
    # + and − exclude each other on one image.
    box("less", relevant[0]).click()
    box("more", relevant[0]).click()
    assert box("more", relevant[0]).is_selected() and not box("less", relevant[0]).is_selected()
    box("more", relevant[1]).click()
    box("less", irrelevant).click()
    browser.find_element(By.ID, "refine").click()
    WebDriverWait(browser, 15).until(lambda driver: "more=" in driver.current_url)

    address = parse_qs(urlparse(browser.current_url).query)
    assert sorted(int(pk) for pk in address["more"]) == sorted(relevant)
    assert address["less"] == [str(irrelevant)] and address["like"] == [str(query.pk)]
    after = shown()
    assert after != before
    assert all(after.index(pk) < before.index(pk) for pk in relevant)
    assert after.index(irrelevant) > before.index(irrelevant)
    marked_less = browser.find_elements(By.CSS_SELECTOR, "li.card.marked-less")
    assert [int(card.get_attribute("data-image")) for card in marked_less] == [irrelevant]
    marked = browser.find_elements(By.CSS_SELECTOR, "li.card.marked-more")
    assert {int(card.get_attribute("data-image")) for card in marked} == set(relevant)
    assert all(box("more", pk).is_selected() for pk in relevant)
    summary = browser.find_element(By.ID, "feedback-summary").text
    assert "2 images marked relevant and 1 marked not relevant" in summary


# -- evaluate --feedback-rounds --------------------------------------------------------------


def test_evaluate_simulates_feedback_rounds_through_the_search(tmp_path, media_root):
    import json

    from tests.test_evaluate import SHAPES, draw, evaluate

    root = tmp_path / "shapes"
    for shape in SHAPES:
        (root / shape).mkdir(parents=True)
        for n in range(8):
            draw(shape, ("red", "green", "blue")[n % 3], n).save(root / shape / f"{n}.png")
    output = evaluate(
        root, "--feedback-rounds", 2, "--report", tmp_path / "r", "--json", tmp_path / "f.json"
    )
    feedback = json.loads((tmp_path / "f.json").read_text())["feedback"]
    assert feedback["rounds"] == 2 and feedback["judged_per_round"] == 10
    assert feedback["weights"] == {"alpha": 1.0, "beta": 0.75, "gamma": 0.25}
    assert set(feedback["query_sets"]) == {"class prompt → image", "image → image"}
    for rounds in feedback["query_sets"].values():
        assert [row["round"] for row in rounds] == [0, 1, 2]
        first = rounds[0]
        # Round 0 is the search without feedback: nothing judged yet.
        assert first["residual mAP"] == first["mAP"] == first["first ranking residual mAP"]
        for row in rounds:
            assert 0 <= row["P@10"] <= 1 and 0 <= row["mAP"] <= 1
    images = feedback["query_sets"]["image → image"]
    assert images[0]["queries"] == 24
    # Marking the first ten from the labels helps image queries even with random weights.
    assert images[1]["mAP"] > images[0]["mAP"] and images[1]["P@10"] >= images[0]["P@10"]
    assert "Relevance feedback" in output and "residual mAP" in output


def test_evaluate_refuses_more_feedback_rounds_than_marks_allow(tmp_path):
    from django.core.management import CommandError

    from tests.test_evaluate import evaluate

    with pytest.raises(CommandError, match="--feedback-rounds takes 0 to 20"):
        evaluate(tmp_path, "--feedback-rounds", 21)

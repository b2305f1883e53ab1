"""Every refusal has one shape: `{"error": {"parameter", "message"}}` for the API, scripts and
/healthz, a short page of the site for people; the OpenAPI document states what the API
enforces."""

import pytest
from django.urls import reverse

from tests.conftest import database_gone

pytestmark = pytest.mark.django_db


@pytest.fixture
def member_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("mia", password="long-password-9"))
    return client


def test_healthz_answers_json_even_when_the_database_is_gone(member_client, monkeypatch):
    from gallery.web import middleware

    monkeypatch.setattr(middleware, "_last_logged", 0.0)
    healthy = member_client.get(reverse("healthz"), HTTP_ACCEPT="text/html")
    assert healthy.status_code == 200 and healthy["Content-Type"] == "application/json"
    with database_gone():
        down = member_client.get(reverse("healthz"), HTTP_ACCEPT="text/html")
    assert down.status_code == 503
    assert down["Content-Type"] == "application/json"
    assert down.json()["database"] is False


def test_a_missing_image_is_a_page_of_the_site_for_people_and_json_for_the_api(member_client):
    page = member_client.get(reverse("image_detail", args=[999_999]), HTTP_ACCEPT="text/html")
    assert page.status_code == 404
    body = page.content.decode()
    assert "<h1>Not found</h1>" in body and 'class="site-header"' in body
    api = member_client.get(reverse("api_v1:image", args=[999_999]))
    assert api.status_code == 404
    assert api.json() == {"error": {"parameter": None, "message": "No such image."}}


def test_refusals_by_the_services_are_403_pages_and_403_json(member_client, django_user_model):
    from gallery.library.ingest import ingest_image
    from tests.images import image_bytes

    owner = django_user_model.objects.create_user("ola", password="long-password-8")
    image = ingest_image(
        data=image_bytes(pattern=5), filename="o.png", uploaded_by=owner, enqueue=False
    ).image
    page = member_client.post(reverse("image_delete", args=[image.pk]))
    assert page.status_code == 403 and "You may change only images you uploaded" in (
        page.content.decode()
    )
    api = member_client.delete(reverse("api_v1:image", args=[image.pk]))
    assert api.status_code == 403 and api.json()["error"]["parameter"] is None
    assert "You may change only images you uploaded" in api.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"q": "cat", "page": "³"}, "page", "Enter a whole number."),
        ({"q": "cat", "like": "١٢"}, "like", "Enter a whole number."),
        ({"q": "cat", "less": "³"}, "less", "image ids separated by commas"),
        ({"q": "cat", "more": "1,٣"}, "more", "image ids separated by commas"),
        ({"q": "cat", "page": str(10**30)}, "page", "less than or equal to 10000"),
        ({"q": "cat", "mode": "fuzzy"}, "mode", "Select a valid choice."),
        ({"q": "cat", "image_token": "t" * 65}, "image_token", "the limit is 64"),
    ],
)
def test_the_api_refuses_what_its_schema_refuses_naming_the_parameter(
    member_client, params, parameter, message
):
    for address in (reverse("api_v1:search"), reverse("api_search")):
        response = member_client.get(address, params)
        assert response.status_code == 400, (address, response.content)
        error = response.json()["error"]
        assert error["parameter"] == parameter and message in error["message"]


def test_the_openapi_document_states_the_bounds_it_enforces(member_client):
    schema = member_client.get(reverse("api_v1:openapi-json")).json()
    parameters = {
        parameter["name"]: parameter["schema"]
        for parameter in schema["paths"]["/api/v1/search"]["get"]["parameters"]
    }

    def branch(name: str) -> dict:
        """The non-null branch of an optional parameter's schema."""
        spec = parameters[name]
        return next(each for each in spec.get("anyOf", [spec]) if each.get("type") != "null")

    assert branch("page_size") == {"type": "integer", "minimum": 1, "maximum": 100}
    assert branch("min_score") == {"type": "number", "minimum": -1, "maximum": 1}
    assert branch("like")["type"] == "integer" and branch("like")["minimum"] == 1
    assert set(branch("sort")["enum"]) == {"relevance", "date"}
    assert set(branch("mode")["enum"]) == {"semantic", "keyword", "hybrid"}
    assert branch("after") == {"type": "string", "format": "date"}
    assert branch("more")["pattern"] and branch("q")["maxLength"] == 1000
    answers = schema["paths"]["/api/v1/search"]["get"]["responses"]
    assert {"200", "400", "401", "429", "503"} <= set(answers)


# -- what a fuzzer found (schemathesis): each was an HTML "Server Error" page ---------------


def test_a_nul_character_in_a_tag_is_a_400_naming_tags(member_client, django_user_model):
    from gallery.library.ingest import ingest_image
    from gallery.models import Image
    from tests.images import image_bytes

    mine = django_user_model.objects.get(username="mia")
    image = ingest_image(
        data=image_bytes(pattern=7), filename="n.png", uploaded_by=mine, enqueue=False
    ).image
    address = reverse("api_v1:image", args=[image.pk])
    for change in ({"tags": ["a\u0000b"]}, {"tags": "a\u0000b"}, {"caption": "x\u0000"}):
        response = member_client.patch(address, change, content_type="application/json")
        assert response.status_code == 400, change
        error = response.json()["error"]
        assert (
            error["parameter"] in ("tags", "caption") and "control characters" in (error["message"])
        )
    assert list(Image.objects.get(pk=image.pk).tags.all()) == []
    for text in ("a\u0000b", "q\u0007"):
        search = member_client.get(reverse("api_v1:search"), {"q": text})
        assert search.status_code == 400 and search.json()["error"]["parameter"] == "q"


def test_a_page_number_beyond_bigint_is_a_400_naming_page(member_client):
    response = member_client.get(reverse("api_v1:images"), {"page": "12287786328299430477824"})
    assert response.status_code == 400 and response.json()["error"]["parameter"] == "page"


def test_superscript_digits_in_marks_are_a_400_naming_the_mark(member_client):
    for name in ("less", "more"):
        response = member_client.post(reverse("api_v1:search"), {"q": "cat", name: "³"})
        assert response.status_code == 400
        assert response.json()["error"]["parameter"] == name


def test_a_malformed_multipart_body_gets_the_json_error(member_client):
    for address in (reverse("api_v1:search"), reverse("api_v1:images")):
        response = member_client.generic(
            "POST", address, b"garbage", content_type="multipart/form-data"
        )
        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert "could not be read" in response.json()["error"]["message"]


def test_an_unknown_api_address_is_a_json_404(member_client):
    response = member_client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "There is nothing at this address."


def test_a_crash_is_a_500_in_the_site_s_shape_never_django_s_bare_page(
    django_user_model, monkeypatch
):
    from django.test import Client

    from gallery.web.api import search

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(search, "run_search", crash)
    monkeypatch.setattr("gallery.web.views.searching.run_search", crash)
    client = Client(raise_request_exception=False)
    client.force_login(django_user_model.objects.create_user("ivo", password="long-password-7"))
    api = client.get(reverse("api_v1:search"), {"q": "cat"})
    assert api.status_code == 500 and "went wrong" in api.json()["error"]["message"]
    page = client.get(reverse("search"), {"q": "cat"}, HTTP_ACCEPT="text/html")
    assert page.status_code == 500 and "Something went wrong" in page.content.decode()


def test_a_refused_path_does_not_tell_where_the_files_are(member_client, settings):
    response = member_client.get("/media/%2e%2e/%2e%2e/etc/passwd")
    assert response.status_code in (400, 404)
    assert str(settings.MEDIA_ROOT) not in response.content.decode()
    assert "/etc/passwd" not in response.content.decode()

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

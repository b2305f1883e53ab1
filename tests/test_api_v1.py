"""The versioned API, /api/v1/, over HTTP: upload, indexing, search, edit and delete with an
API token (no session, no CSRF), permissions, errors that name the parameter, the schema."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from gallery.accounts import tokens
from gallery.library.ingest import ingest_image
from gallery.models import Image
from tests.images import distinct_images, image_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def private_library(settings):
    settings.SITE_ACCESS = "private"


def script_for(user) -> Client:
    """A script with the user's token: no cookies, CSRF enforced as for any client."""
    _, secret = tokens.create_api_token(user=user, name="script")
    return Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {secret}"})


@pytest.fixture
def ana(django_user_model):
    return django_user_model.objects.create_user("ana", password="a-long-password-1")


@pytest.fixture
def script(ana):
    return script_for(ana)


def files(*named: tuple[str, bytes]) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name, data) for name, data in named]


def upload(client, *named, **fields):
    return client.post(reverse("api_v1:images"), {"files": files(*named), **fields})


def image_url(pk: int) -> str:
    return reverse("api_v1:image", args=[pk])


def search(client, **params) -> dict:
    response = client.get(reverse("api_v1:search"), params)
    assert response.status_code == 200, response.content
    return response.json()


def test_upload_index_search_edit_and_delete_with_a_token_alone(
    script, media_root, queue, run_burst_worker
):
    beach, forest = distinct_images(2)
    created = upload(
        script, ("beach.png", beach), ("forest.png", forest), tags="holiday, sea", caption="Trip"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert [result["filename"] for result in body["results"]] == ["beach.png", "forest.png"]
    assert all(result["ok"] and result["created"] for result in body["results"])
    beach_id, forest_id = body["created_ids"]
    assert body["image_ids"] == [beach_id, forest_id]
    assert queue.count == 2  # queued as the upload page queues them: a job per new image

    detail = script.get(image_url(beach_id)).json()
    assert detail["status"] == "pending"
    assert (detail["caption"], detail["tags"]) == ("Trip", ["holiday", "sea"])
    assert (detail["uploaded_by"], detail["can_change"]) == ("ana", True)
    assert script.get(detail["urls"]["thumbnail"]).status_code == 200

    run_burst_worker()
    assert script.get(image_url(beach_id)).json()["status"] == "indexed"

    found = search(script, q="a holiday photo", tags_all="holiday, sea")
    assert {hit["id"] for hit in found["results"]} == {beach_id, forest_id}
    assert found["results"][0]["tags"] == ["holiday", "sea"]
    similar = search(script, like=beach_id)
    assert similar["results"][0]["id"] == beach_id  # an image is most like itself
    by_image = script.post(
        reverse("api_v1:search"), {"image": SimpleUploadedFile("q.png", forest)}
    ).json()
    assert by_image["results"][0]["id"] == forest_id and by_image["image_token"]

    edited = script.patch(
        image_url(beach_id), {"tags": ["sunset"]}, content_type="application/json"
    )
    assert edited.status_code == 200, edited.content
    assert (edited.json()["tags"], edited.json()["caption"]) == (["sunset"], "Trip")
    captioned = script.patch(
        image_url(beach_id),
        {"caption": "Evening", "tags": "sunset, sea"},
        content_type="application/json",
    ).json()
    assert (captioned["caption"], captioned["tags"]) == ("Evening", ["sea", "sunset"])
    assert [hit["id"] for hit in search(script, q="photo", tags_all="sunset")["results"]] == [
        beach_id
    ]

    deleted = script.delete(image_url(beach_id))
    assert deleted.status_code == 204
    gone = script.get(image_url(beach_id))
    assert gone.status_code == 404 and gone.json()["error"]["message"] == "No such image."
    assert [hit["id"] for hit in search(script, q="photo")["results"]] == [forest_id]
    assert "sessionid" not in script.cookies and "csrftoken" not in script.cookies


def test_api_upload_checks_files_as_the_upload_page_does(script, media_root, settings):
    png = image_bytes(pattern=4)
    answer = upload(
        script,
        ("photo.png", png),
        ("notes.txt", b"not an image at all"),
        ("empty.jpg", b""),
    ).json()
    ok, text, empty = answer["results"]
    assert ok["ok"] and ok["image"]["id"] == answer["created_ids"][0]
    assert not text["ok"] and text["error"] and text["image"] is None
    assert not empty["ok"] and "empty" in empty["error"].lower()
    again = upload(script, ("copy.png", png), tags="extra")
    assert again.status_code == 200  # nothing new stored
    assert again.json()["created_ids"] == [] and again.json()["image_ids"] == [ok["image"]["id"]]
    assert sorted(Image.objects.get().tags.values_list("name", flat=True)) == ["extra"]

    settings.MAX_UPLOAD_BYTES = 100
    too_big = upload(script, ("big.png", image_bytes(pattern=5, size=(300, 300)))).json()
    assert not too_big["results"][0]["ok"] and "too large" in too_big["results"][0]["error"]

    nothing = script.post(reverse("api_v1:images"), {"tags": "x"})
    assert nothing.status_code == 400
    assert nothing.json()["error"] == {
        "parameter": "files",
        "message": "Choose at least one image to upload.",
    }


def test_a_member_cannot_change_someone_elses_image_but_staff_can(
    script, django_user_model, media_root
):
    owner = django_user_model.objects.create_user("bo", password="pw-long-enough-2")
    image = ingest_image(
        data=image_bytes(pattern=3), filename="bo.png", uploaded_by=owner, enqueue=False
    ).image
    assert script.get(image_url(image.pk)).json()["can_change"] is False
    patch = script.patch(image_url(image.pk), {"caption": "mine"}, content_type="application/json")
    assert patch.status_code == 403 and patch.json()["error"]["message"]
    assert script.delete(image_url(image.pk)).status_code == 403
    image.refresh_from_db()
    assert image.caption == ""

    staff = script_for(django_user_model.objects.create_user("st", is_staff=True))
    assert (
        staff.patch(
            image_url(image.pk), {"caption": "fixed"}, content_type="application/json"
        ).json()["caption"]
        == "fixed"
    )
    assert staff.delete(image_url(image.pk)).status_code == 204
    assert not Image.objects.exists()


def test_a_missing_image_is_404_for_reading_editing_and_deleting(script, db):
    for method in ("get", "delete"):
        response = getattr(script, method)(image_url(999999))
        assert response.status_code == 404, method
        assert response.json() == {"error": {"parameter": None, "message": "No such image."}}
    patched = script.patch(image_url(999999), {"caption": "x"}, content_type="application/json")
    assert patched.status_code == 404


@pytest.mark.parametrize(
    ("address", "params", "parameter", "message"),
    [
        ("api_v1:images", {"page_size": 500}, "page_size", "less than or equal to 100"),
        ("api_v1:images", {"after": "yesterday"}, "after", "date"),
        ("api_v1:images", {"status": "lost"}, "status", "pending"),
        ("api_v1:images", {"after": "2024-02-01", "before": "2024-01-01"}, "after", "reversed"),
        ("api_v1:search", {}, "q", "Give q (text)"),
        ("api_v1:search", {"q": "cat", "page_size": 0}, "page_size", "greater than or equal"),
        ("api_v1:search", {"q": "cat", "after": "2024-13-01"}, "after", "valid date"),
        ("api_v1:search", {"q": "cat", "tags_any": "nosuchtag"}, "tags_any", "no tag named"),
        ("api_v1:search", {"q": "3:"}, "q", ""),
    ],
)
def test_errors_are_json_naming_the_parameter(script, db, address, params, parameter, message):
    response = script.get(reverse(address), params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["parameter"] == parameter
    assert message in error["message"]


def test_bad_edits_name_the_parameter(script, ana, media_root):
    image = ingest_image(
        data=image_bytes(pattern=6), filename="a.png", uploaded_by=ana, enqueue=False
    ).image
    for change, parameter in (
        ({"tags": ["a, b"]}, "tags"),
        ({"tags": ["x" * 65]}, "tags"),
        ({"caption": "x" * 2001}, "caption"),
        ({"tags": 5}, "tags"),
    ):
        response = script.patch(image_url(image.pk), change, content_type="application/json")
        assert response.status_code == 400, change
        assert response.json()["error"]["parameter"] == parameter, change
    bad_json = script.patch(image_url(image.pk), "{not json", content_type="application/json")
    assert bad_json.status_code == 400 and bad_json.json()["error"]["message"]


def test_a_browser_session_may_change_with_the_csrf_token_only(ana, media_root):
    image = ingest_image(
        data=image_bytes(pattern=8), filename="a.png", uploaded_by=ana, enqueue=False
    ).image
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(ana)
    assert browser.get(image_url(image.pk)).status_code == 200  # reading needs no token
    change = {"caption": "from the browser"}
    refused = browser.patch(image_url(image.pk), change, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    browser.get(reverse("gallery"))  # the page sets the CSRF cookie, as in a browser
    csrf = browser.cookies["csrftoken"].value
    allowed = browser.patch(
        image_url(image.pk), change, content_type="application/json", headers={"X-CSRFToken": csrf}
    )
    assert allowed.status_code == 200 and allowed.json()["caption"] == "from the browser"


def test_the_list_filters_like_the_gallery_and_pages(script, ana, media_root, settings):
    images = [
        ingest_image(
            data=data,
            filename=f"{n}.png",
            uploaded_by=ana,
            tag_names=["odd" if n % 2 else "even"],
            enqueue=False,
        ).image
        for n, data in enumerate(distinct_images(5))
    ]
    Image.objects.filter(pk=images[0].pk).update(status="failed")
    Image.objects.filter(pk=images[1].pk).update(taken_on="2020-05-01")

    def ids(**params) -> list[int]:
        response = script.get(reverse("api_v1:images"), params)
        assert response.status_code == 200, response.content
        return [image["id"] for image in response.json()["results"]]

    newest_first = [image.pk for image in reversed(images)]
    assert ids() == newest_first
    assert ids(status="failed") == [images[0].pk]
    assert ids(tag="ODD") == [images[3].pk, images[1].pk]
    assert ids(before="2020-12-31") == [images[1].pk]
    assert ids(after="2021-01-01", tag="odd") == [images[3].pk]

    first = script.get(reverse("api_v1:images"), {"page_size": 2, "tag": "even"}).json()
    assert (first["count"], first["has_next"], first["previous"]) == (3, True, None)
    second = script.get(first["next"]).json()
    assert [image["id"] for image in first["results"] + second["results"]] == [
        images[4].pk,
        images[2].pk,
        images[0].pk,
    ]
    assert second["has_next"] is False and second["next"] is None
    assert "tag=even" in second["previous"]


def test_v1_search_answers_as_api_search_does_with_links_to_itself(script, ana, media_root):
    for n, data in enumerate(distinct_images(6)):
        ingest_image(data=data, filename=f"{n}.png", uploaded_by=ana, enqueue=False)
    from gallery.indexing import encoding

    encoding.encode_images(list(Image.objects.values_list("pk", flat=True)))
    params = {"q": "photo", "page_size": 2}
    old = script.get(reverse("api_search"), params).json()
    new = search(script, **params)
    assert new["results"] == old["results"] and len(new["results"]) == 2
    assert old["next"].startswith("http://testserver/api/search?")
    assert new["next"].startswith("http://testserver/api/v1/search?")
    assert {key: value for key, value in new.items() if key not in ("next", "previous")} == {
        key: value for key, value in old.items() if key not in ("next", "previous")
    }
    assert search(script, **{"q": "photo", "page_size": 2, "page": 2})["previous"]


def test_the_schema_lists_every_endpoint_and_the_docs_need_no_cdn(
    script, client, django_user_model
):
    schema = script.get(reverse("api_v1:openapi-json")).json()
    paths = schema["paths"]
    assert set(paths["/api/v1/images"]) == {"get", "post"}
    assert set(paths["/api/v1/images/{image_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/api/v1/search"]) == {"get", "post"}
    upload_form = paths["/api/v1/images"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_form
    search_params = {param["name"] for param in paths["/api/v1/search"]["get"]["parameters"]}
    assert {"q", "like", "tags_any", "tags_all", "tags_not", "after", "before"} <= search_params
    assert {"min_score", "sort", "page", "page_size"} <= search_params
    schemes = schema["components"]["securitySchemes"]
    assert any(scheme.get("scheme") == "bearer" for scheme in schemes.values())

    docs = script.get(reverse("api_v1:openapi-view"))
    page = docs.content.decode()
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200

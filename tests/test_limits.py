"""Limits of a public site: search and query-image rates per client, paging depth, query-image
pixels, failed logins, and admin pages that refuse what they cannot do."""

import io
import time
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image as PILImage

from gallery.library.ingest import ingest_image
from gallery.models import Image
from gallery.search import statements
from tests.images import distinct_images

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings):
    """Counters of this test only (a key prefix of its own in the real Redis), a library that
    anyone may search, and rate limits off unless the test sets them."""
    settings.RATELIMIT_CACHE_PREFIX = f"rl-test-{uuid.uuid4().hex}:"
    settings.SITE_ACCESS = "public"
    settings.SEARCH_RATE_LIMIT = ""
    settings.QUERY_IMAGE_RATE_LIMIT = ""


def image_file(path) -> SimpleUploadedFile:
    with open(path, "rb") as original:
        return SimpleUploadedFile("query.png", original.read())


# -- rate limits -----------------------------------------------------------------------------


def test_the_search_after_the_limit_gets_429_with_retry_after(
    client, indexed_images, settings, django_user_model
):
    settings.SEARCH_RATE_LIMIT = "3/m"
    for _ in range(3):
        assert client.get(reverse("api_search"), {"q": "photo"}).status_code == 200
    refused = client.get(reverse("api_search"), {"q": "photo"})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert error["message"].startswith("Too many searches: each client may send 3 a minute.")
    # The versioned API counts the same searches.
    assert client.get(reverse("api_v1:search"), {"q": "photo"}).status_code == 429
    # The search page is the same client's: a short page says so.
    page = client.get(reverse("search"), {"q": "photo"})
    assert page.status_code == 429 and page["Retry-After"]
    assert "Too many searches" in page.content.decode()
    # The empty search form is not a search.
    assert client.get(reverse("search")).status_code == 200
    # Other clients have their own counts: another address, and a logged-in user.
    other = client.get(reverse("api_search"), {"q": "photo"}, REMOTE_ADDR="10.1.2.3")
    assert other.status_code == 200
    client.force_login(django_user_model.objects.create_user("lu", password="pw"))
    assert client.get(reverse("api_search"), {"q": "photo"}).status_code == 200


def test_query_images_have_their_own_stricter_limit(client, indexed_images, settings):
    settings.SEARCH_RATE_LIMIT = "100/m"
    settings.QUERY_IMAGE_RATE_LIMIT = "1/5m"
    path = indexed_images[3].file.path
    first = client.post(reverse("api_search"), {"image": image_file(path), "page_size": 3})
    assert first.status_code == 200
    second = client.post(reverse("api_search"), {"image": image_file(path), "page_size": 3})
    assert second.status_code == 429 and 1 <= int(second["Retry-After"]) <= 300
    assert second.json()["error"] == {
        "parameter": "image",
        "message": "Too many query images: each client may send 1 every 5 minutes. "
        f"Try again in {second['Retry-After']} seconds.",
    }
    page = client.post(reverse("search"), {"image": image_file(path)})
    assert page.status_code == 429 and "Too many query images" in page.content.decode()
    # Searching by text (or a remembered image) is still within the search limit.
    assert client.get(reverse("api_search"), {"q": "photo"}).status_code == 200


def test_forwarded_addresses_count_only_behind_a_configured_proxy(client, indexed_images, settings):
    settings.SEARCH_RATE_LIMIT = "1/m"

    def search(forwarded_for: str):
        return client.get(
            reverse("api_search"), {"q": "photo"}, HTTP_X_FORWARDED_FOR=forwarded_for
        ).status_code

    # No proxy configured: the header is the client's own word, and is ignored.
    assert [search("10.0.0.1"), search("10.0.0.2")] == [200, 429]
    # One proxy that appends the address it saw: that (rightmost) address is the client;
    # what the client wrote before it changes nothing.
    settings.TRUSTED_PROXY_COUNT = 1
    assert [search("1.1.1.1, 10.0.0.3"), search("2.2.2.2, 10.0.0.3")] == [200, 429]
    assert search("10.0.0.4") == 200


def test_with_redis_stalled_rate_limits_let_searches_through_quickly(
    client, indexed_images, settings, stalled_redis_cache
):
    settings.SEARCH_RATE_LIMIT = "1/m"
    timings = []
    for words in ("photo one", "photo two", "photo three"):
        started = time.monotonic()
        response = client.get(reverse("api_search"), {"q": words})
        timings.append(time.monotonic() - started)
        assert response.status_code == 200 and response.json()["results"]
    # One short timeout for the first; then Redis is left alone (fail open, no waiting).
    assert stalled_redis_cache() >= 1
    assert timings[0] < 1.5 and max(timings[1:]) < 0.5, timings
    client.get(reverse("api_search"), {"q": "photo four"})
    assert stalled_redis_cache() == 0


# -- paging depth ----------------------------------------------------------------------------


def test_a_page_past_the_depth_limit_gets_400_naming_page(client, indexed_images, settings):
    settings.SEARCH_MAX_RESULTS = 20
    last = client.get(reverse("api_search"), {"q": "photo", "page_size": 10, "page": 2}).json()
    assert len(last["results"]) == 10 and not last["has_next"]  # 30 images, but 20 shown
    refused = client.get(reverse("api_search"), {"q": "photo", "page_size": 10, "page": 3})
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "parameter": "page",
        "message": "Results stop at 20: page 3 would start at result 21. With 10 results a "
        "page, the last page is 2; narrow the search to see others.",
    }
    page = client.get(reverse("search"), {"q": "photo", "page_size": 10, "page": 3})
    assert page.status_code == 400 and "Results stop at 20" in page.content.decode()
    huge = client.get(reverse("api_search"), {"q": "photo", "page": 10**12})
    assert huge.status_code == 400 and huge.json()["error"]["parameter"] == "page"


def search_statements(queries) -> list[str]:
    return [query["sql"] for query in queries if "<=>" in query["sql"]]


def test_a_page_past_the_end_runs_one_search_statement_and_no_exact_scan(
    client, indexed_images, settings
):
    settings.SEARCH_EXACT_MAX_ROWS = 0  # searched through the index, as a large library is
    statements.vector_counts.clear()
    assert client.get(reverse("api_search"), {"q": "photo"}).json()["results"]  # warm caches
    for params, last_page in (({}, 3), ({"tags_any": "even"}, 2)):
        with CaptureQueriesContext(connection) as queries:
            body = client.get(
                reverse("api_search"), {"q": "photo", "page_size": 10, "page": 4, **params}
            ).json()
        assert body["results"] == [] and not body["has_next"]
        assert body["message"] == (
            f"There are no results on page 4; the results end on page {last_page}."
        )
        (statement,) = search_statements(queries.captured_queries)
        assert not any("enable_indexscan" in query["sql"] for query in queries.captured_queries)
        # Unfiltered, nothing else reads the vectors (no count, no second statement).
        embedding_reads = [q for q in queries.captured_queries if "gallery_embedding" in q["sql"]]
        assert len(embedding_reads) == (1 if not params else 2)
    # The last page, partly filled, is found by one statement too.
    with CaptureQueriesContext(connection) as queries:
        body = client.get(reverse("api_search"), {"q": "photo", "page_size": 7, "page": 5}).json()
    assert len(body["results"]) == 2 and not body["has_next"]
    assert len(search_statements(queries.captured_queries)) == 1


# -- query image pixels ----------------------------------------------------------------------


def forty_megapixel_png() -> bytes:
    # One grey, 8000 x 5000: 40 megapixels that compress to a few kilobytes.
    buffer = io.BytesIO()
    PILImage.new("L", (8000, 5000), 128).save(buffer, "PNG")
    return buffer.getvalue()


TOO_MANY = (
    "The image has too many pixels (8000 x 5000 = 40 megapixels); the limit is 16 megapixels."
)


def test_a_40_megapixel_query_image_is_refused_from_its_header(client, indexed_images, settings):
    data = forty_megapixel_png()
    assert len(data) < settings.MAX_UPLOAD_BYTES and 40_000_000 < settings.MAX_IMAGE_PIXELS
    response = client.post(reverse("api_search"), {"image": SimpleUploadedFile("big.png", data)})
    assert response.status_code == 400
    assert response.json()["error"] == {"parameter": "image", "message": TOO_MANY}
    page = client.post(reverse("search"), {"image": SimpleUploadedFile("big.png", data)})
    assert page.status_code == 400 and TOO_MANY in page.content.decode()
    # Decided before decoding: half the file (its pixel data cut short) gets the same answer,
    # where an image within the limit is found truncated only by decoding it.
    half = SimpleUploadedFile("half.png", data[: len(data) // 2])
    response = client.post(reverse("api_search"), {"image": half})
    assert response.json()["error"]["message"] == TOO_MANY
    settings.QUERY_IMAGE_MAX_PIXELS = 50_000_000
    half = SimpleUploadedFile("half.png", data[: len(data) // 2])
    response = client.post(reverse("api_search"), {"image": half})
    assert "truncated" in response.json()["error"]["message"]


# -- failed logins ---------------------------------------------------------------------------


def test_repeated_failed_logins_pause_that_account_from_that_address_only(
    client, django_user_model, settings
):
    django_user_model.objects.create_user("alice", password="alice-long-password-1")
    django_user_model.objects.create_user("bob", password="bob-long-password-2")
    login = reverse("login")
    limit = settings.LOGIN_FAILURE_LIMIT
    for _ in range(limit - 1):
        failed = client.post(login, {"username": "alice", "password": "wrong"})
        assert failed.status_code == 200 and "correct username and password" in str(failed.content)
    # The failure that reaches the limit, and every attempt after it, right password or not.
    for password in ("wrong", "alice-long-password-1"):
        refused = client.post(login, {"username": "alice", "password": password})
        assert refused.status_code == 429
        assert int(refused["Retry-After"]) == settings.LOGIN_COOLOFF_MINUTES * 60
        assert (
            "Too many failed logins for alice from your address: try again in 15 minutes. "
            "Other accounts can still log in." in refused.content.decode()
        )
    assert "_auth_user_id" not in client.session
    # Another user logs in from the same address; alice herself from another one.
    bob = client.post(login, {"username": "bob", "password": "bob-long-password-2"})
    assert bob.status_code == 302 and client.session["_auth_user_id"]
    client.logout()
    elsewhere = client.post(
        login, {"username": "alice", "password": "alice-long-password-1"}, REMOTE_ADDR="10.9.9.9"
    )
    assert elsewhere.status_code == 302


def test_the_admin_login_is_paused_the_same_way(client, django_user_model, settings):
    django_user_model.objects.create_user("carol", password="carol-long-password-3", is_staff=True)
    login = reverse("admin:login")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        response = client.post(login, {"username": "carol", "password": "wrong"})
    assert response.status_code == 429
    assert "Too many failed logins for carol" in response.content.decode()


# -- admin -----------------------------------------------------------------------------------


@pytest.fixture
def stored_images(media_root):
    return [
        ingest_image(data=data, filename=f"a{n}.png", enqueue=False).image
        for n, data in enumerate(distinct_images(2))
    ]


def test_admin_has_no_add_image_page(admin_client, stored_images):
    assert admin_client.get(reverse("admin:gallery_image_add")).status_code == 403
    changelist = admin_client.get(reverse("admin:gallery_image_changelist")).content.decode()
    assert reverse("admin:gallery_image_add") not in changelist
    assert admin_client.get(reverse("admin:gallery_image_change", args=[stored_images[0].pk]))


def run_reindex_action(client, images):
    return client.post(
        reverse("admin:gallery_image_changelist"),
        {"action": "reindex_selected", "_selected_action": [image.pk for image in images]},
    )


def test_reindexing_from_the_admin_needs_the_change_permission(
    client, django_user_model, stored_images, queue
):
    viewer = django_user_model.objects.create_user("vi", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_image"))
    client.force_login(viewer)
    changelist = client.get(reverse("admin:gallery_image_changelist"))
    assert changelist.status_code == 200 and "reindex_selected" not in changelist.content.decode()
    run_reindex_action(client, stored_images)
    assert queue.count == 0 and Image.objects.filter(queued_at__isnull=False).count() == 0
    # With the change permission the same request queues them.
    viewer.user_permissions.add(Permission.objects.get(codename="change_image"))
    client.force_login(django_user_model.objects.get(pk=viewer.pk))
    run_reindex_action(client, stored_images)
    assert queue.count == 1

"""Who may see the library: SITE_ACCESS private (members only, the default) and public
(anyone browses and searches; changing needs an account), with sessions and API tokens,
over HTTP through Django's test client."""

import hashlib
import io
import re
import subprocess
import sys

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.urls import reverse

from gallery.accounts import tokens
from gallery.library.ingest import ingest_image
from gallery.models import ApiToken, Image
from tests.conftest import clean_child_environment, database_gone
from tests.images import image_bytes
from tests.test_settings import PROJECT

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def image(media_root, django_user_model):
    owner = django_user_model.objects.create_user("owner", password="pw-long-enough-5")
    return ingest_image(
        data=image_bytes(pattern=7),
        filename="beach.png",
        uploaded_by=owner,
        tag_names=["beach"],
        enqueue=False,
    ).image


@pytest.fixture
def member(django_user_model):
    return django_user_model.objects.create_user("ana", password="a-long-password-1")


@pytest.fixture
def member_client(member):
    client = Client()
    client.force_login(member)
    return client


def new_file() -> SimpleUploadedFile:
    return SimpleUploadedFile("new.png", image_bytes(pattern=9))


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def token_client(secret: str) -> Client:
    """A script: no cookies, CSRF enforced as for any client, the token on every request."""
    return Client(enforce_csrf_checks=True, headers=bearer(secret))


def pages(image) -> list[str]:
    return [
        reverse("gallery"),
        reverse("search") + "?q=beach",
        reverse("image_detail", args=[image.pk]),
        image.file.url,
        image.thumbnail.url,
    ]


def api_addresses(image) -> list[str]:
    return [
        reverse("api_search") + "?q=beach",
        reverse("api_v1:images"),
        reverse("api_v1:image", args=[image.pk]),
        reverse("api_v1:search") + "?q=beach",
        reverse("api_v1:openapi-json"),
        reverse("api_v1:openapi-view"),
    ]


# -- private ----------------------------------------------------------------------------------


def test_site_access_defaults_to_private_and_an_unknown_value_stops_the_start():
    def settings_with(**env):
        return subprocess.run(
            [sys.executable, "-c", "import searchsite.settings as s; print(s.SITE_ACCESS)"],
            env=clean_child_environment(
                DATABASE_URL="postgres://u@localhost/x",
                REDIS_URL="redis://localhost:1/0",
                SECRET_KEY="x",
                **env,
            ),
            capture_output=True,
            text=True,
            cwd=PROJECT,
        )

    assert settings_with(SITE_ACCESS="").stdout.strip() == "private"
    assert settings_with(SITE_ACCESS="public").stdout.strip() == "public"
    refused = settings_with(SITE_ACCESS="open")
    assert refused.returncode != 0
    assert "SITE_ACCESS='open' is not one of private, public" in refused.stderr


def test_private_library_sends_anonymous_visitors_to_log_in_and_refuses_the_api(
    client, image, settings
):
    settings.SITE_ACCESS = "private"
    for address in pages(image) + [reverse("upload"), reverse("account")]:
        response = client.get(address)
        assert response.status_code == 302, address
        assert response["Location"].startswith("/accounts/login/?next="), address
    for address in api_addresses(image):
        response = client.get(address)
        assert response.status_code == 401, address
        assert "Authorization: Bearer" in response.json()["error"]["message"]
        assert response["WWW-Authenticate"].startswith("Bearer")
    posted = client.post(reverse("api_search"), {"q": "beach"})
    assert posted.status_code == 401
    assert client.delete(reverse("api_v1:image", args=[image.pk])).status_code == 401
    assert Image.objects.filter(pk=image.pk).exists()


def test_private_library_still_answers_health_login_static_files_and_the_admin_login(
    client, settings
):
    settings.SITE_ACCESS = "private"
    assert client.get(reverse("healthz")).status_code == 200
    login = client.get(reverse("login"))
    assert login.status_code == 200 and "Log in" in login.content.decode()
    assert client.get("/static/gallery/site.css").status_code == 200
    admin = client.get("/admin/")
    assert admin.status_code == 302 and admin["Location"].startswith("/admin/login/")
    assert client.get("/admin/login/").status_code == 200


def test_a_favicon_request_beside_the_login_page_does_not_replace_its_csrf_cookie(client, settings):
    """Browsers fetch /favicon.ico beside a page, without cookies on a first visit; sent to
    the login page, its answer set a new CSRF cookie over the page's and the form failed."""
    settings.SITE_ACCESS = "private"
    favicon = client.get("/favicon.ico")
    assert favicon.status_code == 404 and "csrftoken" not in favicon.cookies


def test_a_member_logged_in_or_with_a_token_gets_everything_and_media_stays_private(
    member_client, member, image, settings
):
    settings.SITE_ACCESS = "private"
    _, secret = tokens.create_api_token(user=member, name="script")
    for client in (member_client, token_client(secret)):
        for address in pages(image) + api_addresses(image):
            assert client.get(address).status_code == 200, address
        original = client.get(image.file.url)
        with image.file.open("rb") as stored:
            assert b"".join(original.streaming_content) == stored.read()
    cache = member_client.get(image.thumbnail.url)["Cache-Control"]
    assert cache.startswith("private") and "public" not in cache


def test_media_may_be_cached_publicly_only_in_a_public_library(member_client, image, settings):
    settings.SITE_ACCESS = "private"
    assert member_client.get(image.file.url)["Cache-Control"] == (
        "private, max-age=31536000, immutable"
    )
    settings.SITE_ACCESS = "public"
    assert Client().get(image.file.url)["Cache-Control"] == ("public, max-age=31536000, immutable")


# -- public -----------------------------------------------------------------------------------


def test_public_library_lets_anyone_browse_and_search_but_not_change(client, image, settings):
    settings.SITE_ACCESS = "public"
    for address in pages(image) + api_addresses(image):
        assert client.get(address).status_code == 200, address
    assert client.post(reverse("api_search"), {"q": "beach"}).status_code == 200
    # Changing needs an account: pages send to the login page, the API answers 401.
    for address in (reverse("upload"), reverse("account")):
        assert client.get(address)["Location"].startswith("/accounts/login/")
    upload = client.post(reverse("upload"), {"files": [new_file()]})
    assert upload.status_code == 302 and upload["Location"].startswith("/accounts/login/")
    edit = client.post(reverse("image_edit", args=[image.pk]), {"caption": "mine now"})
    assert edit.status_code == 302 and edit["Location"].startswith("/accounts/login/")
    assert client.post(reverse("image_delete", args=[image.pk])).status_code == 302
    api_upload = client.post(reverse("api_v1:images"), {"files": [new_file()]})
    assert api_upload.status_code == 401
    address = reverse("api_v1:image", args=[image.pk])
    patch = client.patch(address, {"caption": "mine now"}, content_type="application/json")
    assert patch.status_code == 401 and patch.json()["error"]["message"]
    assert client.delete(address).status_code == 401
    image.refresh_from_db()
    assert image.caption == "" and Image.objects.count() == 1


def test_a_bad_token_is_refused_even_where_anyone_may_read(client, image, settings):
    settings.SITE_ACCESS = "public"
    refused = client.get(reverse("api_v1:images"), headers=bearer("vs_not-a-real-token"))
    assert refused.status_code == 401
    assert "not valid" in refused.json()["error"]["message"]


# -- tokens -----------------------------------------------------------------------------------


def test_create_api_token_prints_a_working_token_once_and_stores_only_its_hash(
    member, image, settings
):
    settings.SITE_ACCESS = "private"
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "ana", "--name", "backup script", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert re.fullmatch(r"vs_[A-Za-z0-9_-]{40,}", secret), out.getvalue()
    assert "not shown again" in err.getvalue()

    stored = ApiToken.objects.get()
    assert (stored.user, stored.name) == (member, "backup script")
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(stored.prefix) and len(stored.prefix) < len(secret) // 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM gallery_apitoken")
        row = cursor.fetchone()
    assert not any(secret in str(value) for value in row)  # the secret itself is nowhere

    assert stored.last_used_at is None
    response = token_client(secret).get(reverse("api_v1:images"))
    assert response.status_code == 200
    assert [found["id"] for found in response.json()["results"]] == [image.pk]
    stored.refresh_from_db()
    assert stored.last_used_at is not None

    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("create_api_token", "nobody", stdout=io.StringIO())


def test_the_account_page_creates_a_token_shown_once_and_revokes_it(
    member_client, member, django_user_model, image, settings
):
    settings.SITE_ACCESS = "private"
    created = member_client.post(reverse("account"), {"name": "laptop"})
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    page = created.content.decode()
    secret = re.search(r'id="new-token-secret">(vs_[^<]+)<', page).group(1)
    token = ApiToken.objects.get(user=member)
    listed = member_client.get(reverse("account")).content.decode()
    assert "laptop" in listed and token.prefix in listed and secret not in listed
    assert token_client(secret).get(reverse("gallery")).status_code == 200

    # Someone else's token is not theirs to revoke; their own is.
    other = django_user_model.objects.create_user("bo", password="pw-long-enough-6")
    others_token, others_secret = tokens.create_api_token(user=other, name="bo's")
    revoke = reverse("revoke_token", args=[others_token.pk])
    assert member_client.post(revoke).status_code == 404
    assert token_client(others_secret).get(reverse("gallery")).status_code == 200
    revoked = member_client.post(reverse("revoke_token", args=[token.pk]), follow=True)
    assert "Revoked the token" in revoked.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None

    for address in (reverse("gallery"), reverse("api_v1:images"), reverse("api_search")):
        refused = token_client(secret).get(address)
        assert refused.status_code == 401, address
        assert "not valid" in refused.json()["error"]["message"]
    assert "revoked" in member_client.get(reverse("account")).content.decode()


def test_a_token_cannot_make_more_tokens_or_open_the_admin(django_user_model, settings):
    settings.SITE_ACCESS = "private"
    staff = django_user_model.objects.create_superuser("root", "r@example.com", "pw-long-9")
    _, secret = tokens.create_api_token(user=staff, name="ci")
    script = token_client(secret)
    assert script.post(reverse("account"), {"name": "another"}).status_code == 403
    assert ApiToken.objects.count() == 1
    admin = script.get("/admin/")
    assert admin.status_code == 302 and admin["Location"].startswith("/admin/login/")


def test_the_admin_creates_a_token_shown_once_lists_and_revokes_tokens(
    admin_client, member, settings
):
    settings.SITE_ACCESS = "private"
    add = reverse("admin:gallery_apitoken_add")
    assert admin_client.get(add).status_code == 200
    created = admin_client.post(add, {"user": member.pk, "name": "from the admin"})
    assert created.status_code == 200 and "no-store" in created["Cache-Control"]
    secret = re.search(r'id="new-api-token"[^>]*>(vs_[^<]+)<', created.content.decode()).group(1)
    token = ApiToken.objects.get(user=member)
    assert token.token_hash == tokens.hash_token(secret)
    assert token_client(secret).get(reverse("gallery")).status_code == 200

    listing = admin_client.get(reverse("admin:gallery_apitoken_changelist")).content.decode()
    assert "from the admin" in listing and token.prefix in listing and secret not in listing
    assert (
        secret
        not in admin_client.get(
            reverse("admin:gallery_apitoken_change", args=[token.pk])
        ).content.decode()
    )
    admin_client.post(
        reverse("admin:gallery_apitoken_changelist"),
        {"action": "revoke_selected", "_selected_action": [token.pk]},
    )
    assert token_client(secret).get(reverse("gallery")).status_code == 401


def test_with_the_database_gone_members_and_tokens_get_a_503_not_a_500(
    member_client, member, settings, monkeypatch
):
    from gallery.web import middleware

    # The outage is logged once a minute per process: this one must not silence the next
    # test's (monkeypatch puts the time of the last line back afterwards).
    monkeypatch.setattr(middleware, "_last_logged", 0.0)
    settings.SITE_ACCESS = "private"
    _, secret = tokens.create_api_token(user=member, name="script")
    with database_gone():
        page = member_client.get(reverse("gallery"))
        api = token_client(secret).get(reverse("api_v1:images"))
    assert page.status_code == 503 and "Temporarily unavailable" in page.content.decode()
    assert api.status_code == 503 and "unavailable" in api.json()["error"]["message"]


def test_compose_passes_site_access_to_the_site():
    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
    assert compose["services"]["web"]["environment"]["SITE_ACCESS"] == "${SITE_ACCESS:-private}"

"""HTTPS deployments: one setting turns on Secure cookies, HSTS and the redirect, so Django's
deployment check is clean; every page carries a Content-Security-Policy without inline
scripts, and no template needs one."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from tests.conftest import clean_child_environment

PROJECT = Path(__file__).resolve().parent.parent
STRONG_KEY = "k7Qz-3vR9mX2pL8wN4tY6bH1cJ5fD0sA_gE7uI2oK9qW3zX8vB4nM6"


def run_with_settings(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        env=clean_child_environment(
            DATABASE_URL="postgres://u@localhost/x",
            REDIS_URL="redis://localhost:1/0",
            DJANGO_SETTINGS_MODULE="searchsite.settings",
            DEBUG="0",
            SECRET_KEY=STRONG_KEY,
            **env,
        ),
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=120,
    )


def deploy_check(**env) -> subprocess.CompletedProcess:
    return run_with_settings("-m", "django", "check", "--deploy", "--fail-level", "WARNING", **env)


def test_check_deploy_is_clean_with_https_on_and_warns_without():
    plain = deploy_check()
    assert plain.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in plain.stderr
    secure = deploy_check(HTTPS="true")
    assert secure.returncode == 0, secure.stderr
    assert "no issues" in secure.stdout


def test_behind_a_proxy_https_trusts_its_forwarded_proto_header_and_never_without_one():
    show = (
        "-c",
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER)",
    )
    behind = run_with_settings(*show, HTTPS="true", TRUSTED_PROXY_COUNT="1")
    assert behind.returncode == 0, behind.stderr
    assert behind.stdout.split() == [
        "True",
        "True",
        "True",
        "31536000",
        "('HTTP_X_FORWARDED_PROTO',",
        "'https')",
    ]
    direct = run_with_settings(*show, HTTPS="true")
    assert direct.stdout.split()[-1] == "None"
    off = run_with_settings(*show)
    assert off.stdout.split()[:3] == ["False", "False", "False"]


@pytest.mark.django_db
def test_every_answer_carries_a_policy_without_inline_scripts(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("csp", password="long-password-5"))
    for address in (reverse("gallery"), reverse("search"), reverse("upload"), "/healthz"):
        policy = client.get(address)["Content-Security-Policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["script-src"] == "'self'", address
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)


def test_no_template_has_an_inline_script_or_event_handler():
    offenders = []
    for template in (PROJECT / "templates").rglob("*.html"):
        text = template.read_text()
        if INLINE_HANDLER.search(text) or INLINE_SCRIPT.search(text):
            offenders.append(str(template.relative_to(PROJECT)))
    assert offenders == []


@pytest.mark.django_db(transaction=True)
def test_the_pages_run_in_chromium_without_a_policy_violation(
    live_server, client, django_user_model, media_root
):
    from gallery.library.ingest import ingest_image
    from tests.browser import log_in, require_chromium, start_browser
    from tests.images import image_bytes

    require_chromium()
    staff = django_user_model.objects.create_user(
        "ops", password="long-password-6", is_staff=True, is_superuser=True
    )
    image = ingest_image(
        data=image_bytes(pattern=3), filename="p.png", uploaded_by=staff, enqueue=False
    ).image
    browser = start_browser()
    try:
        log_in(browser, live_server, client, staff)
        pages = [
            reverse("gallery"),
            reverse("search") + "?q=photo&mode=keyword",
            reverse("image_detail", args=[image.pk]),
            reverse("upload"),
            reverse("account"),
            reverse("duplicates"),
            reverse("api_v1:openapi-view"),
            reverse("admin:index"),
            reverse("admin:gallery_image_changelist"),
        ]
        violations = []
        for page in pages:
            browser.get(live_server.url + page)
            violations += [
                (page, entry["message"])
                for entry in browser.get_log("browser")
                if "Content Security Policy" in entry["message"]
            ]
        assert violations == []
        # The confirmations moved from inline handlers to confirm.js: still asked.
        browser.get(live_server.url + reverse("image_detail", args=[image.pk]))
        browser.execute_script("window.confirm = () => { window.asked = true; return false; }")
        browser.find_element("css selector", "#delete-form button").click()
        assert browser.execute_script("return window.asked") is True
        assert browser.current_url.endswith(reverse("image_detail", args=[image.pk]))
    finally:
        browser.quit()

"""The `visual-search` command on a fresh data directory and on a given database."""

import pytest
from django.db import connection

from gallery.offline.sandbox import database_url
from tests.conftest import clean_child_environment, create_superuser, run_cli
from tests.images import image_bytes


def test_commands_work_on_a_fresh_data_directory_without_up(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "first.png").write_bytes(image_bytes(pattern=61))
    env = clean_child_environment(VISUAL_SEARCH_DATA_DIR=str(tmp_path / "data"))
    imported = run_cli("import_images", str(photos), env=env)
    assert "Bringing the database schema up to date" in imported.stderr
    assert "Traceback" not in imported.stderr
    assert "Imported 1, duplicates 0, rejected 0" in imported.stdout
    created = create_superuser(env)
    assert "Bringing the database schema" not in created.stderr  # already up to date


@pytest.mark.django_db(transaction=True)
def test_a_given_database_without_the_schema_gets_a_one_line_instruction(settings):
    with connection.cursor() as cursor:
        cursor.execute("CREATE DATABASE vs_cli_empty")
    try:
        url = database_url().rsplit("/", 1)[0] + "/vs_cli_empty"
        env = clean_child_environment(
            DATABASE_URL=url, REDIS_URL=settings.REDIS_URL, SECRET_KEY="given"
        )
        result = run_cli("list_models", env=env, check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            "The database at DATABASE_URL is not up to date: run `visual-search migrate` first."
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP DATABASE IF EXISTS vs_cli_empty WITH (FORCE)")


@pytest.mark.django_db(transaction=True)
def test_a_built_wheel_serves_pages_with_its_templates_and_static_files(tmp_path, settings):
    """A non-editable install: build the wheel, install it alone, render the home page."""
    import os
    import subprocess
    import sys
    import sysconfig
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist"), str(checkout)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("visual_search-*.whl")
    installed = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(installed)]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = (
        "import django, searchsite, gallery.indexing.encoder as e;"
        "django.setup();"
        "from django.test import Client;"
        "from django.contrib.staticfiles import finders;"
        "page = Client().get('/');"
        "print(searchsite.__file__);"
        "print(page.status_code, b'Gallery' in page.content);"
        "print(bool(finders.find('gallery/site.css')), e.architecture_dimensions('vs-test-tiny'))"
    )
    # The wheel's files first, the dependencies from this environment, and not the checkout:
    # a plain path entry (not a site dir) skips the editable install's finder.
    env = clean_child_environment(
        PYTHONPATH=os.pathsep.join([str(installed), sysconfig.get_paths()["purelib"]]),
        DJANGO_SETTINGS_MODULE="searchsite.settings",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        SECRET_KEY="wheel-test",
        ALLOWED_HOSTS="testserver",
        VISUAL_SEARCH_DATA_DIR=str(tmp_path / "data"),
        SITE_ACCESS="public",  # the gallery page, rendered for an anonymous visitor
    )
    base_python = getattr(sys, "_base_executable", sys.executable)
    result = subprocess.run(
        [base_python, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    location, page, assets = result.stdout.strip().splitlines()[-3:]
    assert location.startswith(str(installed))
    assert page == "200 True"
    assert assets == "True 512"


@pytest.mark.django_db(transaction=True)
def test_evaluate_without_the_evaluation_extra_says_what_to_install(tmp_path, settings):
    blocker = tmp_path / "blocked" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = clean_child_environment(
        PYTHONPATH=str(tmp_path / "blocked"),
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        SECRET_KEY="given",
    )
    result = run_cli("evaluate", str(tmp_path), env=env, check=False)
    assert result.returncode == 1
    assert "pip install 'visual-search[evaluation]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_control_socket_lives_in_the_data_directory(settings, tmp_path):
    from searchsite.supervisor import web_command

    settings.DATA_DIR = tmp_path / "site"
    command = web_command("127.0.0.1", 8000, 2)
    socket_path = command[command.index("--control-socket") + 1]
    assert socket_path == str(tmp_path / "site" / "run" / "gunicorn.ctl")
    assert (tmp_path / "site" / "run").is_dir()
    settings.DATA_DIR = tmp_path / ("deep" * 30)  # too long for a Unix socket path
    assert "--no-control-socket" in web_command("127.0.0.1", 8000, 2)

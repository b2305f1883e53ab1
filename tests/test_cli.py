"""The `visual-search` command on a fresh data directory and on a given database."""

import pytest
from django.db import connection

from gallery.offline.sandbox import database_url
from tests.conftest import clean_child_environment, run_cli
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
    created = run_cli(
        "createsuperuser",
        "--noinput",
        "--username",
        "admin",
        "--email",
        "a@example.com",
        env={**env, "DJANGO_SUPERUSER_PASSWORD": "a-long-test-password"},
    )
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

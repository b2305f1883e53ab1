"""Configuration from the environment, and the production compose file's wiring."""

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import clean_child_environment

PROJECT = Path(__file__).resolve().parent.parent


def import_settings(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import searchsite.settings"],
        env=clean_child_environment(
            DATABASE_URL="postgres://u@localhost/x", REDIS_URL="redis://localhost:1/0", **env
        ),
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )


def test_refuses_to_start_with_debug_off_and_the_development_secret_key():
    refused = import_settings(DEBUG="0")
    assert refused.returncode != 0
    assert "SECRET_KEY is the built-in development key while DEBUG is off" in refused.stderr
    assert import_settings(DEBUG="1").returncode == 0
    assert import_settings(DEBUG="0", SECRET_KEY="a-real-secret").returncode == 0


def test_bad_boolean_setting_is_reported():
    result = import_settings(DEBUG="maybe", SECRET_KEY="x")
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_docker_compose_wires_db_redis_web_and_scalable_workers():
    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "redis", "web", "worker"} <= set(services)
    assert services["db"]["image"].startswith("pgvector/pgvector:pg18")
    assert "healthcheck" in services["db"] and "healthcheck" in services["redis"]
    for name in ("web", "worker"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert "@db:5432/" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:6379")
        assert services[name]["depends_on"]["db"]["condition"] == "service_healthy"
        assert any(str(volume).startswith("media:") for volume in services[name]["volumes"])
    worker = services["worker"]
    # `docker compose up --scale worker=4` needs no fixed name and no host ports.
    assert "container_name" not in worker and "ports" not in worker
    assert "rqworker" in " ".join(worker["command"])
    assert "migrate" in " ".join(services["web"]["command"])
    assert "prepare_models" in " ".join(services["web"]["command"])
    assert {"pgdata", "media"} <= set(compose["volumes"])
    # Workers listen on the queue the site enqueues to; images a lost job held are re-queued.
    assert "${ENCODING_QUEUE:-default}" in worker["command"]
    assert services["web"]["environment"]["ENCODING_QUEUE"] == "${ENCODING_QUEUE:-default}"
    assert "requeue" in " ".join(services["requeue"]["command"])
    assert services["requeue"]["environment"]["DATABASE_URL"].startswith("postgres://")
    # ONNX exports are shared by web and workers on the models volume.
    for name in ("web", "worker"):
        assert services[name]["environment"]["MODEL_FILES_DIR"] == "/models/onnx"
        assert "models:/models" in services[name]["volumes"]


def test_given_urls_are_used_and_no_embedded_server_is_started(tmp_path, settings):
    from gallery.offline.sandbox import database_url
    from tests.conftest import run_cli

    data_dir = tmp_path / "data"
    result = run_cli(
        "shell",
        "-c",
        "from django.db import connection; connection.ensure_connection(); "
        "print(connection.settings_dict['NAME'])",
        env=clean_child_environment(
            VISUAL_SEARCH_DATA_DIR=str(data_dir),
            DATABASE_URL=database_url(),
            REDIS_URL=settings.REDIS_URL,
            SECRET_KEY="given",
        ),
    )
    from django.db import connection

    assert result.stdout.strip().splitlines()[-1] == connection.settings_dict["NAME"]
    assert not (data_dir / "postgres").exists() and not (data_dir / "valkey").exists()


def server_query(sql: str) -> tuple[str, ...]:
    """`manage.py` arguments that print the embedded server's answer to `sql` (one row)."""
    return (
        "shell",
        "-c",
        "from django.db import connection; c = connection.cursor(); "
        f"c.execute({sql!r}); print(*c.fetchone())",
    )


def test_maintenance_work_mem_is_only_changed_when_asked(tmp_path):
    from tests.conftest import run_cli

    env = clean_child_environment(VISUAL_SEARCH_DATA_DIR=str(tmp_path / "data"))
    show = server_query("SHOW maintenance_work_mem")
    assert run_cli(*show, env=env).stdout.split()[-1] == "1GB"  # the default, once
    asked = {**env, "EMBEDDED_PG_MAINTENANCE_WORK_MEM": "2GB"}
    assert run_cli(*show, env=asked).stdout.split()[-1] == "2GB"
    # A later command that was not asked must not undo it (it would slow index builds).
    assert run_cli(*show, env=env).stdout.split()[-1] == "2GB"


def test_a_new_embedded_cluster_starts_with_shared_buffers_for_the_index(tmp_path):
    from searchsite.embedded import default_shared_buffers
    from tests.conftest import run_cli

    env = clean_child_environment(VISUAL_SEARCH_DATA_DIR=str(tmp_path / "data"))
    show = server_query(
        "SELECT s.setting::bigint * 8192 / 1048576, f.setting FROM pg_settings s, "
        "pg_file_settings f WHERE s.name = 'shared_buffers' AND f.name = s.name "
        "ORDER BY f.seqno DESC LIMIT 1"
    )
    # A quarter of the memory (capped), in force from the first command: not the 128 MB that
    # leaves a 100k-vector index outside the buffers.
    expected = int(default_shared_buffers().removesuffix("MB"))
    assert expected > 128
    in_force = [str(expected), default_shared_buffers()]
    assert run_cli(*show, env=env).stdout.split()[-2:] == in_force
    # Asked for on an existing cluster: written, in force from the server's next start.
    asked = {**env, "EMBEDDED_PG_SHARED_BUFFERS": "256MB"}
    assert run_cli(*show, env=asked).stdout.split()[-2:] == [str(expected), "256MB"]


def test_replica_urls_become_read_only_aliases_that_connect_per_request():
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from searchsite import settings as s; "
            "print([(a, s.DATABASES[a]['HOST'], s.DATABASES[a]['CONN_MAX_AGE'], "
            "s.DATABASES[a]['OPTIONS']['connect_timeout'], s.DATABASES[a]['TEST']) "
            "for a in s.DATABASE_REPLICAS], s.DATABASE_ROUTERS)",
        ],
        env=clean_child_environment(
            DATABASE_URL="postgres://u@localhost/x",
            REDIS_URL="redis://localhost:1/0",
            SECRET_KEY="x",
            DATABASE_REPLICA_URLS="postgres://u@r1:5432/x, postgres://u@r2:5432/x",
        ),
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=True,
    )
    assert shown.stdout.strip() == (
        "[('replica1', 'r1', 0, 3, {'MIRROR': 'default'}), "
        "('replica2', 'r2', 0, 3, {'MIRROR': 'default'})] ['gallery.replicas.ReplicaRouter']"
    )

import os
import subprocess
import sys

import django_rq
import numpy as np
import pytest

from gallery.indexing import registry
from gallery.indexing.worker import EncodingWorker
from gallery.models import Embedding


@pytest.fixture(autouse=True)
def fresh_model_registry_cache():
    """Each test reads the active model from its own database, not a previous test's."""
    registry.forget_cached_models()
    yield
    registry.forget_cached_models()


@pytest.fixture(autouse=True)
def redis_trusted_again():
    """A test that took Redis away must not leave the next one skipping the queue or cache."""
    from gallery.indexing import queueing
    from gallery.search import query_vectors

    yield
    queueing._queue_skipped_until = 0.0
    query_vectors._cache_skipped_until = 0.0


def active_vector(image) -> np.ndarray:
    """The image's stored vector of the active model."""
    embedding = Embedding.objects.get(image_id=image.pk, model=registry.active_model())
    return np.asarray(embedding.vector, dtype=np.float32)


def active_encoder():
    return registry.load_encoder(registry.active_model())


@pytest.fixture
def queue():
    """The real default queue on the session's Valkey, emptied around each test."""
    default_queue = django_rq.get_queue("default")
    default_queue.empty()
    yield default_queue
    default_queue.empty()


@pytest.fixture
def run_burst_worker(queue):
    """Run the site's worker class in burst mode until the queue is empty."""

    def run() -> None:
        worker = EncodingWorker([queue], connection=queue.connection)
        worker.work(burst=True)

    return run


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def clean_child_environment(**extra) -> dict:
    """The environment for a fresh `visual-search` process: no servers handed down."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "VISUAL_SEARCH_DATA_DIR",
            "SECRET_KEY",
            "DJANGO_SETTINGS_MODULE",
        }
    }
    env.update(extra)
    return env


def run_cli(*args, env=None, timeout=300, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "searchsite", *args],
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode:
        raise AssertionError(f"visual-search {' '.join(args)} failed:\n{result.stderr}")
    return result


def create_superuser(env) -> subprocess.CompletedProcess:
    """`visual-search createsuperuser` as an operator runs it: admin / a-long-test-password."""
    return run_cli(
        "createsuperuser",
        "--noinput",
        "--username",
        "admin",
        "--email",
        "a@example.com",
        env={**env, "DJANGO_SUPERUSER_PASSWORD": "a-long-test-password"},
    )

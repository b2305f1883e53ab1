import contextlib
import os
import subprocess
import sys

import django_rq
import numpy as np
import pytest

from gallery.indexing import encoding, model_loading, registry
from gallery.indexing.worker import EncodingWorker
from gallery.library.ingest import ingest_image
from gallery.models import Embedding
from gallery.search import statements
from tests.images import distinct_images


@pytest.fixture(autouse=True)
def fresh_model_registry_cache():
    """Each test reads the active model (and its vector count) from its own database, not a
    previous test's."""
    registry.forget_cached_models()
    statements.vector_counts.clear()
    yield
    registry.forget_cached_models()
    statements.vector_counts.clear()


@pytest.fixture(autouse=True)
def redis_trusted_again():
    """A test that took Redis away must not leave the next one skipping the queue or cache."""
    from gallery import cache
    from gallery.indexing import queueing, text_reading

    yield
    queueing.queue_breaker.reset()
    text_reading.queue_breaker.reset()
    cache.trust_cache_again()


def active_vector(image) -> np.ndarray:
    """The image's stored vector of the active model."""
    embedding = Embedding.objects.get(image_id=image.pk, model=registry.active_model())
    return np.asarray(embedding.vector, dtype=np.float32)


def active_encoder():
    return model_loading.load_encoder(registry.active_model())


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


@pytest.fixture
def indexed_images(media_root):
    """30 indexed images, captioned "photo N", tagged "even" and "odd" in turn."""
    images = [
        ingest_image(
            data=data,
            filename=f"photo{n}.png",
            tag_names=["odd" if n % 2 else "even"],
            caption=f"photo {n}",
            enqueue=False,
        ).image
        for n, data in enumerate(distinct_images(30))
    ]
    encoding.encode_images([image.pk for image in images])
    return images


@pytest.fixture
def stalled_redis_cache(settings):
    """The cache pointed at a socket that accepts connections and never answers: what a
    Redis stopped with SIGSTOP looks like to its clients."""
    import socket

    from gallery import cache
    from gallery.search import query_vectors

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.setblocking(False)
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{server.getsockname()[1]}/0",
        }
    }
    query_vectors.clear_text_vector_cache()
    cache.trust_cache_again()

    def connections_since_last_call() -> int:
        count = 0
        while True:
            try:
                server.accept()[0].close()
            except BlockingIOError:
                return count
            count += 1

    yield connections_since_last_call
    cache.trust_cache_again()
    server.close()


@contextlib.contextmanager
def database_gone():
    """Django's connection pointed at a port nothing listens on, then put back."""
    import socket

    from django.db import connection

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(dead_port))
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(original)


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

import os
import subprocess
import sys

import django_rq
import pytest

from gallery.indexing.worker import EncodingWorker


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

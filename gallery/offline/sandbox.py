"""An isolated library: a temporary database, media folder and queue on the same servers.

Benchmarks and the evaluation command import data here, never into the user's library, and
everything is dropped afterwards.
"""

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import django_rq
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import override_settings
from rq import Worker

from gallery.indexing import registry
from gallery.indexing.encoder_base import RANDOM_WEIGHTS
from searchsite.paths import PROJECT_DIR
from searchsite.supervisor import worker_command


def random_weights(architecture: str) -> dict:
    """Settings for `architecture` with random weights: what the benchmarks time and index does
    not depend on the weights, and nothing is downloaded."""
    return {"CLIP_MODEL": architecture, "CLIP_PRETRAINED": RANDOM_WEIGHTS, "CLIP_WEIGHTS_FILE": ""}


@dataclass
class IsolatedLibrary:
    database_name: str
    media_root: Path
    queue_name: str

    @property
    def ocr_queue_name(self) -> str:
        return ocr_queue_name(self.queue_name)

    def child_environment(self, **extra) -> dict[str, str]:
        """Environment for a process (an RQ worker) that works on this library."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url(),
            REDIS_URL=settings.REDIS_URL,
            MEDIA_ROOT=str(self.media_root),
            ENCODING_QUEUE=self.queue_name,
            OCR_QUEUE=self.ocr_queue_name,
            SECRET_KEY=settings.SECRET_KEY,
            CLIP_MODEL=settings.CLIP_MODEL,
            CLIP_PRETRAINED=settings.CLIP_PRETRAINED,
            CLIP_WEIGHTS_FILE=settings.CLIP_WEIGHTS_FILE,
            CLIP_RANDOM_SEED=str(settings.CLIP_RANDOM_SEED),
            ENCODE_BATCH_SIZE=str(settings.ENCODE_BATCH_SIZE),
            # The backend this process chose and the exports it prepared, not the child's own.
            CLIP_BACKEND=settings.CLIP_BACKEND,
            CLIP_PRECISION=settings.CLIP_PRECISION,
            MODEL_FILES_DIR=str(settings.MODEL_FILES_DIR),
        )
        env.update(extra)
        return env

    @contextmanager
    def worker(self, **extra_env):
        """A real encoding worker process on this library's queue, ready when entered."""
        queue = django_rq.get_queue(self.queue_name)
        process = subprocess.Popen(
            worker_command(self.queue_name),
            env=self.child_environment(**extra_env),
            cwd=PROJECT_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            # The worker registers only after loading the model, so this waits for that too.
            deadline = time.monotonic() + 300
            while not Worker.all(queue=queue):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"The encoding worker did not start:\n{process.stderr.read().decode()}"
                    )
                time.sleep(0.1)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def database_url() -> str:
    """A URL for the database the default connection uses now."""
    params = connection.settings_dict
    host = params["HOST"] or ""
    if host.startswith("/"):
        host = quote(host, safe="")
    port = f":{params['PORT']}" if params["PORT"] else ""
    password = f":{quote(str(params['PASSWORD']), safe='')}" if params["PASSWORD"] else ""
    return f"postgresql://{quote(params['USER'], safe='')}{password}@{host}{port}/{params['NAME']}"


@contextmanager
def isolated_database(label: str):
    """A fresh, empty database on the same server, used by the default connection until exit."""
    name = f"vs_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    original_name = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = name
    registry.forget_cached_models()  # the active model is a row of the other database
    try:
        yield name
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original_name
        registry.forget_cached_models()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ocr_queue_name(queue_name: str) -> str:
    return f"{queue_name}-ocr"


@contextmanager
def isolated_library(label: str):
    """Create a fresh migrated database, media folder and queue; drop them all on exit."""
    media_root = Path(tempfile.mkdtemp(prefix=f"visual-search-{label}-"))
    try:
        with isolated_database(label) as name:
            # Its own OCR queue too: a job there names an image of this database only.
            ocr_queue = ocr_queue_name(name)
            queues = {
                **settings.RQ_QUEUES,
                name: settings.RQ_QUEUES["default"],
                ocr_queue: settings.RQ_QUEUES["default"],
            }
            with override_settings(
                MEDIA_ROOT=media_root, ENCODING_QUEUE=name, OCR_QUEUE=ocr_queue, RQ_QUEUES=queues
            ):
                call_command("migrate", verbosity=0, interactive=False)
                try:
                    yield IsolatedLibrary(name, media_root, name)
                finally:
                    for queue_name in (name, ocr_queue):
                        queue = django_rq.get_queue(queue_name)
                        queue.empty()
                        queue.delete(delete_jobs=True)
    finally:
        shutil.rmtree(media_root, ignore_errors=True)

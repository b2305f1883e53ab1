"""`bench_serving`: the site as `up` runs it, under a mixed HTTP load, in an isolated library.

The load generator is one thread and one http.client connection per simulated user, light
enough to share a 2-core machine with the site it measures.
"""

import http.client
import json
import math
import os
import random
import secrets
import signal
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psutil
from django.conf import settings
from django.test.utils import override_settings
from django.urls import reverse

from gallery.indexing import registry
from gallery.library.selectors import GALLERY_PAGE_SIZE
from gallery.offline import http_latency, indexing_benchmark, sandbox, synthetic
from gallery.offline.timing import percentile
from searchsite import supervisor

KINDS = ("new_text", "repeated_text", "like", "query_image", "gallery", "detail")
# Relative weights. The issue's load was 50 % new text, 10 % repeated text, 20 % "more like
# this" and 20 % gallery pages; query images and detail pages come on top at 5 each, so new
# text is 45 % of this mix. `--mix` gives the four-kind load back.
MIXED_LOAD = {
    "new_text": 50,
    "repeated_text": 10,
    "like": 20,
    "gallery": 20,
    "query_image": 5,
    "detail": 5,
}
# The "no collapse" check: throughput of new texts alone at the highest concurrency against
# the lowest.
NEW_TEXT_ONLY = {"new_text": 1}
REPEATED_TEXTS = (
    "a dog running on the beach",
    "sunset over the sea",
    "a red bicycle leaning on a wall",
    "mountains covered in snow",
    "a cat asleep on a sofa",
)
WORDS = (
    "red blue green yellow black white orange purple golden silver small large old young "
    "happy quiet bright dark wet frozen wooden broken shiny tiny dog cat horse bird fish cow "
    "child woman man baby bicycle car train boat plane bus tractor house bridge tower castle "
    "church garden forest river lake beach mountain desert island street market kitchen "
    "window door table chair lamp book guitar piano camera clock flower tree leaf apple bread "
    "cake coffee pizza snow rain fog storm sunset sunrise night morning winter summer autumn "
    "spring festival wedding party concert football tennis painting statue fountain"
).split()
WORDS_PER_NEW_TEXT = 4
QUERY_IMAGES = 8
IMAGE_SIZE = synthetic.SMALL_SIZE
HTTP_TIMEOUT_SECONDS = 120
READY_TIMEOUT_SECONDS = 300
MULTIPART_BOUNDARY = "visual-search-bench-serving"


class NewTexts:
    """Word combinations never searched before: in this run (checked) nor in an earlier one
    (a fresh seed each run), so no text vector cache, in process or in Redis, can answer."""

    def __init__(self):
        self._rng = random.Random(secrets.randbits(64))
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            while True:
                text = " ".join(self._rng.sample(WORDS, WORDS_PER_NEW_TEXT))
                if text not in self._seen:
                    self._seen.add(text)
                    return text


@dataclass
class LoadTargets:
    """What the requests point at: the imported images, the gallery's pages, query images."""

    image_ids: list[int]
    query_images: list[bytes]
    new_texts: NewTexts = field(default_factory=NewTexts)

    @property
    def gallery_pages(self) -> int:
        return max(1, math.ceil(len(self.image_ids) / GALLERY_PAGE_SIZE))


@dataclass
class Sample:
    kind: str
    ms: float
    error: str  # empty when the answer was 2xx or 3xx


class SiteClient:
    """One simulated user: a connection of its own and the requests the site's pages send."""

    def __init__(self, port: int, targets: LoadTargets, seed: int):
        self.connection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=HTTP_TIMEOUT_SECONDS
        )
        self.targets = targets
        self.rng = random.Random(seed)

    def timed(self, kind: str) -> Sample:
        started = time.perf_counter()
        try:
            status = self.fetch(kind)
            error = "" if 200 <= status < 400 else f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.connection.close()  # reconnects on the next request
        return Sample(kind, (time.perf_counter() - started) * 1000, error)

    def fetch(self, kind: str) -> int:
        """Send one request of this kind; returns the final HTTP status.

        A query image is what the search form does: a multipart POST to the search page,
        which encodes the image and redirects to a GET that searches; both count as one.
        """
        if kind == "query_image":
            data = self.rng.choice(self.targets.query_images)
            response = self._send("POST", reverse("search"), *_multipart_image(data))
            if response.status != 302 or _sent_to_log_in(response):
                return _status(response)
            location = urlsplit(response.getheader("Location", ""))
            return self._send("GET", f"{location.path}?{location.query}").status
        return _status(self._send("GET", self._path(kind)))

    def _path(self, kind: str) -> str:
        targets = self.targets
        if kind == "new_text":
            return reverse("search") + "?" + urlencode({"q": targets.new_texts.next()})
        if kind == "repeated_text":
            return reverse("search") + "?" + urlencode({"q": self.rng.choice(REPEATED_TEXTS)})
        if kind == "like":  # the gallery's and the detail page's "More like this" link
            return reverse("search") + f"?like={self.rng.choice(targets.image_ids)}"
        if kind == "gallery":
            return reverse("gallery") + f"?page={self.rng.randint(1, targets.gallery_pages)}"
        if kind == "detail":
            return reverse("image_detail", args=[self.rng.choice(targets.image_ids)])
        raise ValueError(f"Unknown request kind {kind!r}")

    def _send(self, method: str, path: str, body=None, headers=None) -> http.client.HTTPResponse:
        # gunicorn's sync workers close every connection; http.client then opens a new one.
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        response.read()
        return response


def _sent_to_log_in(response: http.client.HTTPResponse) -> bool:
    location = urlsplit(response.getheader("Location") or "").path
    return response.status in (301, 302) and location == reverse("login")


def _status(response: http.client.HTTPResponse) -> int:
    """The status, a redirect to the login page counted as the refusal it is (a private
    site answers every anonymous request so, and 3xx would pass for a success)."""
    return 401 if _sent_to_log_in(response) else response.status


def _multipart_image(data: bytes) -> tuple[bytes, dict]:
    body = (
        (
            f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="query.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"}


def parse_mix(text: str) -> dict[str, int]:
    """`new_text=50,like=20` -> {"new_text": 50, "like": 20}; kinds left out get no requests."""
    mix = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        kind, _, weight = part.partition("=")
        if kind not in KINDS or not weight.isdigit():
            raise ValueError(f"{part!r}: expected KIND=WEIGHT with KIND one of {', '.join(KINDS)}")
        if int(weight):
            mix[kind] = int(weight)
    if not mix:
        raise ValueError("The mix needs at least one kind with a weight above 0.")
    return mix


# -- load ------------------------------------------------------------------------------------


def _drive(client: SiteClient, first: list[str], mix: dict[str, int], deadline, stop, samples):
    for kind in first:  # even past the deadline: every kind gets a figure
        if stop.is_set():
            return
        samples.append(client.timed(kind))
    kinds, weights = list(mix), list(mix.values())
    while not stop.is_set() and time.perf_counter() < deadline:
        samples.append(client.timed(client.rng.choices(kinds, weights)[0]))


def _run_clients(port: int, targets: LoadTargets, work, concurrency: int) -> float:
    """Run `work(index, client, stop)` in `concurrency` threads; returns the seconds taken."""
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=work, args=(index, SiteClient(port, targets, seed=index), stop), daemon=True
        )
        for index in range(concurrency)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # with a timeout, so Ctrl-C is not held up
    except BaseException:
        stop.set()
        raise
    return time.perf_counter() - started


def run_phase(
    port: int, targets: LoadTargets, mix: dict[str, int], concurrency: int, seconds: float
) -> dict:
    """`concurrency` users sending requests of `mix` back to back for `seconds`.

    The clients share out one request of each kind to start with, so every kind has a
    figure however short the phase (at most one request per kind off the weights); then
    each draws kinds by weight.
    """
    per_client: list[list[Sample]] = [[] for _ in range(concurrency)]
    kinds = list(mix)
    random.Random(concurrency).shuffle(kinds)
    deadline = time.perf_counter() + seconds

    def work(index, client, stop):
        first = kinds[index::concurrency]
        _drive(client, first, mix, deadline, stop, per_client[index])

    elapsed = _run_clients(port, targets, work, concurrency)
    samples = [sample for client_samples in per_client for sample in client_samples]
    errors = Counter(sample.error for sample in samples if sample.error)
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "kinds": {
            kind: _summary([s for s in samples if s.kind == kind], elapsed)
            for kind in KINDS
            if kind in mix
        },
        "total": _summary(samples, elapsed),
        "error_examples": dict(errors.most_common(5)),
    }


def _summary(samples: list[Sample], seconds: float) -> dict:
    latencies = [sample.ms for sample in samples]
    summary = {"requests": len(samples), "requests_per_s": round(len(samples) / seconds, 2)}
    for q in (50, 95, 99):
        summary[f"p{q}_ms"] = percentile(latencies, q) if latencies else None
    summary["errors"] = sum(1 for sample in samples if sample.error)
    return summary


def warm_up(port: int, targets: LoadTargets, kinds, concurrency: int) -> None:
    """One request of each kind from each of `concurrency` users, not measured, so every
    web process has answered every kind (loaded the image tower, filled its caches)."""

    def work(index, client, stop):
        for kind in kinds:
            if not stop.is_set():
                client.timed(kind)

    _run_clients(port, targets, work, concurrency)


# -- the processes ---------------------------------------------------------------------------


def process_memory(site: supervisor.SiteProcesses, port: int, web_workers: int) -> list[dict]:
    """Resident memory of every process the site runs, and what each web worker holds."""
    holdings = _holdings_by_process(port, probes=4 * web_workers)
    rows = []

    def add(role: str, process: psutil.Process) -> None:
        try:
            memory = process.memory_full_info()  # USS reads /proc/PID/smaps: ms per process
            uss = round(memory.uss / 2**20, 1)
        except psutil.AccessDenied:
            memory, uss = process.memory_info(), None
        except psutil.NoSuchProcess:
            return  # restarted during the run; its successor is listed
        rows.append(
            {
                "process": role,
                "pid": process.pid,
                **holdings.get(
                    process.pid, dict.fromkeys(("towers", "backend", "threads", "torch_imported"))
                ),
                "rss_mib": round(memory.rss / 2**20, 1),
                "uss_mib": uss,
            }
        )

    master = psutil.Process(site.web.pid)
    add("gunicorn master", master)
    for child in master.children():
        add("web worker", child)
    for worker in site.workers:
        process = psutil.Process(worker.pid)
        add("RQ worker", process)
        # Jobs run in the worker itself; its one child is RQ's scheduler (retries).
        for child in process.children(recursive=True):
            add("RQ scheduler", child)
    return rows


def _holdings_by_process(port: int, probes: int) -> dict[int, dict]:
    """The towers each web process has loaded and whether it imported torch, from /healthz
    (whichever process answers: several probes reach most of them)."""
    found: dict[int, dict] = {}

    def probe(_) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", reverse("healthz"))
            report = json.loads(connection.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError):
            return
        finally:
            connection.close()
        process = report.get("this_process", {})
        encoders = process.get("encoders", [])
        found[process.get("pid")] = {
            "towers": ", ".join(str(e.get("towers", "?")) for e in encoders),
            "backend": ", ".join(
                " ".join(str(e[key]) for key in ("backend", "precision") if e.get(key))
                for e in encoders
            ),
            "threads": ", ".join(str(e.get("threads", "?")) for e in encoders),
            "torch_imported": process.get("torch_imported"),
        }

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(probe, range(probes)))
    return found


@contextmanager
def _sigterm_interrupts():
    """SIGTERM stops the benchmark the way Ctrl-C does: through the clean-up, not past it."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _weights_overrides() -> dict:
    # os.environ, not settings: only the environment tells a chosen value from the default.
    if os.environ.get("CLIP_PRETRAINED") or os.environ.get("CLIP_WEIGHTS_FILE"):
        return {}
    return {"CLIP_PRETRAINED": "random", "CLIP_WEIGHTS_FILE": ""}


# -- the benchmark ---------------------------------------------------------------------------


def run_serving_benchmark(
    *,
    image_count: int,
    seconds: float,
    concurrencies: list[int],
    web_workers: int = supervisor.DEFAULT_WEB_WORKERS,
    workers: int = supervisor.DEFAULT_WORKERS,
    mix: dict[str, int] | None = None,
    log_path: Path | None = None,
    progress=print,
) -> dict:
    """Start the site, import `image_count` images, measure each phase, stop everything.

    The site's own output (gunicorn's access log, the workers' messages) goes to `log_path`,
    by default a temporary file whose tail is shown when the site does not start.
    """
    mix = dict(mix or MIXED_LOAD)
    concurrencies = sorted(set(concurrencies))
    with (
        _sigterm_interrupts(),
        override_settings(**_weights_overrides()),
        tempfile.TemporaryDirectory(prefix="visual-search-bench-serving-") as folder,
        sandbox.isolated_library("serving") as library,
    ):
        folder = Path(folder)
        port = http_latency.free_port()
        figures = {
            "model": registry.active_model().model_id,
            "weights": settings.CLIP_WEIGHTS_FILE or settings.CLIP_PRETRAINED,
            "cpu_count": psutil.cpu_count(),
            "web_workers": web_workers,
            "workers": workers,
            "threads_per_web_worker": int(supervisor.thread_budget(web_workers)["ENCODER_THREADS"]),
            "threads_per_worker": int(supervisor.thread_budget(workers)["ENCODER_THREADS"]),
            "mix": mix,
            "seconds": seconds,
        }
        # As `up` does: exports are made before the children start, so none of them waits.
        progress("Preparing the model files...")
        errors, warnings = registry.prepare_model_files()
        for problem in errors + warnings:
            progress(problem)
        progress(f"Starting gunicorn ({web_workers} workers) and {workers} RQ worker(s)...")
        log_path = Path(log_path or folder / "site.log")
        with log_path.open("wb") as log:
            started = time.perf_counter()
            site = _start_site(library, port, web_workers=web_workers, workers=workers, log=log)
            try:
                if not supervisor.wait_until_serving(
                    f"http://127.0.0.1:{port}/", site.web, timeout=READY_TIMEOUT_SECONDS
                ):
                    raise RuntimeError(f"The site did not start:\n{_log_tail(log_path)}")
                figures["ready_seconds"] = round(time.perf_counter() - started, 2)
                new_texts = NewTexts()
                # The very first search, before anything else has used the web processes.
                first = SiteClient(port, LoadTargets([], [], new_texts), seed=0).timed("new_text")
                figures["first_search"] = {"ms": round(first.ms, 1), "error": first.error}
                progress(f"Generating and importing {image_count} images...")
                targets, figures["indexing"] = import_library(folder, image_count, new_texts)
                figures.update(measure_load(port, targets, mix, concurrencies, seconds, progress))
                figures["memory"] = process_memory(site, port, web_workers)
            finally:
                progress("Stopping the site...")
                site.stop()
    return figures


def _start_site(library, port: int, *, web_workers: int, workers: int, log):
    """gunicorn and the RQ workers as `up` starts them, on the isolated library."""
    return supervisor.start_site_processes(
        host="127.0.0.1",
        port=port,
        workers=workers,
        web_workers=web_workers,
        # The load comes to 127.0.0.1, whatever hosts the real site answers to. The simulated
        # users have no account: a private library would send every request to the login
        # page (a 302 that would count as a success). They all share one address, so
        # per-client rate limits are off.
        env=library.child_environment(
            ALLOWED_HOSTS="127.0.0.1",
            SITE_ACCESS="public",
            SEARCH_RATE_LIMIT="",
            QUERY_IMAGE_RATE_LIMIT="",
            # OCR would read the imported images in the background for minutes, taking cores
            # from the load being measured.
            OCR_ENABLED="0",
        ),
        output=log,
        ocr_workers=0,
    )


def import_library(folder: Path, count: int, new_texts: NewTexts) -> tuple[LoadTargets, dict]:
    """Generated photos through the real ingest path and queue, waiting for the workers."""
    (folder / "library").mkdir()
    (folder / "queries").mkdir()
    paths = synthetic.generate_images(folder / "library", count, IMAGE_SIZE, "JPEG", seed=0)
    queries = synthetic.generate_images(
        folder / "queries", QUERY_IMAGES, IMAGE_SIZE, "JPEG", seed=1
    )
    rate, ingest_seconds, ids = indexing_benchmark.pipeline_rate(paths)
    targets = LoadTargets(ids, [path.read_bytes() for path in queries], new_texts)
    indexing = {
        "images": len(ids),
        "images_per_s": round(rate, 2),
        "ingest_seconds": round(ingest_seconds, 2),
    }
    return targets, indexing


def measure_load(
    port: int,
    targets: LoadTargets,
    mix: dict[str, int],
    concurrencies: list[int],
    seconds: float,
    progress=print,
) -> dict:
    """The mixed load, then new texts alone, at each concurrency (lowest first)."""
    figures = {}
    if "query_image" in mix:
        # The first query image loads a web process's image tower (text searches never do).
        first = SiteClient(port, targets, seed=0).timed("query_image")
        figures["first_query_image"] = {"ms": round(first.ms, 1), "error": first.error}
    progress("Warming up...")
    warm_up(port, targets, list(mix), max(concurrencies))
    figures["mixed"] = []
    for concurrency in concurrencies:
        progress(f"Mixed load: {concurrency} client(s) for {seconds:g} s...")
        figures["mixed"].append(run_phase(port, targets, mix, concurrency, seconds))
    figures["new_text_only"] = []
    for concurrency in concurrencies:
        progress(f"New text only: {concurrency} client(s) for {seconds:g} s...")
        figures["new_text_only"].append(
            run_phase(port, targets, NEW_TEXT_ONLY, concurrency, seconds)
        )
    lowest, highest = figures["new_text_only"][0], figures["new_text_only"][-1]
    if len(concurrencies) > 1 and lowest["total"]["requests_per_s"]:
        figures["new_text_scaling"] = {
            "from_concurrency": lowest["concurrency"],
            "to_concurrency": highest["concurrency"],
            "ratio": round(
                highest["total"]["requests_per_s"] / lowest["total"]["requests_per_s"], 2
            ),
        }
    return figures

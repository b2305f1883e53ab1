"""`up`: run the whole site in one terminal: migrations, RQ workers and gunicorn.

Children run in their own sessions so that Ctrl-C reaches only this process, which then stops
them in order; PR_SET_PDEATHSIG makes them exit even if this process is killed outright.
"""

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management import call_command

from searchsite.embedded import current_services
from searchsite.paths import PROJECT_DIR

SHUTDOWN_GRACE_SECONDS = 20
# `up`'s defaults, shared with `bench_serving` so it measures what `up` runs.
DEFAULT_WORKERS = 1
DEFAULT_WEB_WORKERS = 2
PR_SET_PDEATHSIG = 1
# `up` recovers images left pending by a crash or a Redis outage, so no cron job is needed.
# `requeue` never queues an image a live job holds, so it can run this often.
REQUEUE_EVERY_SECONDS = 30


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def thread_budget(processes: int) -> dict[str, str]:
    """Environment giving each of `processes` children its share of the cores.

    ENCODER_THREADS set by the operator wins. Measured on 2 cores with 8 concurrent text
    searches: two gunicorn workers with torch's default (2 threads each) served 4.9
    requests/s; with one thread each, 28.
    """
    if os.environ.get("ENCODER_THREADS"):
        threads = os.environ["ENCODER_THREADS"]
    else:
        threads = str(max(1, (os.cpu_count() or 1) // max(1, processes)))
    return {"ENCODER_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def _spawn(command: list[str], *, env: dict[str, str], output=None) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        env=env,
        stdout=output,
        stderr=output,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def worker_command(
    queue: str = "default", worker_class: str = "gallery.indexing.worker.EncodingWorker"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "searchsite",
        "rqworker",
        queue,
        "--worker-class",
        worker_class,
        # RQ's scheduler runs the retries of failed jobs (one worker per queue holds its lock).
        "--with-scheduler",
    ]


def ocr_worker_command() -> list[str]:
    """The OCR worker: its own process on its own queue, so a slow OCR job never holds up an
    encoding job (README, "Text in images")."""
    return worker_command(settings.OCR_QUEUE, "gallery.indexing.worker.OcrWorker")


def web_command(host: str, port: int, web_workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "searchsite.wsgi:application",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(web_workers),
        "--timeout",
        "120",
        "--access-logfile",
        "-",
        *_control_socket_options(),
    ]


# A Unix socket path may not be longer than this (108 bytes with the terminator on Linux).
MAX_SOCKET_PATH = 100


def _control_socket_options() -> list[str]:
    """gunicorn's control socket in this instance's data directory: its default,
    ~/.gunicorn/gunicorn.ctl, is shared by every gunicorn of the user, so a second `up`
    took over the first one's."""
    socket_path = settings.DATA_DIR / "run" / "gunicorn.ctl"
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        return ["--no-control-socket"]  # nothing of ours uses it
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    return ["--control-socket", str(socket_path)]


def wait_until_serving(url: str, web: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and web.poll() is None:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def stop_processes(children: list[subprocess.Popen]) -> None:
    """SIGTERM every child, then wait for them within one grace period; kill what outlasts it."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@dataclass
class SiteProcesses:
    """The children `up` runs beside the servers: gunicorn (whose master forks the web
    workers), the RQ encoding workers and the OCR worker (none when OCR is off)."""

    web: subprocess.Popen
    workers: list[subprocess.Popen]
    worker_env: dict[str, str]
    queue: str
    output: object = None

    @property
    def children(self) -> list[subprocess.Popen]:
        return [self.web, *self.workers, *self.ocr_workers]

    web_command: list[str] | None = None
    web_env: dict[str, str] | None = None
    ocr_workers: list[subprocess.Popen] = field(default_factory=list)
    ocr_env: dict[str, str] | None = None

    def start_ocr_worker(self) -> subprocess.Popen:
        return _spawn(ocr_worker_command(), env=self.ocr_env, output=self.output)

    def start_worker(self) -> subprocess.Popen:
        return _spawn(worker_command(self.queue), env=self.worker_env, output=self.output)

    def start_web(self) -> subprocess.Popen:
        return _spawn(self.web_command, env=self.web_env, output=self.output)

    def stop(self) -> None:
        stop_processes(self.children)


def start_site_processes(
    *,
    host: str,
    port: int,
    workers: int,
    web_workers: int,
    env=None,
    output=None,
    ocr_workers: int | None = None,
) -> SiteProcesses:
    """Start the RQ workers and gunicorn, each process with its share of the cores.

    `env` (default: this process's environment) is what the children run with, plus the
    thread budget; the workers listen on the queue the site enqueues to (ENCODING_QUEUE).
    `ocr_workers` (default: one, none with OCR_ENABLED=0) listen on OCR_QUEUE; the OCR worker
    counts as one more worker in the share of the cores, since OCR is background work.
    """
    env = dict(os.environ if env is None else env)
    worker_env = {**env, **thread_budget(workers)}
    queue = settings.ENCODING_QUEUE
    worker_processes = [
        _spawn(worker_command(queue), env=worker_env, output=output) for _ in range(workers)
    ]
    if ocr_workers is None:
        ocr_workers = 1 if settings.OCR_ENABLED else 0
    ocr_env = {**env, **thread_budget(workers + ocr_workers)}
    ocr_processes = [
        _spawn(ocr_worker_command(), env=ocr_env, output=output) for _ in range(ocr_workers)
    ]
    web_env = {**env, **thread_budget(web_workers)}
    command = web_command(host, port, web_workers)
    web = _spawn(command, env=web_env, output=output)
    return SiteProcesses(
        web,
        worker_processes,
        worker_env,
        queue,
        output,
        command,
        web_env,
        ocr_workers=ocr_processes,
        ocr_env=ocr_env,
    )


def _prepare_models(out) -> None:
    """Export the models' ONNX files before the children start (the export runs in a child
    process), so no web worker waits for an export and none keeps the torch model it loads."""
    from gallery.indexing.registry import prepare_model_files

    out.write("Preparing the model files (a new model is exported to ONNX once)...\n")
    out.flush()
    errors, warnings = prepare_model_files()
    for problem in errors + warnings:
        out.write(f"{problem}\n")


class ServiceWatch:
    """Restarts one embedded server when it dies, backing off while restarts fail."""

    MAX_BACKOFF_SECONDS = 30

    def __init__(self, name: str, out):
        self.name = name
        self.out = out
        self.backoff = 1.0
        self.next_try = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next_try

    def attempt(self, restart) -> bool:
        try:
            restarted = restart()
        except Exception as error:
            self.out.write(f"{self.name} exited and could not be restarted ({error}); ")
            self.out.write(f"trying again in {self.backoff:.0f} s.\n")
            self.out.flush()
            self.next_try = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, self.MAX_BACKOFF_SECONDS)
            return False
        if restarted:
            self.out.write(f"{self.name} exited; restarted it with the same data and port.\n")
            self.out.flush()
        self.backoff = 1.0
        return restarted


class ChildWatch:
    """Restarts a child of `up` (gunicorn, an RQ worker) when it exits, backing off while it
    keeps dying young, so a child that cannot start does not spin."""

    MAX_BACKOFF_SECONDS = 30
    YOUNG_SECONDS = 30

    def __init__(self, name: str, out):
        self.name = name
        self.out = out
        self.backoff = 1.0
        self.started_at = time.monotonic()
        self.restart_at: float | None = None

    def restart_if_exited(self, process: subprocess.Popen, start) -> subprocess.Popen:
        """The process to watch from now on: this one while it runs, else a new one once its
        back-off has passed."""
        if process.poll() is None:
            return process
        now = time.monotonic()
        if self.restart_at is None:
            died_young = now - self.started_at < self.YOUNG_SECONDS
            delay = self.backoff if died_young else 0.0
            self.backoff = min(self.backoff * 2, self.MAX_BACKOFF_SECONDS) if died_young else 1.0
            self.restart_at = now + delay
            self.out.write(
                f"{self.name} exited with code {process.returncode}; restarting it"
                + (f" in {delay:.0f} s.\n" if delay else ".\n")
            )
            self.out.flush()
        if now < self.restart_at:
            return process
        self.restart_at = None
        self.started_at = now
        return start()


def _requeue_lost_images(out) -> None:
    from gallery.indexing.queueing import requeue_lost_images
    from gallery.indexing.text_reading import requeue_unread_images

    try:
        queued = requeue_lost_images()
    except Exception as error:  # the site keeps serving; the next round tries again
        out.write(f"Could not re-queue pending images: {error}\n")
        return
    if queued:
        out.write(f"Re-queued {queued} pending image(s) for encoding.\n")
        out.flush()
    try:
        # Quietly: after an upgrade this queues the existing library's OCR a round at a time.
        requeue_unread_images()
    except Exception as error:
        out.write(f"Could not queue OCR of unread images: {error}\n")


def run_site(*, host: str, port: int, workers: int, web_workers: int, out) -> int:
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())

    out.write(f"Data directory: {settings.DATA_DIR}\n")
    call_command("migrate", interactive=False, verbosity=0)
    _prepare_models(out)
    site = start_site_processes(host=host, port=port, workers=workers, web_workers=web_workers)
    url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/"
    try:
        if not wait_until_serving(url, site.web):
            out.write("The web server did not start; see the messages above.\n")
            return 1
        out.write(f"Visual Search is running at {url}  (Ctrl-C to stop)\n")
        out.flush()
        next_requeue = 0.0
        watches = [ServiceWatch("PostgreSQL", out), ServiceWatch("Valkey", out)]
        web_watch = ChildWatch("gunicorn", out)
        worker_watches = [ChildWatch("RQ worker", out) for _ in site.workers]
        ocr_watches = [ChildWatch("OCR worker", out) for _ in site.ocr_workers]
        while not stop_requested.wait(1.0):
            services = current_services()
            if services is not None:
                restarts = [services.restart_postgres_if_dead, services.restart_valkey_if_dead]
                for watch, restart in zip(watches, restarts, strict=True):
                    if watch.due() and watch.attempt(restart):
                        next_requeue = 0.0  # what waited for it is queued now
            if time.monotonic() >= next_requeue:
                _requeue_lost_images(out)
                next_requeue = time.monotonic() + REQUEUE_EVERY_SECONDS
            site.web = web_watch.restart_if_exited(site.web, site.start_web)
            for index, watch in enumerate(worker_watches):
                site.workers[index] = watch.restart_if_exited(
                    site.workers[index], site.start_worker
                )
            for index, watch in enumerate(ocr_watches):
                site.ocr_workers[index] = watch.restart_if_exited(
                    site.ocr_workers[index], site.start_ocr_worker
                )
    finally:
        out.write("Stopping web server and workers...\n")
        out.flush()
        site.stop()
        services = current_services()
        if services is not None:
            out.write("Stopping embedded PostgreSQL and Valkey...\n")
            services.stop()
        out.write("Stopped.\n")
        out.flush()
    return 0

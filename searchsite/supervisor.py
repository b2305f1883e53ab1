"""`up`: run the whole site in one terminal: migrations, RQ workers, the re-queue loop and
gunicorn, and restart what dies (the embedded servers too) with one back-off.

Children run in their own sessions so that Ctrl-C reaches only this process, which then stops
them in order; PR_SET_PDEATHSIG makes them exit even if this process is killed outright.
Each RQ worker is a child of its own (`rqworker`, as Compose runs it), not a worker of RQ's
WorkerPool: the pool's forked workers outlive a pool that is killed, and it restarts them
every second without a back-off.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import psutil
from django.conf import settings
from django.core.management import call_command

from gallery.processes import end_with_parent
from searchsite.embedded import current_services
from searchsite.paths import PROJECT_DIR

SHUTDOWN_GRACE_SECONDS = 20
# `up`'s defaults, shared with `bench_serving` so it measures what `up` runs.
DEFAULT_WORKERS = 1
DEFAULT_WEB_WORKERS = 2
# `up` recovers images left pending by a crash or a Redis outage, so no cron job is needed:
# it runs `requeue --every 30`, as Compose's requeue service does. `requeue` never queues an
# image a live job holds, so it can run this often.
REQUEUE_EVERY_SECONDS = 30
# Asks `requeue --every` for a round now (a server it waited for is back).
REQUEUE_NOW_SIGNAL = signal.SIGUSR1


def _end_with_parent_and_wait_for_requeue_handler() -> None:
    end_with_parent()
    # Ignored until `requeue --every` installs its handler: a round asked for while it starts
    # would otherwise end it (it runs one at its start anyway).
    signal.signal(REQUEUE_NOW_SIGNAL, signal.SIG_IGN)


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


def _spawn(
    command: list[str], *, env: dict[str, str], output=None, preexec=end_with_parent
) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        env=env,
        stdout=output,
        stderr=output,
        start_new_session=True,
        preexec_fn=preexec if sys.platform.startswith("linux") else None,
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


def requeue_command() -> list[str]:
    return [sys.executable, "-m", "searchsite", "requeue", "--every", str(REQUEUE_EVERY_SECONDS)]


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
    workers), the RQ encoding workers, the OCR worker (none when OCR is off) and, once the
    site serves, the re-queue loop."""

    web: subprocess.Popen
    workers: list[subprocess.Popen]
    worker_env: dict[str, str]
    queue: str
    output: object = None
    web_command: list[str] | None = None
    web_env: dict[str, str] | None = None
    ocr_workers: list[subprocess.Popen] = field(default_factory=list)
    ocr_env: dict[str, str] | None = None
    requeue: subprocess.Popen | None = None

    @property
    def children(self) -> list[subprocess.Popen]:
        requeue = [self.requeue] if self.requeue is not None else []
        return [self.web, *self.workers, *self.ocr_workers, *requeue]

    def start_requeue(self) -> subprocess.Popen:
        return _spawn(
            requeue_command(),
            env=dict(os.environ),
            output=self.output,
            preexec=_end_with_parent_and_wait_for_requeue_handler,
        )

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


class Backoff:
    """`up`'s one back-off: 1, 2, 4 … up to 30 s before each next try while tries keep
    failing, so a server or a child that cannot start does not spin; none after a success."""

    FIRST_SECONDS = 1.0
    MAX_SECONDS = 30.0

    def __init__(self):
        self.delay = self.FIRST_SECONDS
        self.next_try = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next_try

    def failed(self) -> float:
        """Wait before the next try (twice as long the time after); returns the wait."""
        wait = self.delay
        self.next_try = time.monotonic() + wait
        self.delay = min(wait * 2, self.MAX_SECONDS)
        return wait

    def succeeded(self) -> None:
        self.delay = self.FIRST_SECONDS
        self.next_try = 0.0


def _say(out, message: str) -> None:
    out.write(message + "\n")
    out.flush()


class ServiceWatch:
    """Restarts one embedded server when it dies: `restart()` returns whether it restarted
    the server (False: it runs) and raises when it could not."""

    def __init__(self, name: str, restart, out):
        self.name = name
        self.restart = restart
        self.out = out
        self.backoff = Backoff()

    def check(self) -> bool:
        """Whether the server was restarted now."""
        if not self.backoff.due():
            return False
        try:
            restarted = self.restart()
        except Exception as error:
            wait = self.backoff.failed()
            _say(
                self.out,
                f"{self.name} exited and could not be restarted ({error}); "
                f"trying again in {wait:.0f} s.",
            )
            return False
        self.backoff.succeeded()
        if restarted:
            _say(self.out, f"{self.name} exited; restarted it with the same data and port.")
        return restarted


class ChildWatch:
    """Restarts a child of `up` (gunicorn, an RQ worker, the re-queue loop) when it exits; one
    that died young (within YOUNG_SECONDS of its start) waits its back-off first."""

    YOUNG_SECONDS = 30

    def __init__(self, name: str, out):
        self.name = name
        self.out = out
        self.backoff = Backoff()
        self.started_at = time.monotonic()
        self.exit_seen = False

    def restart_if_exited(self, process: subprocess.Popen, start) -> subprocess.Popen:
        """The process to watch from now on: this one while it runs, else a new one once its
        back-off has passed."""
        if process.poll() is None:
            return process
        if not self.exit_seen:
            self.exit_seen = True
            wait = 0.0
            if time.monotonic() - self.started_at < self.YOUNG_SECONDS:
                wait = self.backoff.failed()
            else:
                self.backoff.succeeded()
            _say(
                self.out,
                f"{self.name} exited with code {process.returncode}; restarting it"
                + (f" in {wait:.0f} s." if wait else "."),
            )
        if not self.backoff.due():
            return process
        self.exit_seen = False
        self.started_at = time.monotonic()
        return start()


def _reap_adopted_orphans(own: list[subprocess.Popen]) -> None:
    """`up` is a subreaper (cli.py): a process orphaned below it, such as the scheduler of a
    SIGKILLed worker, becomes its child. Reap those that ended, so none stays a zombie; its
    own children are left to their Popen."""
    own_pids = {process.pid for process in own}
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.pid not in own_pids and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


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
        site.requeue = site.start_requeue()
        services = current_services()
        server_watches = []
        if services is not None:
            server_watches = [
                ServiceWatch("PostgreSQL", services.restart_postgres_if_dead, out),
                ServiceWatch("Valkey", services.restart_valkey_if_dead, out),
            ]
        web_watch = ChildWatch("gunicorn", out)
        requeue_watch = ChildWatch("The re-queue loop", out)
        worker_watches = [ChildWatch("RQ worker", out) for _ in site.workers]
        ocr_watches = [ChildWatch("OCR worker", out) for _ in site.ocr_workers]
        while not stop_requested.wait(1.0):
            if any([watch.check() for watch in server_watches]):
                # What waited for the server is queued now, not at the next round.
                if site.requeue.poll() is None:
                    site.requeue.send_signal(REQUEUE_NOW_SIGNAL)
            _reap_adopted_orphans(site.children)
            site.web = web_watch.restart_if_exited(site.web, site.start_web)
            site.requeue = requeue_watch.restart_if_exited(site.requeue, site.start_requeue)
            site.workers = [
                watch.restart_if_exited(process, site.start_worker)
                for watch, process in zip(worker_watches, site.workers, strict=True)
            ]
            site.ocr_workers = [
                watch.restart_if_exited(process, site.start_ocr_worker)
                for watch, process in zip(ocr_watches, site.ocr_workers, strict=True)
            ]
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

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

from django.conf import settings
from django.core.management import call_command

from searchsite.embedded import current_services
from searchsite.paths import PROJECT_DIR

SHUTDOWN_GRACE_SECONDS = 20
PR_SET_PDEATHSIG = 1
# `up` recovers images left pending by a crash or a Redis outage, so no cron job is needed.
REQUEUE_EVERY_SECONDS = 300


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


def _spawn(command: list[str], *, threads: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        env={**os.environ, **threads},
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def worker_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "searchsite",
        "rqworker",
        "default",
        "--worker-class",
        "gallery.indexing.worker.EncodingWorker",
    ]


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
    ]


def _wait_until_serving(url: str, web: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and web.poll() is None:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def _stop(children: list[subprocess.Popen]) -> None:
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


def _requeue_stuck_images(out) -> None:
    from gallery.indexing.queueing import requeue_stuck_images

    try:
        queued = requeue_stuck_images()
    except Exception as error:  # the site keeps serving; the next round tries again
        out.write(f"Could not re-queue pending images: {error}\n")
        return
    if queued:
        out.write(f"Re-queued {queued} pending image(s) for encoding.\n")
        out.flush()


def run_site(*, host: str, port: int, workers: int, web_workers: int, out) -> int:
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())

    out.write(f"Data directory: {settings.DATA_DIR}\n")
    call_command("migrate", interactive=False, verbosity=0)
    worker_threads, web_threads = thread_budget(workers), thread_budget(web_workers)
    worker_processes = [_spawn(worker_command(), threads=worker_threads) for _ in range(workers)]
    web = _spawn(web_command(host, port, web_workers), threads=web_threads)
    children = [web, *worker_processes]
    url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/"
    exit_code = 0
    try:
        if not _wait_until_serving(url, web):
            out.write("The web server did not start; see the messages above.\n")
            return 1
        out.write(f"Visual Search is running at {url}  (Ctrl-C to stop)\n")
        out.flush()
        next_requeue = 0.0
        while not stop_requested.wait(1.0):
            if time.monotonic() >= next_requeue:
                _requeue_stuck_images(out)
                next_requeue = time.monotonic() + REQUEUE_EVERY_SECONDS
            if web.poll() is not None:
                out.write(f"gunicorn exited with code {web.returncode}; stopping.\n")
                exit_code = 1
                break
            for index, worker in enumerate(worker_processes):
                if worker.poll() is not None:
                    out.write(f"RQ worker exited with code {worker.returncode}; restarting it.\n")
                    worker_processes[index] = _spawn(worker_command(), threads=worker_threads)
            children = [web, *worker_processes]
    finally:
        out.write("Stopping web server and workers...\n")
        out.flush()
        _stop(children)
        services = current_services()
        if services is not None:
            out.write("Stopping embedded PostgreSQL and Valkey...\n")
            services.stop()
        out.write("Stopped.\n")
        out.flush()
    return exit_code

"""End-to-end latency of a text search over HTTP, under a gunicorn of the benchmark's own."""

import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from gallery.offline.timing import percentile


def free_port() -> int:
    """A local TCP port nothing listens on now, for a gunicorn of the benchmark's own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure_http(library, model: str, requests: int = 20) -> dict:
    """End-to-end latency of GET /search under gunicorn, uncached and cached text queries."""
    port = free_port()
    env = library.child_environment(
        CLIP_MODEL=model,
        CLIP_PRETRAINED="random",
        SEARCH_EXACT_MAX_ROWS="0",
        # The requests come without an account; a private library would answer 401.
        SITE_ACCESS="public",
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "searchsite.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "300",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/search?"

    def get(text: str) -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(base + urllib.parse.urlencode({"q": text}), timeout=120) as r:
            r.read()
        return (time.perf_counter() - started) * 1000

    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                get("warm up the model")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start for the HTTP benchmark") from None
                time.sleep(0.5)
        uncached = [get(f"a photo of object number {n} on a table") for n in range(requests)]
        cached = [get("a photo of object number 0 on a table") for _ in range(requests)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "uncached_p50_ms": percentile(uncached, 50),
        "uncached_p95_ms": percentile(uncached, 95),
        "cached_p50_ms": percentile(cached, 50),
        "cached_p95_ms": percentile(cached, 95),
    }

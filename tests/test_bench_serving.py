"""`bench_serving` with tiny numbers: the stack `up` runs, every kind of request, then nothing
left running. Figures only, never timings."""

import json
from io import StringIO

import psutil
import pytest
from django.core.management import call_command

from gallery.offline import serving


@pytest.mark.django_db(transaction=True)
def test_bench_serving_answers_every_kind_without_errors_and_reports_memory_per_process(
    tmp_path,
):
    figures_path = tmp_path / "serving.json"
    out = StringIO()
    call_command(
        "bench_serving",
        *("--seconds", "2", "--images", "12", "--concurrency", "1", "2"),
        *("--json", str(figures_path)),
        stdout=out,
        stderr=StringIO(),
    )

    figures = json.loads(figures_path.read_text())
    assert figures["model"] == "vs-test-tiny:random-seed0"
    assert figures["indexing"]["images"] == 12
    assert figures["first_search"]["error"] == "" and figures["first_search"]["ms"] > 0
    assert [phase["concurrency"] for phase in figures["mixed"]] == [1, 2]
    for phase in figures["mixed"]:
        assert set(phase["kinds"]) == set(serving.KINDS)
        for kind, row in phase["kinds"].items():
            assert row["requests"] > 0 and row["errors"] == 0, (kind, phase["error_examples"])
        assert phase["total"]["requests"] == sum(r["requests"] for r in phase["kinds"].values())
    for phase in figures["new_text_only"]:
        assert phase["total"]["requests"] > 0 and phase["total"]["errors"] == 0
    assert figures["new_text_scaling"]["to_concurrency"] == 2

    # `up`'s defaults: gunicorn with two web workers and one RQ worker.
    roles = sorted(row["process"] for row in figures["memory"])
    assert roles == ["RQ scheduler", "RQ worker", "gunicorn master", "web worker", "web worker"]
    assert all(row["rss_mib"] > 0 for row in figures["memory"])
    # A query image was searched, so the web workers that answered hold the image tower.
    assert "image+text" in {row["towers"] for row in figures["memory"]}

    printed = out.getvalue()
    assert "Mixed load, 2 client(s)" in printed and "query_image" in printed
    assert "RSS MiB" in printed
    assert not any(psutil.pid_exists(row["pid"]) for row in figures["memory"])

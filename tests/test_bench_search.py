"""`bench_search` with tiny numbers: the product index, the statement beside the bare query and
FAISS side by side, the other storage; figures only, never timings."""

import json
from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db(transaction=True)
def test_bench_search_measures_the_product_index_beside_faiss_and_the_other_storage(tmp_path):
    figures_path = tmp_path / "search.json"
    out = StringIO()
    call_command(
        "bench_search",
        *("--n", "3000", "--queries", "8", "--ef", "40,100"),
        *("--model", "vs-test-tiny", "--no-http", "--second-model", ""),
        *("--json", str(figures_path)),
        stdout=out,
        stderr=StringIO(),
    )

    figures = json.loads(figures_path.read_text())
    assert (figures["storage"], figures["m"], figures["ef_construction"]) == ("halfvec", 32, 200)
    assert figures["index"]["size_mb"] > 0
    assert figures["other_storage"]["storage"] == "vector"
    # halfvec keeps two bytes a dimension, vector four: the vector index is the larger.
    assert figures["other_storage"]["index"]["size_mb"] > figures["index"]["size_mb"]
    assert [row["ef_search"] for row in figures["ef_search"]] == [40, 100]
    assert [row["ef_search"] for row in figures["faiss"]["ef_search"]] == [40, 100]
    assert figures["faiss"]["exact_scan"]["recall_at_10"] == 1.0
    assert figures["exact_scan"]["recall_at_10"] >= 0.99  # halfvec distances, exact order
    for row in figures["ef_search"]:
        assert 0.8 <= row["recall_at_10"] <= 1.0 and row["min_rows_returned"] == 10
    assert [row["ef_search"] for row in figures["faiss_ratios"]] == [40, 100]
    statement = figures["statement"]
    assert statement["ef_search"] == figures["shipped_ef_search"] == 100
    assert statement["bare"]["recall_at_10"] >= 0.8 and statement["faiss_p50_ms"] > 0
    assert "FAISS recall" in out.getvalue() and "bare index query" in out.getvalue()

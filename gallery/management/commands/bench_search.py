from django.conf import settings
from django.core.management.base import BaseCommand

from gallery.offline import search_benchmark
from gallery.offline.reporting import FiguresPrinter, add_json_argument, record_cells

# What every row of a search measurement shows first.
RECALL_AND_LATENCY = {"recall@10": "recall_at_10", "p50 ms": "p50_ms", "p95 ms": "p95_ms"}


class Command(BaseCommand):
    help = (
        "Load clustered synthetic 512-d unit vectors with COPY into an isolated database, "
        "build the model's HNSW index, and measure recall@10 against exact search and "
        "database latency per ef_search beside FAISS (same vectors, same m/ef), the statement's "
        "overhead over the bare index query, filtered queries at 1 % and 10 % selectivity, the "
        "other index storage, and end-to-end HTTP latency of a text search."
    )

    def add_arguments(self, parser):
        parser.add_argument("--n", type=int, default=100_000, help="vectors to load")
        parser.add_argument("--ef", default="40,100,200,400", help="ef_search values to try")
        parser.add_argument("--queries", type=int, default=100)
        parser.add_argument("--model", default="ViT-B-32", help="text model for the HTTP test")
        parser.add_argument("--m", type=int, default=settings.SEARCH_INDEX_M)
        parser.add_argument(
            "--ef-construction", type=int, default=settings.SEARCH_INDEX_EF_CONSTRUCTION
        )
        parser.add_argument(
            "--storage", choices=("halfvec", "vector"), default=settings.SEARCH_INDEX_STORAGE
        )
        parser.add_argument(
            "--no-other-storage",
            action="store_true",
            help="skip building the index in the other storage (halfvec / vector) beside it",
        )
        parser.add_argument("--no-faiss", action="store_true", help="skip the FAISS comparison")
        parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
        parser.add_argument(
            "--second-model",
            default="ViT-L-14",
            help="a larger architecture measured beside the first ('' to skip; ViT-L-14: 768-d)",
        )
        add_json_argument(parser)

    def handle(self, *args, **options):
        figures = search_benchmark.run_search_benchmark(
            count=options["n"],
            ef_values=[int(value) for value in options["ef"].split(",")],
            query_count=options["queries"],
            model=options["model"],
            m=options["m"],
            ef_construction=options["ef_construction"],
            storage=options["storage"],
            http=not options["no_http"],
            other_storage=not options["no_other_storage"],
            faiss=not options["no_faiss"],
            second_model=options["second_model"],
            progress=self.stderr.write,
        )
        printer = FiguresPrinter(self.stdout)
        printer.line(
            f"{figures['count']:,} vectors of {figures['model']} ({figures['dimensions']}-d), "
            f"{figures['storage']} index, m={figures['m']}, "
            f"ef_construction={figures['ef_construction']}, loaded in {figures['load_seconds']} s; "
            f"shipped ef_search for this size: {figures['shipped_ef_search']}"
        )
        printer.table(["index", "build s", "size MB"], index_rows(figures))
        printer.table(
            [
                "ef_search",
                "recall@10",
                "p50 ms",
                "p95 ms",
                "min rows",
                "FAISS recall",
                "FAISS p50 ms",
                "recall diff",
                "p50 ratio",
            ],
            ef_search_rows(figures),
            gap=True,
        )
        statement = figures["statement"]
        printer.table(
            [f"at ef_search {statement['ef_search']}", "recall@10", "p50 ms", "p95 ms", "vs FAISS"],
            statement_rows(figures),
            gap=True,
        )
        printer.records(
            figures["filtered"],
            {
                "filter": "selectivity",
                "matching": "matching_rows",
                **RECALL_AND_LATENCY,
                "mean rows": "mean_rows_returned",
                "min rows": "min_rows_returned",
            },
            gap=True,
        )
        if "second_model" in figures:
            printer.records(
                [figures["second_model"]],
                {
                    "second model": lambda second: f"{second['model']} ({second['dimensions']}-d)",
                    "ef_search": "ef_search",
                    **RECALL_AND_LATENCY,
                    "min rows": "min_rows_returned",
                },
                gap=True,
            )
        if "http" in figures:
            http = figures["http"]
            printer.table(
                ["HTTP text search", "p50 ms", "p95 ms"],
                [
                    ["uncached", http["uncached_p50_ms"], http["uncached_p95_ms"]],
                    ["cached", http["cached_p50_ms"], http["cached_p95_ms"]],
                ],
                gap=True,
            )
        printer.save_json(options["json_path"], figures)


def index_rows(figures: dict) -> list[list]:
    """Build time and size of each index measured: the product's, the other storage's,
    FAISS's and the second model's."""
    built = [(figures["storage"], figures["index"])]
    if "other_storage" in figures:
        built.append((figures["other_storage"]["storage"], figures["other_storage"]["index"]))
    rows = [[label, index["build_seconds"], index["size_mb"]] for label, index in built]
    if "faiss" in figures:
        rows.append(["FAISS HNSWFlat", figures["faiss"]["build_seconds"], "-"])
    if "second_model" in figures:
        second = figures["second_model"]
        rows.append(
            [
                f"{second['dimensions']}-d",
                second["index"]["build_seconds"],
                second["index"]["size_mb"],
            ]
        )
    return rows


def ef_search_rows(figures: dict) -> list[list]:
    """Per ef_search and for the exact scan: the product's recall and latency beside FAISS's."""
    faiss = figures.get("faiss", {})
    faiss_rows = {row["ef_search"]: row for row in faiss.get("ef_search", [])}
    measured = [
        (row["ef_search"], row, faiss_rows.get(row["ef_search"])) for row in figures["ef_search"]
    ]
    measured.append(("exact scan", figures["exact_scan"], faiss.get("exact_scan")))
    return [
        [
            label,
            *record_cells(row, RECALL_AND_LATENCY),
            row["min_rows_returned"],
            *beside_faiss(row, faiss_row),
        ]
        for label, row, faiss_row in measured
    ]


def statement_rows(figures: dict) -> list[list]:
    """At the shipped ef_search: the bare index query, the product statement, and the product
    statement on the other storage's index, each against FAISS's time."""
    statement = figures["statement"]
    measured = [
        ("bare index query (ids)", statement["bare"]),
        ("product statement", statement["product"]),
    ]
    if "other_storage" in figures:
        other = figures["other_storage"]
        measured.append((f"product statement, {other['storage']} index", other))
    return [
        [
            label,
            *record_cells(row, RECALL_AND_LATENCY),
            time_ratio(row["p50_ms"], statement.get("faiss_p50_ms")),
        ]
        for label, row in measured
    ]


def beside_faiss(row: dict, faiss: dict | None) -> list:
    """FAISS's recall and p50 for the same searches, our recall minus FAISS's, the time ratio."""
    if not faiss:
        return ["-"] * 4
    return [
        faiss["recall_at_10"],
        faiss["p50_ms"],
        f"{row['recall_at_10'] - faiss['recall_at_10']:+.3f}",
        time_ratio(row["p50_ms"], faiss["p50_ms"]),
    ]


def time_ratio(ms: float, faiss_ms: float | None) -> str:
    return f"{ms / max(faiss_ms, 1e-3):.1f}x" if faiss_ms else "-"

from django.conf import settings
from django.core.management.base import BaseCommand

from gallery.offline import benchmarks


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
        parser.add_argument("--json", dest="json_path", help="write the figures to this file")

    def handle(self, *args, **options):
        figures = benchmarks.run_search_benchmark(
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
        if options["json_path"]:
            benchmarks.write_json(options["json_path"], figures)
        table = benchmarks.format_table
        self.stdout.write(
            f"{figures['count']:,} vectors of {figures['model']} ({figures['dimensions']}-d), "
            f"{figures['storage']} index, m={figures['m']}, "
            f"ef_construction={figures['ef_construction']}, loaded in {figures['load_seconds']} s; "
            f"shipped ef_search for this size: {figures['shipped_ef_search']}"
        )
        indexes = [
            [figures["storage"], figures["index"]["build_seconds"], figures["index"]["size_mb"]]
        ]
        if "other_storage" in figures:
            other = figures["other_storage"]
            indexes.append(
                [other["storage"], other["index"]["build_seconds"], other["index"]["size_mb"]]
            )
        if "faiss" in figures:
            indexes.append(["FAISS HNSWFlat", figures["faiss"]["build_seconds"], "-"])
        if "second_model" in figures:
            second = figures["second_model"]
            indexes.append(
                [
                    f"{second['dimensions']}-d",
                    second["index"]["build_seconds"],
                    second["index"]["size_mb"],
                ]
            )
        self.stdout.write(table(["index", "build s", "size MB"], indexes))
        faiss_rows = {
            row["ef_search"]: row for row in figures.get("faiss", {}).get("ef_search", [])
        }
        rows = [
            [
                label,
                row["recall_at_10"],
                row["p50_ms"],
                row["p95_ms"],
                row["min_rows_returned"],
                *beside_faiss(row, faiss),
            ]
            for label, row, faiss in [
                *(
                    (row["ef_search"], row, faiss_rows.get(row["ef_search"]))
                    for row in figures["ef_search"]
                ),
                ("exact scan", figures["exact_scan"], figures.get("faiss", {}).get("exact_scan")),
            ]
        ]
        self.stdout.write("")
        self.stdout.write(
            table(
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
                rows,
            )
        )
        statement = figures["statement"]
        faiss_p50 = statement.get("faiss_p50_ms")
        layer_rows = [
            [
                label,
                statement[key]["recall_at_10"],
                statement[key]["p50_ms"],
                statement[key]["p95_ms"],
                time_ratio(statement[key]["p50_ms"], faiss_p50),
            ]
            for label, key in (("bare index query (ids)", "bare"), ("product statement", "product"))
        ]
        if "other_storage" in figures:
            other = figures["other_storage"]
            layer_rows.append(
                [
                    f"product statement, {other['storage']} index",
                    other["recall_at_10"],
                    other["p50_ms"],
                    other["p95_ms"],
                    time_ratio(other["p50_ms"], faiss_p50),
                ]
            )
        self.stdout.write("")
        self.stdout.write(
            table(
                [
                    f"at ef_search {statement['ef_search']}",
                    "recall@10",
                    "p50 ms",
                    "p95 ms",
                    "vs FAISS",
                ],
                layer_rows,
            )
        )
        self.stdout.write("")
        self.stdout.write(
            table(
                ["filter", "matching", "recall@10", "p50 ms", "p95 ms", "mean rows", "min rows"],
                [
                    [
                        row["selectivity"],
                        row["matching_rows"],
                        row["recall_at_10"],
                        row["p50_ms"],
                        row["p95_ms"],
                        row["mean_rows_returned"],
                        row["min_rows_returned"],
                    ]
                    for row in figures["filtered"]
                ],
            )
        )
        if "second_model" in figures:
            second = figures["second_model"]
            self.stdout.write("")
            self.stdout.write(
                table(
                    ["second model", "ef_search", "recall@10", "p50 ms", "p95 ms", "min rows"],
                    [
                        [
                            f"{second['model']} ({second['dimensions']}-d)",
                            second["ef_search"],
                            second["recall_at_10"],
                            second["p50_ms"],
                            second["p95_ms"],
                            second["min_rows_returned"],
                        ]
                    ],
                )
            )
        if "http" in figures:
            http = figures["http"]
            self.stdout.write("")
            self.stdout.write(
                table(
                    ["HTTP text search", "p50 ms", "p95 ms"],
                    [
                        ["uncached", http["uncached_p50_ms"], http["uncached_p95_ms"]],
                        ["cached", http["cached_p50_ms"], http["cached_p95_ms"]],
                    ],
                )
            )
        if options["json_path"]:
            self.stdout.write(f"Wrote {options['json_path']}")


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

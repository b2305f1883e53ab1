from django.core.management.base import BaseCommand

from gallery.models import HNSW_EF_CONSTRUCTION, HNSW_M
from gallery.offline import benchmarks


class Command(BaseCommand):
    help = (
        "Load clustered synthetic 512-d unit vectors with COPY into an isolated database, "
        "build the HNSW index (vector and halfvec), and measure recall@10 against exact search "
        "and database latency for several ef_search values, filtered queries at 1 % and 10 % "
        "selectivity, and end-to-end HTTP latency of a text search."
    )

    def add_arguments(self, parser):
        parser.add_argument("--n", type=int, default=100_000, help="vectors to load")
        parser.add_argument("--ef", default="20,40,64,100,200", help="ef_search values to try")
        parser.add_argument("--queries", type=int, default=100)
        parser.add_argument("--model", default="ViT-B-32", help="text model for the HTTP test")
        parser.add_argument("--m", type=int, default=HNSW_M)
        parser.add_argument("--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION)
        parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
        parser.add_argument(
            "--second-model",
            default="ViT-L-14",
            help="a larger architecture measured beside the first ('' to skip; ViT-L-14: 768-d)",
        )
        parser.add_argument("--json", dest="json_path", help="write the figures to this file")

    def handle(
        self,
        *args,
        n,
        ef,
        queries,
        model,
        m,
        ef_construction,
        no_http,
        second_model,
        json_path,
        **options,
    ):
        figures = benchmarks.run_search_benchmark(
            count=n,
            ef_values=[int(value) for value in ef.split(",")],
            query_count=queries,
            model=model,
            m=m,
            ef_construction=ef_construction,
            http=not no_http,
            second_model=second_model,
            progress=self.stderr.write,
        )
        if json_path:
            benchmarks.write_json(json_path, figures)
        self.stdout.write(
            f"{figures['count']:,} vectors of {figures['model']} ({figures['dimensions']}-d), "
            f"m={figures['m']}, "
            f"ef_construction={figures['ef_construction']}, loaded in {figures['load_seconds']} s"
        )
        indexes = [
            [kind, figures[f"{kind}_index"]["build_seconds"], figures[f"{kind}_index"]["size_mb"]]
            for kind in ("vector", "halfvec")
        ]
        if "second_model" in figures:
            second = figures["second_model"]
            indexes.append(
                [
                    f"vector {second['dimensions']}-d",
                    second["index"]["build_seconds"],
                    second["index"]["size_mb"],
                ]
            )
        self.stdout.write(benchmarks.format_table(["index", "build s", "size MB"], indexes))
        rows = [
            [
                row["ef_search"],
                row["recall_at_10"],
                row["p50_ms"],
                row["p95_ms"],
                row["min_rows_returned"],
            ]
            for row in figures["ef_search"]
        ]
        halfvec = figures["halfvec"]
        rows.append(
            [
                f"{halfvec['ef_search']} (halfvec)",
                halfvec["recall_at_10"],
                halfvec["p50_ms"],
                halfvec["p95_ms"],
                "-",
            ]
        )
        if "second_model" in figures:
            second = figures["second_model"]
            rows.append(
                [
                    f"{second['ef_search']} ({second['dimensions']}-d {second['model']})",
                    second["recall_at_10"],
                    second["p50_ms"],
                    second["p95_ms"],
                    second["min_rows_returned"],
                ]
            )
        exact = figures["exact_scan"]
        rows.append(
            [
                "exact scan",
                exact["recall_at_10"],
                exact["p50_ms"],
                exact["p95_ms"],
                exact["min_rows_returned"],
            ]
        )
        self.stdout.write("")
        self.stdout.write(
            benchmarks.format_table(
                ["ef_search", "recall@10", "p50 ms", "p95 ms", "min rows"], rows
            )
        )
        self.stdout.write("")
        self.stdout.write(
            benchmarks.format_table(
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
        if "http" in figures:
            http = figures["http"]
            self.stdout.write("")
            self.stdout.write(
                benchmarks.format_table(
                    ["HTTP text search", "p50 ms", "p95 ms"],
                    [
                        ["uncached", http["uncached_p50_ms"], http["uncached_p95_ms"]],
                        ["cached", http["cached_p50_ms"], http["cached_p95_ms"]],
                    ],
                )
            )
        if json_path:
            self.stdout.write(f"Wrote {json_path}")

from django.core.management.base import BaseCommand, CommandError

from gallery.offline import benchmarks, serving
from searchsite.supervisor import DEFAULT_WEB_WORKERS, DEFAULT_WORKERS

HEADERS = ["kind", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"]


class Command(BaseCommand):
    help = (
        "Start the site as `up` runs it (gunicorn and RQ workers) on an isolated library, import "
        "generated images, then measure HTTP requests/s and latency per kind of request under a "
        "mixed load and under new text searches alone, at each concurrency, and the resident "
        "memory of every process. Random weights unless CLIP_PRETRAINED or CLIP_WEIGHTS_FILE "
        "is set."
    )

    def add_arguments(self, parser):
        parser.add_argument("--images", type=int, default=300, help="images to import")
        parser.add_argument("--seconds", type=float, default=60, help="length of each phase")
        parser.add_argument(
            "--concurrency", type=int, nargs="+", default=[1, 8], help="simultaneous users"
        )
        parser.add_argument("--web-workers", type=int, default=DEFAULT_WEB_WORKERS)
        parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="RQ workers")
        default_mix = ",".join(f"{kind}={weight}" for kind, weight in serving.MIXED_LOAD.items())
        parser.add_argument(
            "--mix", default=default_mix, help=f"relative weights (default: {default_mix})"
        )
        parser.add_argument("--json", dest="json_path", help="write the figures to this file")
        parser.add_argument(
            "--log", dest="log_path", help="keep the site's output (access log, workers) here"
        )

    def handle(
        self,
        *args,
        images,
        seconds,
        concurrency,
        web_workers,
        workers,
        mix,
        json_path,
        log_path,
        **options,
    ):
        if images < 1 or seconds <= 0 or min(concurrency) < 1:
            raise CommandError("--images, --seconds and --concurrency must be above 0.")
        try:
            weights = serving.parse_mix(mix)
        except ValueError as error:
            raise CommandError(f"--mix: {error}") from None
        try:
            figures = serving.run_serving_benchmark(
                image_count=images,
                seconds=seconds,
                concurrencies=concurrency,
                web_workers=web_workers,
                workers=workers,
                mix=weights,
                log_path=log_path,
                progress=self.stderr.write,
            )
        except RuntimeError as error:  # the site did not start, an image failed to encode
            raise CommandError(str(error)) from None
        except KeyboardInterrupt:
            self.stderr.write("Interrupted; the site is stopped and the temporary library dropped.")
            raise SystemExit(130) from None
        if json_path:
            benchmarks.write_json(json_path, figures)
        self._print_setup(figures)
        for phase in figures["mixed"]:
            self.stdout.write("")
            self.stdout.write(
                f"Mixed load, {phase['concurrency']} client(s), {phase['seconds']} s:"
            )
            rows = [[kind, *self._figures(row)] for kind, row in phase["kinds"].items()]
            rows.append(["total", *self._figures(phase["total"])])
            self.stdout.write(benchmarks.format_table(HEADERS, rows))
            self._print_errors(phase)
        self._print_new_text(figures)
        self.stdout.write("")
        self.stdout.write("Memory at the end (after text and image searches):")
        self.stdout.write(
            benchmarks.format_table(
                ["process", "pid", "towers", "backend", "threads", "torch", "RSS MiB", "USS MiB"],
                [self._memory(row) for row in figures["memory"]],
            )
        )
        if json_path:
            self.stdout.write(f"Wrote {json_path}")

    @staticmethod
    def _figures(row: dict) -> list:
        return [
            row["requests"],
            row["requests_per_s"],
            *("-" if row[key] is None else row[key] for key in ("p50_ms", "p95_ms", "p99_ms")),
            row["errors"],
        ]

    @staticmethod
    def _memory(row: dict) -> list:
        return [
            row["process"],
            row["pid"],
            row["towers"] or "-",
            row["backend"] or "-",
            row["threads"] or "-",
            {True: "yes", False: "no"}.get(row["torch_imported"], "-"),
            row["rss_mib"],
            "-" if row["uss_mib"] is None else row["uss_mib"],
        ]

    def _print_setup(self, figures: dict) -> None:
        indexing = figures["indexing"]
        self.stdout.write(
            f"{figures['model']} ({figures['weights']} weights) on {figures['cpu_count']} cores: "
            f"{figures['web_workers']} web worker(s) x {figures['threads_per_web_worker']} "
            f"thread(s), {figures['workers']} RQ worker(s) x {figures['threads_per_worker']} "
            "thread(s)"
        )
        self.stdout.write(
            f"{indexing['images']} images imported and indexed at "
            f"{indexing['images_per_s']} images/s"
        )
        first = [f"ready after {figures['ready_seconds']} s"]
        for key, label in (
            ("first_search", "first text search"),
            ("first_query_image", "first query image"),
        ):
            if key in figures:
                error = f" ({figures[key]['error']})" if figures[key]["error"] else ""
                first.append(f"{label} {figures[key]['ms']} ms{error}")
        self.stdout.write("Started: " + ", ".join(first))

    def _print_new_text(self, figures: dict) -> None:
        self.stdout.write("")
        self.stdout.write("New text searches only:")
        rows = [
            [f"{phase['concurrency']} client(s)", *self._figures(phase["total"])]
            for phase in figures["new_text_only"]
        ]
        self.stdout.write(benchmarks.format_table(["load", *HEADERS[1:]], rows))
        for phase in figures["new_text_only"]:
            self._print_errors(phase)
        if "new_text_scaling" in figures:
            scaling = figures["new_text_scaling"]
            self.stdout.write(
                f"{scaling['to_concurrency']} clients get {scaling['ratio']}x the new-text "
                f"throughput of {scaling['from_concurrency']}."
            )

    def _print_errors(self, phase: dict) -> None:
        for error, count in phase["error_examples"].items():
            self.stdout.write(f"  {count} x {error}")

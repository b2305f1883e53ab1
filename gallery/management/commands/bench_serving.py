from django.core.management.base import BaseCommand, CommandError

from gallery.offline import serving
from gallery.offline.reporting import FiguresPrinter, add_json_argument, dash_if_none
from searchsite.supervisor import DEFAULT_WEB_WORKERS, DEFAULT_WORKERS

# The columns of every load table after its first (the kind of request, or the load).
LOAD_COLUMNS = {
    "requests": "requests",
    "req/s": "requests_per_s",
    "p50 ms": dash_if_none("p50_ms"),
    "p95 ms": dash_if_none("p95_ms"),
    "p99 ms": dash_if_none("p99_ms"),
    "errors": "errors",
}
MEMORY_COLUMNS = {
    "process": "process",
    "pid": "pid",
    "towers": lambda row: row["towers"] or "-",
    "backend": lambda row: row["backend"] or "-",
    "threads": lambda row: row["threads"] or "-",
    "torch": lambda row: {True: "yes", False: "no"}.get(row["torch_imported"], "-"),
    "RSS MiB": "rss_mib",
    "USS MiB": dash_if_none("uss_mib"),
}


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
        add_json_argument(parser)
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
        printer = FiguresPrinter(self.stdout)
        self._print_setup(printer, figures)
        for phase in figures["mixed"]:
            by_kind = [{**row, "kind": kind} for kind, row in phase["kinds"].items()]
            printer.records(
                [*by_kind, {**phase["total"], "kind": "total"}],
                {"kind": "kind", **LOAD_COLUMNS},
                title=f"Mixed load, {phase['concurrency']} client(s), {phase['seconds']} s:",
                gap=True,
            )
            self._print_errors(printer, phase)
        self._print_new_text(printer, figures)
        printer.records(
            figures["memory"],
            MEMORY_COLUMNS,
            title="Memory at the end (after text and image searches):",
            gap=True,
        )
        printer.save_json(json_path, figures)

    def _print_setup(self, printer: FiguresPrinter, figures: dict) -> None:
        indexing = figures["indexing"]
        printer.line(
            f"{figures['model']} ({figures['weights']} weights) on {figures['cpu_count']} cores: "
            f"{figures['web_workers']} web worker(s) x {figures['threads_per_web_worker']} "
            f"thread(s), {figures['workers']} RQ worker(s) x {figures['threads_per_worker']} "
            "thread(s)"
        )
        printer.line(
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
        printer.line("Started: " + ", ".join(first))

    def _print_new_text(self, printer: FiguresPrinter, figures: dict) -> None:
        printer.records(
            [
                {**phase["total"], "load": f"{phase['concurrency']} client(s)"}
                for phase in figures["new_text_only"]
            ],
            {"load": "load", **LOAD_COLUMNS},
            title="New text searches only:",
            gap=True,
        )
        for phase in figures["new_text_only"]:
            self._print_errors(printer, phase)
        if "new_text_scaling" in figures:
            scaling = figures["new_text_scaling"]
            printer.line(
                f"{scaling['to_concurrency']} clients get {scaling['ratio']}x the new-text "
                f"throughput of {scaling['from_concurrency']}."
            )

    def _print_errors(self, printer: FiguresPrinter, phase: dict) -> None:
        for error, count in phase["error_examples"].items():
            printer.line(f"  {count} x {error}")

from django.core.management.base import BaseCommand

from gallery.offline import indexing_benchmark
from gallery.offline.reporting import FiguresPrinter, add_json_argument, formatted


class Command(BaseCommand):
    help = (
        "Compare the raw forward pass of torch fp32, ONNX Runtime fp32 and int8 on the same "
        "images, then time files on disk -> vectors in PostgreSQL through the real queue and "
        "an RQ worker (and the worker alone, re-encoding stored files) with the shipped "
        "default backend, against that backend's raw rate. Runs in an isolated temporary "
        "database with random weights (speed does not depend on weights)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--n", type=int, default=256, help="12-megapixel JPEGs")
        parser.add_argument("--small", type=int, default=None, help="small PNGs (default: --n)")
        parser.add_argument("--model", default="ViT-B-32")
        parser.add_argument("--batch-size", type=int, default=32)
        add_json_argument(parser)

    def handle(self, *args, n, small, model, batch_size, json_path, **options):
        figures = indexing_benchmark.run_indexing_benchmark(
            count=n,
            small_count=n if small is None else small,
            model=model,
            batch_size=batch_size,
            progress=self.stderr.write,
        )
        printer = FiguresPrinter(self.stdout)
        printer.line(
            f"Model {figures['model']}, batch size {figures['batch_size']}, "
            f"default backend {figures['default_backend']}"
        )
        printer.records(
            figures["raw"],
            {
                "encoder": "encoder",
                "img/s": "images_per_s",
                "vs torch fp32": formatted("vs_torch", ".2f", "x"),
                "shipped default": lambda raw: "yes" * raw["default"],
            },
            title="Raw forward pass, same images, alternating rounds (median):",
        )
        printer.records(
            figures["scenarios"],
            {
                "images": "images",
                "n": "count",
                "default raw img/s": "default_raw_images_per_s",
                "pipeline img/s": "pipeline_images_per_s",
                "pipeline/raw": formatted("pipeline_ratio", ".0%"),
                "worker img/s": "worker_images_per_s",
                "worker/raw": formatted("worker_ratio", ".0%"),
                "ingest s": "ingest_seconds",
            },
            title="Pipeline (files -> vectors in PostgreSQL) with the default backend:",
        )
        printer.save_json(json_path, figures)

from django.core.management.base import BaseCommand

from gallery.offline import benchmarks


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
        parser.add_argument("--json", dest="json_path", help="write the figures to this file")

    def handle(self, *args, n, small, model, batch_size, json_path, **options):
        figures = benchmarks.run_indexing_benchmark(
            count=n,
            small_count=n if small is None else small,
            model=model,
            batch_size=batch_size,
            progress=self.stderr.write,
        )
        if json_path:
            benchmarks.write_json(json_path, figures)
        self.stdout.write(
            f"Model {figures['model']}, batch size {figures['batch_size']}, "
            f"default backend {figures['default_backend']}"
        )
        self.stdout.write("Raw forward pass, same images, alternating rounds (median):")
        self.stdout.write(
            benchmarks.format_table(
                ["encoder", "img/s", "vs torch fp32", "shipped default"],
                [
                    [r["encoder"], r["images_per_s"], f"{r['vs_torch']:.2f}x", "yes" * r["default"]]
                    for r in figures["raw"]
                ],
            )
        )
        headers = [
            "images",
            "n",
            "default raw img/s",
            "pipeline img/s",
            "pipeline/raw",
            "worker img/s",
            "worker/raw",
            "ingest s",
        ]
        rows = [
            [
                s["images"],
                s["count"],
                s["default_raw_images_per_s"],
                s["pipeline_images_per_s"],
                f"{s['pipeline_ratio']:.0%}",
                s["worker_images_per_s"],
                f"{s['worker_ratio']:.0%}",
                s["ingest_seconds"],
            ]
            for s in figures["scenarios"]
        ]
        self.stdout.write("Pipeline (files -> vectors in PostgreSQL) with the default backend:")
        self.stdout.write(benchmarks.format_table(headers, rows))
        if json_path:
            self.stdout.write(f"Wrote {json_path}")

from django.core.management.base import BaseCommand

from gallery.offline import ocr_benchmark
from gallery.offline.reporting import FiguresPrinter, add_json_argument
from searchsite.supervisor import DEFAULT_WORKERS, thread_budget


class Command(BaseCommand):
    help = (
        "Generate photo-like images with known words (and some without text), store them "
        "through ingest in an isolated temporary library, read them with the product's OCR, "
        "and print word recall and precision, keyword-search recall@10 (one word per image) "
        "and the time per image with and without text."
    )

    def add_arguments(self, parser):
        parser.add_argument("--n", type=int, default=200, help="images with words")
        parser.add_argument(
            "--blank", type=int, default=None, help="images without text (default: n/4, >= 50)"
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            help="OCR threads (default: what `up` gives its OCR worker on this machine)",
        )
        parser.add_argument("--seed", type=int, default=0)
        add_json_argument(parser)

    def handle(self, *args, n, blank, threads, seed, json_path, **options):
        if threads is None:
            threads = int(thread_budget(DEFAULT_WORKERS + 1)["ENCODER_THREADS"])
        figures = ocr_benchmark.run_ocr_benchmark(
            count=n, blank=blank, threads=threads, seed=seed, progress=self.stderr.write
        )
        printer = FiguresPrinter(self.stdout)
        printer.save_json(json_path, figures, announce=False)
        text, blank_set = figures["with_text"], figures["without_text"]
        printer.line(
            f"OCR: {figures['threads']} thread(s) of {figures['cpu_count']} cores, "
            f"{figures['fonts']} fonts, model loaded in {figures['model_load_seconds']} s "
            f"(+{figures['model_resident_mib']} MiB resident); "
            f"load average before {figures['load_average_before']}, "
            f"after {figures['load_average_after']}."
        )
        printer.table(
            ["images", "n", "word recall", "word precision", "keyword R@10", "text read"],
            [
                [
                    "with words",
                    text["images"],
                    text["word_recall"],
                    text["word_precision"],
                    text["keyword_recall_at_10"],
                    f"{text['images_with_every_word_read']} all words",
                ],
                [
                    "without text",
                    blank_set["images"],
                    "",
                    "",
                    "",
                    f"{blank_set['images_with_text_read']} with text",
                ],
            ],
        )
        printer.table(
            [
                "images",
                "mean",
                "p50",
                "p95",
                "detector p50",
                "recogniser p50",
                "CPU s mean",
                "CPU s p50",
            ],
            [
                [
                    name,
                    row["seconds"]["mean"],
                    row["seconds"]["p50"],
                    row["seconds"]["p95"],
                    row["detect_seconds"]["p50"],
                    row["recognise_seconds"]["p50"],
                    row["cpu_seconds"]["mean"],
                    row["cpu_seconds"]["p50"],
                ]
                for name, row in (("with words", text), ("without text", blank_set))
            ],
            title="Seconds per image (decode + OCR; wall time, and CPU time):",
        )
        printer.line(f"Keyword search: {figures['keyword_search']}.")

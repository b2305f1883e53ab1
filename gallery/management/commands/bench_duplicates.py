from django.conf import settings
from django.core.management.base import BaseCommand

from gallery.offline import near_duplicates
from gallery.offline.reporting import FiguresPrinter, add_json_argument, dash_if_none

# Precision and recall of the groups found against the true groups, the end of every score row.
GROUP_COLUMNS = {
    "precision": "precision",
    "recall": "recall",
    "groups": "groups_found",
    "exact groups": "groups_exact",
}


class Command(BaseCommand):
    help = (
        "Make originals with near-duplicate variants (resized, JPEG quality 40, 5 % crop, "
        "brightness +/-15 %, 3 degree rotation) among distinct images, ingest and encode them "
        "in an isolated library, and report the precision and recall of the near-duplicate "
        "groups per cosine threshold, pHash distance, neighbours and hash bands, and how long "
        "the scan takes (--scan-sizes: on synthetic libraries of those sizes)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--n", type=int, default=200, help="originals (half get variants)")
        parser.add_argument("--model", default="vs-test-tiny", help="open_clip architecture")
        parser.add_argument("--pretrained", default="random", help="pretrained tag or random")
        parser.add_argument("--weights", default="", help="a checkpoint file (wins)")
        parser.add_argument(
            "--source",
            choices=["auto", "generated", "tuxpaint"],
            default="auto",
            help="originals: Tux Paint stamps on photo-like backgrounds, or generated photos",
        )
        parser.add_argument("--thresholds", default="0.8,0.85,0.9,0.92,0.94,0.96,0.98")
        parser.add_argument("--hash-distances", default="4,6,8,10,12,14,16")
        parser.add_argument(
            "--scan-sizes", default="10000", help="synthetic library sizes to time ('' to skip)"
        )
        parser.add_argument(
            "--neighbours", default="10,25,50,100", help="k values to score the shipped rule at"
        )
        parser.add_argument(
            "--bands",
            default="0,4,5,6,8",
            help="numbers of pHash bands to score the rule at (0: the index's candidates alone)",
        )
        add_json_argument(parser)

    def handle(
        self,
        *args,
        n,
        model,
        source,
        thresholds,
        hash_distances,
        scan_sizes,
        neighbours,
        bands,
        **options,
    ):
        figures = near_duplicates.run_duplicates_benchmark(
            count=n,
            model=model,
            source=source,
            thresholds=[float(value) for value in thresholds.split(",")],
            hash_distances=[int(value) for value in hash_distances.split(",")],
            neighbours=[int(value) for value in neighbours.split(",") if value],
            bands=[int(value) for value in bands.split(",") if value],
            pretrained=options["pretrained"],
            weights_file=options["weights"],
            progress=self.stderr.write,
        )
        printer = FiguresPrinter(self.stdout)
        self._print_scores(printer, figures)
        figures["scan"] = near_duplicates.run_scan_timing(
            model=model,
            scan_sizes=[int(value) for value in scan_sizes.split(",") if value],
            progress=self.stderr.write,
        )
        if figures["scan"]:
            printer.records(
                figures["scan"],
                {
                    "images": "images",
                    "scan s": "seconds",
                    "hash side s": "hash_side_seconds",
                    "index side s": "index_side_seconds",
                    "ms per image": "ms_per_image",
                    "index pairs": "index_pairs",
                    "hash pairs": "hash_pairs",
                    "confirmed": "confirmed_pairs",
                    "planted": "planted_pairs",
                },
                gap=True,
            )
        printer.save_json(options["json_path"], figures)

    @staticmethod
    def _print_scores(printer: FiguresPrinter, figures: dict) -> None:
        """How far apart copies and distinct images are, and the groups' scores per rule."""
        cosine = figures["cosine"]
        printer.line(
            f"{figures['images']} images ({figures['originals']} originals, "
            f"{figures['true_groups']} with variants, {figures['true_pairs']} true pairs), "
            f"{figures['model']}, originals: {figures['source']}; "
            f"ingest {figures['ingest_seconds']} s, encoding {figures['encode_seconds']} s"
        )
        printer.line(
            f"cosine of true copies: min {cosine['true_pairs_min']}, 5th percentile "
            f"{cosine['true_pairs_p5']}, median {cosine['true_pairs_median']}; each distinct "
            f"image's nearest other: median {cosine['distinct_nearest_median']}, 95th "
            f"percentile {cosine['distinct_nearest_p95']}, max {cosine['distinct_nearest_max']}"
        )
        phash = figures["phash_only"][0]
        printer.line(
            f"pHash distance of true copies: max {phash['true_pairs_max']}, 95th percentile "
            f"{phash['true_pairs_p95']}; closest distinct pair {phash['distinct_pairs_min']}"
        )
        printer.records(
            figures["grid"],
            {
                "cosine >=": "threshold",
                "pHash <=": dash_if_none("phash_distance"),
                **GROUP_COLUMNS,
            },
            gap=True,
        )
        printer.records(
            figures["phash_only"][1:],
            {"pHash alone <=": "phash_distance", **GROUP_COLUMNS},
            gap=True,
        )
        if figures["neighbours"]:
            printer.records(
                figures["neighbours"],
                {
                    "neighbours k": "neighbours",
                    "hash bands": "bands",
                    **GROUP_COLUMNS,
                    "hash pairs": "hash_pairs",
                    "scan s": "seconds",
                },
                gap=True,
            )
        shipped = figures["shipped"]
        printer.line()
        printer.line(
            f"Shipped (NEAR_DUPLICATE_SIMILARITY={settings.NEAR_DUPLICATE_SIMILARITY}, "
            f"NEAR_DUPLICATE_PHASH_DISTANCE={settings.NEAR_DUPLICATE_PHASH_DISTANCE}, "
            f"k={shipped['neighbours']}, {shipped['bands']} hash bands): precision "
            f"{shipped['precision']}, recall {shipped['recall']}, {shipped['groups_found']} "
            f"groups ({shipped['groups_exact']} exact) of {figures['true_groups']}; "
            f"{shipped['index_pairs']} pairs from the index, {shipped['hash_pairs']} from the "
            f"hash bands, {shipped['confirmed_pairs']} confirmed; scan "
            f"{figures['scan_seconds_cold']} s cold (pHashes read from the thumbnails), "
            f"{figures['scan_seconds_warm']} s with pHashes stored"
        )

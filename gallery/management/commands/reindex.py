from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gallery.indexing import progress, queueing, registry, text_reading


class Command(BaseCommand):
    help = (
        "Re-encode images through the queue in batches. Existing vectors keep answering "
        "searches until each image's new vector is stored. The configured model is "
        "registered first: a new one becomes the next model (see README, Models)."
    )

    def add_arguments(self, parser):
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument(
            "--all",
            action="store_const",
            const="all",
            dest="scope",
            help="every image, for the active model (and the next one during a switch)",
        )
        scope.add_argument("--failed", action="store_const", const="failed", dest="scope")
        scope.add_argument(
            "--stale",
            action="store_const",
            const="stale",
            dest="scope",
            help="images without a vector of the model being filled (next, else active)",
        )
        parser.add_argument(
            "--ocr",
            action="store_true",
            help="read the text inside indexed images not read yet (with --all: every one)",
        )

    def handle(self, *args, scope, ocr, **options):
        if ocr:
            return self.read_text(reread=scope == "all", scope=scope)
        if scope is None:
            raise CommandError("Say what to re-index: --all, --failed, --stale or --ocr.")
        # --all and --stale queue what a new next model lacks themselves; --failed does not.
        registry.sync_configured_model(fill=scope == "failed")
        queued = queueing.reindex_images(queueing.images_to_reindex(scope), force=scope != "stale")
        counts = progress.indexing_progress()
        self.stdout.write(f"Queued {queued} image(s); searches use {counts['model']}.")
        if counts["next"]:
            self.stdout.write(
                "Switching to {model}: {covered} of {indexable} images encoded.".format(
                    **counts["next"]
                )
            )
        self.stdout.write(
            "Now: {pending} pending, {indexed} indexed, {failed} failed, {stale} stale; "
            "{queued_jobs} jobs in the queue.".format(**counts)
        )

    def read_text(self, *, reread: bool, scope) -> None:
        if scope not in (None, "all"):
            raise CommandError("--ocr goes alone (images not read yet) or with --all.")
        if not settings.OCR_ENABLED:
            raise CommandError("OCR is off (OCR_ENABLED=0); nothing would read the queue.")
        images = text_reading.images_to_read(reread=reread).order_by("pk")
        queued = text_reading.queue_reading(images.values_list("pk", flat=True).iterator())
        counts = text_reading.reading_progress()
        self.stdout.write(f"Queued {queued} image(s) for reading their text (OCR).")
        self.stdout.write(
            "Now: text read in {read} of {indexed} indexed images ({with_text} with text); "
            "{queued_jobs} OCR jobs in the queue.".format(**counts)
        )

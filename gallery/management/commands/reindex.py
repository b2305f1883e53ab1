from django.core.management.base import BaseCommand

from gallery.indexing import progress, queueing, registry


class Command(BaseCommand):
    help = (
        "Re-encode images through the queue in batches. Existing vectors keep answering "
        "searches until each image's new vector is stored. The configured model is "
        "registered first: a new one becomes the next model (see README, Models)."
    )

    def add_arguments(self, parser):
        scope = parser.add_mutually_exclusive_group(required=True)
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

    def handle(self, *args, scope, **options):
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

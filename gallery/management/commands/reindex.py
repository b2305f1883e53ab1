from django.core.management.base import BaseCommand

from gallery.indexing import progress, queueing


class Command(BaseCommand):
    help = (
        "Re-encode images through the queue in batches. Existing vectors keep answering "
        "searches until each image's new vector is stored."
    )

    def add_arguments(self, parser):
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--all", action="store_const", const="all", dest="scope")
        scope.add_argument("--failed", action="store_const", const="failed", dest="scope")
        scope.add_argument(
            "--stale",
            action="store_const",
            const="stale",
            dest="scope",
            help="vectors made by a model other than the configured one",
        )

    def handle(self, *args, scope, **options):
        queued = queueing.reindex_images(queueing.images_to_reindex(scope))
        counts = progress.indexing_progress()
        self.stdout.write(f"Queued {queued} image(s) for re-encoding with {counts['model']}.")
        self.stdout.write(
            "Now: {pending} pending, {indexed} indexed, {failed} failed, {stale} stale; "
            "{queued_jobs} jobs in the queue.".format(**counts)
        )

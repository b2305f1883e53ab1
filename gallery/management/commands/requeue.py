from datetime import timedelta

from django.core.management.base import BaseCommand

from gallery.indexing import queueing


class Command(BaseCommand):
    help = (
        "Queue encoding for every pending image that was never queued (Redis was down) or was "
        "queued longer ago than STUCK_AFTER_SECONDS (its worker died). Safe to run periodically."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--stuck-after",
            type=int,
            default=None,
            metavar="SECONDS",
            help="override STUCK_AFTER_SECONDS (0: every pending image)",
        )

    def handle(self, *args, stuck_after, **options):
        delay = None if stuck_after is None else timedelta(seconds=stuck_after)
        queued = queueing.requeue_stuck_images(stuck_after=delay)
        self.stdout.write(f"Queued {queued} pending image(s) for encoding.")

from django.core.management.base import BaseCommand

from gallery.indexing import queueing


class Command(BaseCommand):
    help = (
        "Queue encoding for every image waiting for a vector that no live job holds: never "
        "queued (Redis was down) or whose job was lost (its worker died). Images of jobs "
        "still queued or running are left alone, so it is safe to run at any time."
    )

    def handle(self, *args, **options):
        queued = queueing.requeue_lost_images()
        self.stdout.write(f"Queued {queued} waiting image(s) for encoding.")

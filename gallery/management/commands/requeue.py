from django.core.management.base import BaseCommand

from gallery.indexing import queueing, text_reading


class Command(BaseCommand):
    help = (
        "Queue encoding for every image waiting for a vector that no live job holds: never "
        "queued (Redis was down) or whose job was lost (its worker died). Images of jobs "
        "still queued or running are left alone, so it is safe to run at any time. Also "
        "queues OCR of indexed images whose text was never read, a round at a time."
    )

    def handle(self, *args, **options):
        queued = queueing.requeue_lost_images()
        self.stdout.write(f"Queued {queued} waiting image(s) for encoding.")
        reading = text_reading.requeue_unread_images()
        if reading:
            self.stdout.write(f"Queued {reading} indexed image(s) for reading their text (OCR).")

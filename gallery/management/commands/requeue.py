import signal
import threading

from django.core.management.base import BaseCommand
from django.db import connections

from gallery.indexing import queueing, text_reading


class Command(BaseCommand):
    help = (
        "Queue encoding for every image waiting for a vector that no live job holds: never "
        "queued (Redis was down) or whose job was lost (its worker died). Images of jobs "
        "still queued or running are left alone, so it is safe to run at any time. Also "
        "queues OCR of indexed images whose text was never read, a round at a time."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--every",
            type=float,
            metavar="SECONDS",
            help=(
                "Run a round every SECONDS until stopped (what `up` and Compose's requeue "
                "service run); SIGUSR1 asks for a round at once."
            ),
        )

    def handle(self, *args, every=None, **options):
        if every is None:
            self.requeue(quiet=False)
            return
        round_due, stopping = threading.Event(), threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: round_due.set())
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set() or round_due.set())
        while not stopping.is_set():
            try:
                self.requeue(quiet=True)
            except Exception as error:  # the database is away: the next round tries again
                self.stderr.write(f"Could not re-queue waiting images: {error}")
            finally:
                # A fresh connection each round, so one that died with a restarted database
                # fails one round at most.
                connections.close_all()
            round_due.wait(every)
            round_due.clear()

    def requeue(self, *, quiet: bool) -> None:
        """One round; `quiet` leaves out what queued nothing (a loop's idle rounds)."""
        queued = queueing.requeue_lost_images()
        if queued or not quiet:
            self.stdout.write(f"Queued {queued} waiting image(s) for encoding.")
        reading = text_reading.requeue_unread_images()
        if reading:
            self.stdout.write(f"Queued {reading} indexed image(s) for reading their text (OCR).")
        self.stdout.flush()

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from gallery.library import backup


class Command(BaseCommand):
    help = (
        "Rebuild a library from a backup folder made by `backup`, into an empty database "
        "(a new data directory, or an empty DATABASE_URL) and its media folder. Every "
        "checksum is verified before anything is written."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="a folder written by `backup`")

    def handle(self, *args, source, **options):
        try:
            summary = backup.restore_library(
                source, progress=lambda items: tqdm(items, desc="Verifying", unit="file")
            )
        except backup.BackupError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Restored {summary.images} image(s), {summary.embeddings} vector(s) and "
            f"{summary.files} file(s) ({summary.bytes / 1e6:.1f} MB) from {source}."
        )

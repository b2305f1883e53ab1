from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from gallery.library import backup


class Command(BaseCommand):
    help = (
        "Write a consistent copy of the library to DEST (a new or empty folder) while the site "
        "runs: a pg_dump of the database taken from one snapshot, every file its rows "
        "reference, and a manifest with SHA-256 checksums. Restore it with `restore`."
    )

    def add_arguments(self, parser):
        parser.add_argument("destination", help="a new or empty folder")

    def handle(self, *args, destination, **options):
        try:
            summary = backup.back_up_library(
                destination, progress=lambda names: tqdm(names, desc="Copying", unit="file")
            )
        except backup.BackupError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Backed up {summary.images} image(s), {summary.embeddings} vector(s) and "
            f"{summary.files} file(s) ({summary.bytes / 1e6:.1f} MB) to {destination}."
        )
        if summary.missing_files:
            self.stderr.write(
                f"{len(summary.missing_files)} file(s) referenced by the database were missing "
                f"already (listed in the manifest), e.g. {summary.missing_files[0]}."
            )

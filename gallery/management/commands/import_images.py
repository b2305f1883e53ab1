from collections import Counter
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from gallery.indexing import encoding
from gallery.library import ingest, tags, validation
from gallery.models import Image


class Command(BaseCommand):
    help = (
        "Import every image file under PATH. Content already in the library (same SHA-256, "
        "even renamed or copied) is not imported or encoded again; its tags are merged."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--recursive", "-r", action="store_true", help="descend into folders")
        parser.add_argument("--tag", action="append", default=[], help="tag every image (repeat)")
        parser.add_argument("--caption", default="", help="caption for images that have none")
        parser.add_argument(
            "--sync", action="store_true", help="encode here and now instead of on the workers"
        )

    def handle(self, *args, path: Path, recursive, tag, caption, sync, **options):
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        try:
            tag_names = tags.parse_tag_names(",".join(tag))
        except validation.RejectedImage as error:
            raise CommandError(str(error)) from None
        files = ingest.find_image_files(path, recursive=recursive)
        counts, rejected, created_ids = Counter(), [], []
        results = ingest.import_files(files, tag_names=tag_names, caption=caption, enqueue=not sync)
        for result in tqdm(results, total=len(files), desc="Importing", unit="file"):
            if not result.ok:
                counts["rejected"] += 1
                rejected.append((result.filename, result.error))
            elif result.created:
                counts["imported"] += 1
                created_ids.append(result.image.pk)
            else:
                counts["duplicates"] += 1
        if sync and created_ids:
            self._encode_inline(created_ids, counts)
        self.stdout.write(
            f"Imported {counts['imported']}, duplicates {counts['duplicates']}, "
            f"rejected {counts['rejected']} (of {len(files)} image files)."
        )
        for filename, reason in rejected:
            self.stdout.write(f"  rejected {filename}: {reason}")
        if sync:
            self.stdout.write(f"Encoded {counts['indexed']}, failed {counts['failed']}.")
        elif counts["imported"]:
            pending = Image.objects.filter(pk__in=created_ids, queued_at__isnull=True).count()
            note = f" ({pending} could not be queued: run `requeue`)" if pending else ""
            self.stdout.write(f"Queued {counts['imported'] - pending} for encoding{note}.")

    def _encode_inline(self, image_ids, counts) -> None:
        batch_size = settings.ENCODE_BATCH_SIZE
        with tqdm(total=len(image_ids), desc="Encoding", unit="image") as progress:
            for start in range(0, len(image_ids), batch_size):
                batch = image_ids[start : start + batch_size]
                summary = encoding.encode_images(batch)
                counts.update({key: summary[key] for key in ("indexed", "failed")})
                progress.update(len(batch))

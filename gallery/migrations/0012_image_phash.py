"""The thumbnail's perceptual hash as a column (`Image.phash`), so a near-duplicate scan reads
every hash in one query and buckets them (gallery/library/duplicates.py). Nullable: images
stored before it get theirs the first time a scan or a search page needs it (about 10 ms an
image), not here, so the migration is instant at any library size."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gallery", "0011_image_search_document"),
    ]

    operations = [
        migrations.AddField(
            model_name="image",
            name="phash",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
    ]

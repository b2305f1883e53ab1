from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gallery", "0007_image_taken_on"),
    ]

    operations = [
        # Existing images get their preview from the worker the next time they are encoded.
        migrations.AddField(
            model_name="image",
            name="preview",
            field=models.FileField(blank=True, max_length=255, null=True, upload_to="previews/"),
        ),
    ]

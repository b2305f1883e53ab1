from django.db import migrations


class Migration(migrations.Migration):
    """The vectors now live in gallery_embedding (moved by 0005)."""

    dependencies = [("gallery", "0005_move_vectors_to_embeddings")]

    operations = [
        migrations.RemoveIndex(
            model_name="image",
            name="image_embedding_hnsw_cosine",
        ),
        migrations.RemoveField(
            model_name="image",
            name="embedding",
        ),
        migrations.RemoveField(
            model_name="image",
            name="embedding_model",
        ),
    ]

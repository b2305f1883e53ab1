"""Move every stored vector into gallery_embedding as a row of the model that made it.

Nothing is re-encoded. The model with the most vectors becomes active, so searches go on
answering exactly as before; other models' vectors are kept as retired models. Images that
were `indexed` by a model other than the active one become `pending` (search already
ignored them). The configured model, if different, becomes the next model at the next
`migrate` or `up` (gallery/indexing/registry.py).
"""

import re

from django.db import migrations

# The HNSW parameters of the index this replaces (0003).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128


def legacy_model_fields(model_id: str) -> dict:
    """How to load a model named by the previous schema's id (see the old ModelSpec.model_id)."""
    random_seed = re.fullmatch(r"(.+):random-seed(-?\d+)", model_id)
    if random_seed:
        return {
            "architecture": random_seed.group(1),
            "pretrained": "random",
            "random_seed": int(random_seed.group(2)),
        }
    if ":file:" in model_id:
        # The old id kept only the file's name; its bytes are unknown, so no SHA-256.
        architecture, _, file_name = model_id.partition(":file:")
        return {"architecture": architecture, "weights_file": file_name}
    architecture, _, pretrained = model_id.rpartition(":")
    return {"architecture": architecture or model_id, "pretrained": pretrained}


def move_vectors(apps, schema_editor):
    EmbeddingModel = apps.get_model("gallery", "EmbeddingModel")
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        # Check foreign keys as rows go in: CREATE INDEX refuses a table with deferred checks.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "SELECT embedding_model, vector_dims(embedding), count(*) FROM gallery_image "
            "WHERE embedding IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1"
        )
        found = cursor.fetchall()
        for position, (model_id, dimensions, _count) in enumerate(found):
            model = EmbeddingModel.objects.create(
                model_id=model_id or "unknown",
                dimensions=dimensions,
                state="active" if position == 0 else "retired",
                **legacy_model_fields(model_id or "unknown"),
            )
            cursor.execute(
                "INSERT INTO gallery_embedding (image_id, model_id, vector, created_at) "
                "SELECT id, %s, embedding, coalesce(indexed_at, uploaded_at) FROM gallery_image "
                "WHERE embedding IS NOT NULL AND embedding_model = %s "
                "AND vector_dims(embedding) = %s",
                [model.pk, model_id, dimensions],
            )
            cursor.execute(
                f"CREATE INDEX gallery_embedding_hnsw_{model.pk} ON gallery_embedding "
                f"USING hnsw ((vector::vector({dimensions})) vector_cosine_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
                f"WHERE model_id = {model.pk}"
            )
        active = EmbeddingModel.objects.filter(state="active").first()
        cursor.execute(
            "UPDATE gallery_image i SET status = 'pending' WHERE status = 'indexed' AND NOT EXISTS "
            "(SELECT 1 FROM gallery_embedding e WHERE e.image_id = i.id AND e.model_id = %s)",
            [active.pk if active else -1],
        )


def move_vectors_back(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "UPDATE gallery_image i SET embedding = e.vector, embedding_model = m.model_id "
            "FROM gallery_embedding e JOIN gallery_embeddingmodel m ON m.id = e.model_id "
            "WHERE e.image_id = i.id AND m.state = 'active'"
        )
        cursor.execute("DELETE FROM gallery_embedding")
        cursor.execute("DELETE FROM gallery_embeddingmodel")


class Migration(migrations.Migration):
    dependencies = [("gallery", "0004_embedding_models")]

    operations = [migrations.RunPython(move_vectors, move_vectors_back)]

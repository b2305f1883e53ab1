"""Synthetic data for the benchmarks: photo-like image files, and clustered unit vectors
loaded with COPY into an isolated library as if photos had been encoded."""

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

PHOTO_SIZE = (4000, 3000)  # 12 megapixels, a typical phone photo
SMALL_SIZE = (640, 480)
# The tags load_vectors gives its images, with how often: filtered searches of each selectivity.
BENCH_TAGS = (("one-percent", 100), ("ten-percent", 10))


def generate_images(folder: Path, count: int, size, fmt: str, seed: int = 0) -> list[Path]:
    """Photo-like test images: smooth random colour fields with fine noise, all distinct."""
    rng = np.random.default_rng(seed)
    paths = []
    extension = {"JPEG": "jpg", "PNG": "png"}[fmt]
    for index in range(count):
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        picture = PILImage.fromarray(coarse).resize(size, PILImage.Resampling.BICUBIC)
        noise = rng.integers(-12, 13, size=(size[1], size[0], 3), dtype=np.int16)
        pixels = np.clip(np.asarray(picture, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = folder / f"{fmt.lower()}-{index:05d}.{extension}"
        PILImage.fromarray(pixels).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


def clustered_unit_vectors(
    count: int, seed: int, clusters: int = 100, dimensions: int = 512
) -> np.ndarray:
    """Synthetic embeddings: points around random centres, like photos of recurring subjects."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345 + dimensions).normal(size=(clusters, dimensions))
    chunks = []
    for start in range(0, count, 50_000):
        size = min(50_000, count - start)
        block = centres[rng.integers(0, clusters, size)] + rng.normal(
            scale=0.8, size=(size, dimensions)
        )
        chunks.append((block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32))
    return np.concatenate(chunks)


def load_vectors(vectors: np.ndarray, model, *, create_images: bool = True) -> list[int]:
    """COPY vectors into the (isolated) library as `model`'s; returns the image ids in order.

    Row n of `vectors` belongs to bench image n, created here unless it already exists (a
    second model's vectors for the same images). Every 100th image gets the tag
    "one-percent" and every 10th "ten-percent".
    """
    from django.db import connection
    from pgvector.psycopg import register_vector

    connection.ensure_connection()
    raw = connection.connection
    register_vector(raw)
    with raw.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_vectors (n integer, embedding vector)")
        with cursor.copy(
            "COPY bench_vectors (n, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "vector"])
            for number, vector in enumerate(vectors):
                copy.write_row([number, vector])
        if create_images:
            _create_bench_images(cursor)
        cursor.execute(
            """
            INSERT INTO gallery_embedding (image_id, model_id, vector, created_at)
            SELECT i.id, %s, b.embedding, now()
            FROM bench_vectors b JOIN gallery_image i ON i.sha256 = lpad(to_hex(b.n), 64, '0')
            ORDER BY b.n
            """,
            [model.pk],
        )
        cursor.execute("SELECT id FROM gallery_image ORDER BY sha256")
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute("DROP TABLE bench_vectors")
    raw.commit()
    return ids


def _create_bench_images(cursor) -> None:
    cursor.execute(
        """
        INSERT INTO gallery_image (file, thumbnail, sha256, original_filename, width, height,
            format, byte_size, caption, uploaded_at, taken_at, status, status_error,
            indexed_at)
        SELECT 'originals/' || n || '.jpg', '', lpad(to_hex(n), 64, '0'), '', 1, 1, 'JPEG',
            1, '', now(), timestamptz '2015-01-01' + n * interval '1 hour', 'indexed', '',
            now()
        FROM bench_vectors ORDER BY n
        """
    )
    for name, every in BENCH_TAGS:
        cursor.execute("INSERT INTO gallery_tag (name) VALUES (%s) RETURNING id", [name])
        tag_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO gallery_image_tags (image_id, tag_id) "
            "SELECT id, %s FROM gallery_image WHERE ('x' || right(sha256, 8))::bit(32)::int "
            "%% %s = 0",
            [tag_id, every],
        )


def tagged_rows(count: int, every: int) -> np.ndarray:
    """Which of load_vectors' rows carry the tag given to every `every`-th image (by the same
    rule as its SQL: the last 8 hex digits of the row's sha256)."""
    return np.array([int(f"{n:064x}"[-8:], 16) % every == 0 for n in range(count)])

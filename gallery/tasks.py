"""RQ jobs: take ids, call a service. Retries and idempotency live in the services."""

from gallery import indexing


def encode_images_job(image_ids: list[int], force: bool = False) -> dict[str, int]:
    return indexing.encode_images(image_ids, force=force)

"""RQ jobs: take ids, call a service. Retries and idempotency live in the services."""

from gallery.indexing import encoding


def encode_images_job(image_ids: list[int], force: bool = False) -> dict[str, int]:
    return encoding.encode_images(image_ids, force=force)

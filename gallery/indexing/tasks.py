"""RQ jobs: take ids, call a service. Retries and idempotency live in the services."""

from gallery.indexing import encoding, text_reading


def encode_images_job(image_ids: list[int], force: bool = False) -> dict[str, int]:
    return encoding.encode_images(image_ids, force=force)


def read_image_text_job(image_id: int) -> str | None:
    return text_reading.read_image_text(image_id=image_id)

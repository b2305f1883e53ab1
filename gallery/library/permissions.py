"""Who may change which image: staff change everything, people change what they uploaded."""

from gallery.models import Image


def can_change_image(user, image: Image) -> bool:
    """Whether `user` may edit, tag, re-index or delete `image`; anonymous visitors never."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return image.uploaded_by_id is not None and image.uploaded_by_id == user.pk


def changeable_image_ids(user, images) -> set[int]:
    """The ids among `images` that `user` may change (for showing controls on a page)."""
    return {image.pk for image in images if can_change_image(user, image)}

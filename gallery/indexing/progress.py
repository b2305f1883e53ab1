"""How far indexing has got: counts per status, vectors of another model, queued jobs."""

import django_rq
from django.conf import settings
from django.db.models import Count
from redis.exceptions import RedisError

from gallery.indexing import encoder
from gallery.indexing.queueing import images_to_reindex
from gallery.models import Image


def status_counts() -> dict[str, int]:
    counts = dict(Image.objects.values_list("status").annotate(n=Count("pk")))
    return {status: counts.get(status, 0) for status in Image.Status.values}


def indexing_progress() -> dict:
    """Counts per status, vectors made by another model, and the queue's length."""
    progress = status_counts()
    progress["stale"] = images_to_reindex("stale").count()
    progress["model"] = encoder.configured_model_id()
    try:
        progress["queued_jobs"] = django_rq.get_queue(settings.ENCODING_QUEUE).count
    except RedisError:
        progress["queued_jobs"] = None
    return progress

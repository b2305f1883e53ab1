"""How far indexing has got: counts per status, the models and their coverage, queued jobs."""

import django_rq
from django.conf import settings
from django.db.models import Count
from redis.exceptions import RedisError

from gallery.indexing import registry
from gallery.indexing.queueing import images_to_reindex
from gallery.models import EmbeddingModel, Image


def status_counts() -> dict[str, int]:
    counts = dict(Image.objects.values_list("status").annotate(n=Count("pk")))
    return {status: counts.get(status, 0) for status in Image.Status.values}


def indexing_progress() -> dict:
    """Counts per status, the active and next models with coverage, the queue's length."""
    progress = status_counts()
    progress["stale"] = images_to_reindex("stale").count()
    active = registry.active_model()
    progress["model"] = active.model_id
    progress["active"] = {"model": active, **registry.coverage(active)}
    upcoming = registry.next_model()
    progress["next"] = upcoming and {"model": upcoming, **registry.coverage(upcoming)}
    progress["load_errors"] = model_load_errors()
    try:
        progress["queued_jobs"] = django_rq.get_queue(settings.ENCODING_QUEUE).count
    except RedisError:
        progress["queued_jobs"] = None
    return progress


def model_load_errors() -> dict[str, str]:
    """Why the active or next model's weights could not be loaded, by model id."""
    return dict(
        EmbeddingModel.objects.exclude(load_error="")
        .exclude(state=EmbeddingModel.State.RETIRED)
        .values_list("model_id", "load_error")
    )


def model_health() -> dict:
    """The models as /healthz reports them (a set-up problem, not an outage)."""
    states = dict(
        EmbeddingModel.objects.exclude(state=EmbeddingModel.State.RETIRED).values_list(
            "state", "model_id"
        )
    )
    return {
        "active": states.get(EmbeddingModel.State.ACTIVE),
        "next": states.get(EmbeddingModel.State.NEXT),
        "load_errors": model_load_errors(),
    }

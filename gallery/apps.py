import logging

from django.apps import AppConfig
from django.db.models.signals import post_migrate

from gallery.pixels import register_heif_opener

logger = logging.getLogger(__name__)


class GalleryConfig(AppConfig):
    name = "gallery"
    verbose_name = "Gallery"

    def ready(self):
        # Every process that decodes images sets Django up first: web, worker, commands.
        register_heif_opener()
        post_migrate.connect(follow_configured_model, sender=self)


def follow_configured_model(sender, plan=None, using="default", **kwargs):
    """After `migrate` (every `up`, every Compose web start), register the configured model.

    `flush` also sends post_migrate, without a plan: it is left alone.
    """
    from django.db import connections

    from gallery.indexing import encoder, registry
    from gallery.models import EmbeddingModel

    if plan is None:
        return
    if EmbeddingModel._meta.db_table not in connections[using].introspection.table_names():
        return  # migrated to a state before the registry existed

    try:
        registry.sync_configured_model()
    except encoder.ModelWeightsUnavailable as error:
        logger.error("The configured CLIP model cannot be registered: %s", error)

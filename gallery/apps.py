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


def follow_configured_model(sender, using="default", **kwargs):
    """After `migrate` (every `up`, every Compose web start) and `flush` (which empties the
    registry), register the configured model: the registry's reads never do.
    """
    from django.db import connections

    from gallery.indexing import registry
    from gallery.indexing.encoder_base import ModelWeightsUnavailable
    from gallery.models import EmbeddingModel

    if EmbeddingModel._meta.db_table not in connections[using].introspection.table_names():
        return  # migrated to a state before the registry existed

    try:
        registry.sync_configured_model()
    except ModelWeightsUnavailable as error:
        logger.error("The configured CLIP model cannot be registered: %s", error)

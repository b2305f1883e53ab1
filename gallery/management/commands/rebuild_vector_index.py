from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gallery.indexing import vector_index
from gallery.models import EmbeddingModel


class Command(BaseCommand):
    help = (
        "Rebuild a model's HNSW index with the configured SEARCH_INDEX_STORAGE / _M / "
        "_EF_CONSTRUCTION while searches go on (CREATE INDEX CONCURRENTLY, then a swap)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--model",
            dest="model_id",
            help="the model id (list_models); default: every model that is not retired",
        )

    def handle(self, *args, model_id, **options):
        models = EmbeddingModel.objects.exclude(state=EmbeddingModel.State.RETIRED)
        if model_id:
            models = models.filter(model_id=model_id)
            if not models.exists():
                raise CommandError(f"No model {model_id!r} that is not retired (see list_models).")
        for model in models.order_by("pk"):
            self.stdout.write(
                f"{model.model_id}: {vector_index.index_description(model)} -> "
                f"{settings.SEARCH_INDEX_STORAGE}, m {settings.SEARCH_INDEX_M}, "
                f"ef_construction {settings.SEARCH_INDEX_EF_CONSTRUCTION}"
            )
            seconds = vector_index.rebuild_vector_index(model, progress=self.stdout.write)
            rebuilt = vector_index.index_description(model)
            self.stdout.write(f"{model.model_id}: rebuilt in {seconds:.0f} s: {rebuilt}")

from django.core.management.base import BaseCommand

from gallery.indexing import registry
from gallery.models import EmbeddingModel
from gallery.text_tables import format_table


class Command(BaseCommand):
    help = "List the registered models with their state and coverage (vectors / images)."

    def handle(self, *args, **options):
        rows = []
        for model in EmbeddingModel.objects.order_by("state", "-added_at"):
            figures = registry.coverage(model)
            rows.append(
                [
                    model.model_id,
                    model.state,
                    model.dimensions,
                    f"{figures['covered']} / {figures['indexable']}",
                    f"{figures['percent']:g} %",
                    "cannot load" if model.load_error else "",
                ]
            )
        self.stdout.write(
            format_table(["model", "state", "dims", "vectors / images", "coverage", ""], rows)
        )

from django.core.management.base import BaseCommand

from gallery.indexing import registry


class Command(BaseCommand):
    help = "Delete retired models with their vectors and HNSW indexes (frees their disk space)."

    def handle(self, *args, **options):
        pruned = registry.prune_retired_models()
        for model_id, vectors in pruned:
            self.stdout.write(f"Removed {model_id} and its {vectors:,} vector(s).")
        if not pruned:
            self.stdout.write("No retired model to remove.")

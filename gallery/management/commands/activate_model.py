from django.core.management.base import BaseCommand, CommandError

from gallery.indexing import registry
from gallery.models import EmbeddingModel


class Command(BaseCommand):
    help = (
        "Make a registered model the one every search uses (default: the next model). "
        "Refused while images lack its vector, unless --force."
    )

    def add_arguments(self, parser):
        parser.add_argument("model_id", nargs="?", help="a model id from `list_models`")
        parser.add_argument(
            "--force",
            action="store_true",
            help="switch even though some images have no vector yet (they wait, unsearchable)",
        )

    def handle(self, *args, model_id, force, **options):
        if model_id:
            model = EmbeddingModel.objects.filter(model_id=model_id).first()
            if model is None:
                raise CommandError(f"No registered model {model_id!r}; see `list_models`.")
        else:
            model = registry.next_model()
            if model is None:
                raise CommandError("There is no next model; name one (see `list_models`).")
        try:
            registry.activate_model(model, force=force)
        except registry.ModelSwitchError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{model.model_id} now answers every search.")

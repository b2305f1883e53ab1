from django.core.management.base import BaseCommand, CommandError

from gallery.indexing import registry


class Command(BaseCommand):
    help = (
        "Export the active (and next) model to ONNX if the configured backend needs it and it "
        "is not exported yet, in a child process; `up` and Compose's web service run this "
        "before serving, so no web worker waits for an export."
    )

    def handle(self, *args, **options):
        problems = registry.prepare_model_files()
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError("Some models could not be prepared; see above.")
        self.stdout.write("Model files are ready.")

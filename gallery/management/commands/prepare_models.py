from django.core.management.base import BaseCommand, CommandError

from gallery.indexing import registry


class Command(BaseCommand):
    help = (
        "Export the active (and next) model to ONNX if the configured backend needs it and it "
        "is not exported yet, in a child process; `up` and Compose's web service run this "
        "before serving, so no web worker waits for an export. A library with no model yet "
        "gets the configured one registered first."
    )

    def handle(self, *args, **options):
        errors, warnings = registry.prepare_model_files()
        for message in errors + warnings:
            self.stderr.write(message)
        if errors:
            raise CommandError("Some models cannot be loaded; see above.")
        self.stdout.write(
            "Model files are ready." if not warnings else "Ready, with torch for the models above."
        )
